"""C4 ui room."""
