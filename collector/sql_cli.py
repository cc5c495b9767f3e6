"""``c4 sql``: run read-only SQL on a collector over the Query RPC and print the result."""

from __future__ import annotations

import argparse
import io
import os
import sys

from c4.printable import printable_values
from c4.report import printable_text

HELP = "Run read-only SQL on a collector (Query RPC) and print a table, CSV, JSON or Parquet."


def configure(parser: argparse.ArgumentParser) -> None:
    """SQL flags."""
    parser.add_argument(
        "sql", help='one SELECT statement, e.g. "SELECT node, count(*) FROM host_cpu GROUP BY 1"'
    )
    parser.add_argument(
        "--collector",
        default=None,
        help="collector HOST:PORT (default: [query] collector of --config, C4_QUERY_COLLECTOR, "
        "C4_AGENT_COLLECTOR or 127.0.0.1:7070)",
    )
    parser.add_argument("--config", help="TOML config file ([query] section); C4_QUERY_* env vars apply")
    parser.add_argument("--tls-ca", help="PEM CA bundle that signed the collector's certificate")
    parser.add_argument("--tls-cert", help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--token-file", help="file holding a reader token")
    parser.add_argument(
        "--insecure", action="store_true", default=None, help="plaintext to a non-loopback collector"
    )
    parser.add_argument(
        "--format",
        choices=["table", "csv", "json", "parquet"],
        default="table",
        help="output format (default table). The table, and CSV or JSON written to a terminal, show "
        "control characters in stored text as escapes (\\x1b); files and pipes get the text as stored",
    )
    parser.add_argument(
        "--output",
        "-o",
        help="write to this file instead of stdout (required for parquet unless stdout is redirected)",
    )
    parser.add_argument("--max-rows", type=int, default=0, help="row limit (default: the collector's)")
    parser.add_argument(
        "--timeout-s", type=float, default=0.0, help="query timeout (default: the collector's)"
    )


def run(args: argparse.Namespace) -> int:
    """Query and print."""
    import polars as pl  # lazy: c4 --help loads this module; ~120 ms
    import pyarrow.parquet as pq  # lazy: c4 --help loads this module; ~110 ms

    from c4.config import DEFAULT_COLLECTOR, ConfigError, load_config  # lazy: c4 --help; pydantic ~90 ms
    from c4.query import QueryError, query_arrow  # lazy: c4 --help loads this module; grpc ~100 ms
    from c4.security import ClientSecurity, SecurityError  # lazy: c4 --help loads this module; grpc

    try:
        qcfg = load_config(args.config or os.environ.get("C4_CONFIG") or None).query
        flags = {k: getattr(args, k) for k in ClientSecurity.__dataclass_fields__ if getattr(args, k, None)}
        security = ClientSecurity.from_config(qcfg.model_copy(update=flags))
        security.check()
    except (ConfigError, SecurityError) as exc:
        print(f"c4 sql: {exc}", file=sys.stderr)
        return 2
    configured = (
        qcfg.collector if {"C4_QUERY_COLLECTOR", "C4_CONFIG"} & set(os.environ) or args.config else None
    )
    address = args.collector or configured or os.environ.get("C4_AGENT_COLLECTOR") or DEFAULT_COLLECTOR
    security.warn_if_plaintext(address, "c4 sql")
    try:
        table, truncated = query_arrow(address, args.sql, args.max_rows, args.timeout_s, security)
    except QueryError as exc:
        print(f"c4 sql: {exc}", file=sys.stderr)
        return 1
    if args.format == "parquet":
        if not args.output and sys.stdout.isatty():
            print("c4 sql: --format parquet needs --output FILE (or redirect stdout)", file=sys.stderr)
            return 2
        buf = io.BytesIO()
        pq.write_table(printable_values(table, "parquet"), buf)  # intervals and unions as text
        return _write(args.output, buf.getvalue())
    # what polars or the format cannot take (times past year 9999, intervals, nested values in CSV) as text
    shown = printable_values(table, args.format)
    if args.format == "table" or (not args.output and sys.stdout.isatty()):
        shown = printable_text(shown)  # stored text may hold escape sequences a terminal would run
    df = pl.from_arrow(shown)
    assert isinstance(df, pl.DataFrame)
    if args.format == "csv":
        text = df.write_csv()
    elif args.format == "json":
        text = df.write_ndjson()
    else:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=80, tbl_width_chars=200):
            text = str(df) + "\n"
    code = _write(args.output, text.encode())
    if truncated:
        print(f"c4 sql: result cut at {table.num_rows} rows (--max-rows)", file=sys.stderr)
    return code


def _write(output: str | None, data: bytes) -> int:
    """Write the result to ``output`` (stdout when None); 1 and a line naming where, when it cannot."""
    try:
        if output:
            with open(output, "wb") as f:
                f.write(data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
    except OSError as exc:
        print(f"c4 sql: cannot write {output or 'standard output'}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
