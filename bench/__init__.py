"""Every `c4 bench` command, one module per benchmark (side-by-side ratios, --json on the last line)."""
