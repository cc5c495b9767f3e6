"""``c4 ui``: the Streamlit dashboard, reading from a collector over its Query RPC."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Run the dashboard (Streamlit): faults, bandwidth, collectives, traffic plans and a SQL console."

#: The app file, found without importing c4.ui (nothing imports the ui room).
APP = Path(__file__).resolve().parents[1] / "ui" / "app.py"


def configure(parser: argparse.ArgumentParser) -> None:
    """ui flags."""
    parser.description = (
        HELP + " Every panel is a read-only SQL query sent to the collector; the dashboard never opens "
        "the DuckDB file. Open http://ADDRESS:PORT/ in a browser."
    )
    parser.add_argument(
        "--collector",
        help="collector HOST:PORT to read from (default: $C4_UI_COLLECTOR, else 127.0.0.1:7070)",
    )
    parser.add_argument("--port", type=int, default=8501, help="HTTP port of the dashboard (default 8501)")
    parser.add_argument(
        "--address", default="127.0.0.1", help="interface to serve on (default 127.0.0.1; 0.0.0.0 for all)"
    )


def app_path() -> Path:
    """Where the Streamlit app file is: beside the c4 package in a checkout, inside it in a wheel."""
    if APP.is_file():
        return APP
    import importlib.util

    spec = importlib.util.find_spec("c4.ui")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the c4.ui package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "app.py"


def command(collector: str, port: int, address: str) -> tuple[list[str], dict[str, str]]:
    """The `streamlit run` command line and the environment that points it at the collector."""
    import os

    from c4.config import DEFAULT_COLLECTOR

    args = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--theme.base",
        "light",
    ]
    env = {
        **os.environ,
        "C4_UI_COLLECTOR": collector or os.environ.get("C4_UI_COLLECTOR") or DEFAULT_COLLECTOR,
    }
    return args, env


def run(args: argparse.Namespace) -> int:
    """Replace this process with `streamlit run` on the app."""
    import os

    from c4.config import _check_address

    try:
        if args.collector:
            _check_address(args.collector)
        argv, env = command(args.collector, args.port, args.address)
    except (ValueError, FileNotFoundError) as exc:
        print(f"c4 ui: {exc}", file=sys.stderr)
        return 2
    print(
        f"c4 ui: dashboard on http://{args.address}:{args.port}/ reading {env['C4_UI_COLLECTOR']}", flush=True
    )
    os.execve(sys.executable, argv, env)
    return 0  # not reached
