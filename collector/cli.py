"""``c4 collector``: run the collector (gRPC server owning the DuckDB file)."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import sys

HELP = "Run the collector: receives agent batches over gRPC, stores them in DuckDB, serves SQL."


def configure(parser: argparse.ArgumentParser) -> None:
    """Collector flags; each overrides the [collector] section of the config file."""
    parser.add_argument(
        "--config", help="TOML config file ([collector] section); C4_COLLECTOR_* env vars apply"
    )
    parser.add_argument("--listen", help="HOST:PORT to serve on (default 127.0.0.1:7070)")
    parser.add_argument("--db", help="DuckDB file this collector owns (default /var/lib/c4/c4.duckdb)")
    parser.add_argument("--retention-s", type=float, help="drop rows older than this many seconds")
    parser.add_argument(
        "--lake",
        help="postgres://user@host:port/db: write into a DuckLake (catalog in PostgreSQL) shared with other "
        "collectors instead of the --db file",
    )
    parser.add_argument(
        "--lake-data-path", help="where the lake's Parquet files go (shared directory or s3://)"
    )
    parser.add_argument("--shard", help="this collector's name in the lake (default hostname_port)")
    parser.add_argument("--tls-cert", help="PEM server certificate: serve gRPC over TLS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--tls-client-ca", help="PEM CA of client certificates: require mutual TLS")
    parser.add_argument("--tokens-file", help="bearer tokens file (TOKEN ROLES NAME per line)")
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow plaintext and no tokens on a non-loopback --listen address",
    )
    parser.add_argument("--metrics-listen", help="HOST:PORT for the Prometheus /metrics endpoint")


#: flag attribute -> config key (same name)
FLAGS = (
    "listen",
    "db",
    "retention_s",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tokens_file",
    "insecure",
    "metrics_listen",
    "lake",
    "lake_data_path",
    "shard",
)


def collector_config(args: argparse.Namespace):
    """Load config and apply flags; exits with a clear message on invalid config."""
    from pydantic import ValidationError  # lazy: c4 --help loads this module; pydantic ~90 ms

    from c4.config import ConfigError, load_config  # lazy: as above

    updates = {k: getattr(args, k) for k in FLAGS if getattr(args, k, None) is not None}
    try:
        cfg = load_config(args.config).collector
        return cfg.model_validate({**cfg.model_dump(), **updates})
    except ValidationError as exc:  # the file passed: a flag, or a flag beside a key of the file
        print(f"c4 collector: {flag_problems(exc, updates)}", file=sys.stderr)
        raise SystemExit(2) from None
    except (ConfigError, ValueError) as exc:
        print(f"c4 collector: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def flag_problems(exc, flags: dict) -> str:
    """A pydantic error about the flags given as one line: ``--retention-s: problem; ...``."""
    out = []
    for e in exc.errors():
        key = str(e["loc"][0]) if e["loc"] else ""
        where = f"--{key.replace('_', '-')}: " if key in flags else f"[collector.{key}] " if key else ""
        out.append(where + e["msg"].removeprefix("Value error, "))
    return "; ".join(out)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM."""
    import duckdb  # lazy: c4 --help loads this module; ~50 ms

    from c4.collector.lake import LakeError, shown_url  # lazy: c4 --help loads this module; duckdb ~80 ms
    from c4.collector.server import StartupError, serve  # lazy: c4 --help loads this module; ~340 ms

    cfg = collector_config(args)
    # a native crash (DuckDB, an extension, gRPC) prints every thread's Python stack on stderr, the
    # collector's log, instead of only glibc's one line ("double free or corruption")
    faulthandler.enable()
    try:
        asyncio.run(serve(cfg, tune_gc=True))
    except StartupError as exc:
        print(f"c4 collector: {exc}", file=sys.stderr)
        return 1
    except duckdb.Error as exc:
        print(f"c4 collector: store {shown_url(cfg.lake) if cfg.lake else cfg.db}: {exc}", file=sys.stderr)
        return 1
    except LakeError as exc:
        print(f"c4 collector: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"c4 collector: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # SecurityError: a TLS/token file or an unsafe listen address
        print(f"c4 collector: {exc}", file=sys.stderr)
        return 2
    return 0
