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
    parser.add_argument(
        "--port", type=port_number, default=8501, help="HTTP port of the dashboard (default 8501)"
    )
    parser.add_argument(
        "--address", default="127.0.0.1", help="interface to serve on (default 127.0.0.1; 0.0.0.0 for all)"
    )
    parser.add_argument(
        "--auth",
        metavar="FILE",
        help="TOML with an [auth] section (Streamlit's OpenID Connect login: redirect_uri, cookie_secret, "
        "client_id, client_secret, server_metadata_url) and optionally [c4] allowed_emails / "
        "allowed_domains; visitors must sign in (default: $C4_UI_AUTH_FILE, else no login: put an "
        "authenticating reverse proxy in front)",
    )


def port_number(text: str) -> int:
    """A TCP port, 1-65535 (argparse type)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def check_listen(address: str, port: int) -> None:
    """Raise ValueError when the dashboard could not listen on ``address:port`` (not this host's, in use)."""
    from c4.listen_check import refuse_if_served

    try:
        refuse_if_served(address, port)
    except OSError as exc:
        raise ValueError(f"cannot serve on {address}:{port}: {exc.strerror or exc}") from None


def app_path() -> Path:
    """Where the Streamlit app file is: beside the c4 package in a checkout, inside it in a wheel."""
    if APP.is_file():
        return APP
    import importlib.util

    spec = importlib.util.find_spec("c4.ui")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the c4.ui package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "app.py"


#: Keys Streamlit's single-provider [auth] section needs.
AUTH_KEYS = ("redirect_uri", "cookie_secret", "client_id", "client_secret", "server_metadata_url")


def check_auth_file(path: str) -> dict:
    """Read and check a login settings file; raise ValueError naming what is wrong."""
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"--auth {path}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"--auth {path}: not valid TOML: {exc}") from None
    auth = data.get("auth")
    if not isinstance(auth, dict):
        raise ValueError(f"--auth {path}: no [auth] section")
    missing = [k for k in AUTH_KEYS if not str(auth.get(k, "")).strip()]
    if missing:
        raise ValueError(f"--auth {path}: [auth] lacks {', '.join(missing)}")
    if not str(auth["redirect_uri"]).rstrip("/").endswith("/oauth2callback"):
        raise ValueError(
            f"--auth {path}: redirect_uri must be the dashboard's URL + /oauth2callback, "
            f"e.g. https://c4.example.com/oauth2callback (got {auth['redirect_uri']!r})"
        )
    if len(str(auth["cookie_secret"])) < 32:
        raise ValueError(f"--auth {path}: cookie_secret is too short: use at least 32 random characters")
    policy = data.get("c4", {})
    for key in ("allowed_emails", "allowed_domains"):
        value = policy.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"--auth {path}: [c4] {key} must be a list of strings")
    return data


def command(collector: str, port: int, address: str, auth_file: str = "") -> tuple[list[str], dict[str, str]]:
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
    if auth_file:  # Streamlit reads [auth] from its secrets; only this file, not ~/.streamlit
        args += ["--secrets.files", str(Path(auth_file).resolve())]
    env = {
        **os.environ,
        "C4_UI_COLLECTOR": collector or os.environ.get("C4_UI_COLLECTOR") or DEFAULT_COLLECTOR,
    }
    return args, env


def run(args: argparse.Namespace) -> int:
    """Replace this process with `streamlit run` on the app."""
    import os

    from c4.config import check_address
    from c4.query import query_security
    from c4.security import is_loopback

    auth_file = args.auth or os.environ.get("C4_UI_AUTH_FILE", "")
    try:
        if args.collector:
            check_address(args.collector)
        elif os.environ.get("C4_UI_COLLECTOR"):  # a local setting: said here, not as a collector's refusal
            try:
                check_address(os.environ["C4_UI_COLLECTOR"])
            except ValueError as exc:
                raise ValueError(f"C4_UI_COLLECTOR: {exc}") from None
        if auth_file:
            check_auth_file(auth_file)
        query_security().check()  # $C4_CONFIG's [query] and C4_QUERY_*: every page's queries use them
        check_listen(args.address, args.port)
        argv, env = command(args.collector, args.port, args.address, auth_file)
    except (ValueError, FileNotFoundError) as exc:
        print(f"c4 ui: {exc}", file=sys.stderr)
        return 2
    if not auth_file and not is_loopback(f"{args.address}:{args.port}"):
        print(
            f"c4 ui: warning: serving on {args.address} without a login; pass --auth FILE (OpenID Connect) "
            "or publish it only through an authenticating reverse proxy",
            file=sys.stderr,
        )
    print(
        f"c4 ui: dashboard on http://{args.address}:{args.port}/ reading {env['C4_UI_COLLECTOR']}"
        + (f", login via OpenID Connect ({auth_file})" if auth_file else ""),
        flush=True,
    )
    os.execve(sys.executable, argv, env)
    return 0  # not reached
