"""``c4 catalogue``: list tables or print the generated schema docs."""

from __future__ import annotations

import argparse

HELP = "Show the table catalogue: `c4 catalogue docs` prints docs/schema.md, `c4 catalogue list` the tables."


def configure(parser: argparse.ArgumentParser) -> None:
    """catalogue actions."""
    parser.add_argument("action", choices=["docs", "list"], help="docs: Markdown schema; list: table names")


def run(args: argparse.Namespace) -> int:
    """Print the chosen view."""
    from c4.catalogue import load

    cat = load()
    if args.action == "docs":
        print(cat.docs_markdown())
    else:
        for t in cat:
            print(f"{t.name}\tv{t.version}\t{len(t.columns)} columns\t{t.help}")
    return 0
