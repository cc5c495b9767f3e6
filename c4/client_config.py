"""The config sections of a collector's clients (``[agent]``, ``[query]``), checked without pydantic.

``c4 agent`` loads only this (c4.options): pydantic and the collector's models cost the agent
~12 MiB resident. ``c4.config`` re-exports everything here and adds the collector's section.
"""

from __future__ import annotations

import os
import socket
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from c4 import wire_limits as w
from c4.options import Meta, Options, OptionsError, field
from c4.shard import parse_collectors

DEFAULT_COLLECTOR = "127.0.0.1:7070"

#: Sections a config file may hold.
SECTION_NAMES = ("agent", "collector", "query")

#: Samplers an agent runs when the config names none. Each starts with policy "ignore": a node
#: without GPUs, RDMA devices or NCCL jobs runs the others and reports that source unavailable.
DEFAULT_SAMPLERS: dict[str, dict[str, Any]] = {
    "host": {},
    "heartbeat": {},
    "gpu": {},
    "xid_kmsg": {},
    "nic": {},
    "nccl_inspector": {},
    "nccl_ras": {},
    "nccl_debug_log": {},
    "nccl_conn": {},
    "step_trace": {},
}

Positive = Annotated[float, Meta(gt=0)]
NonNegative = Annotated[float, Meta(ge=0)]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file/variable and the key."""


def check_address(value: str) -> str:
    """``value`` if it is HOST:PORT with a port 0-65535, else ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return value


def split_host_port(address: str) -> tuple[str, int]:
    """'HOST:PORT' or '[V6]:PORT' -> (host without brackets, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def check_addresses(value: str) -> str:
    """One HOST:PORT, or several comma separated (collector shards: home by hashing the node name, then failover)."""
    parts = parse_collectors(value)
    if not parts:
        raise ValueError("no collector address given")
    for p in parts:
        check_address(p)
    return ",".join(parts)


class ClientSecurityConfig(Options):
    """Keys every client of a collector has: TLS files, bearer token file, explicit plaintext."""

    tls_ca: str = ""  # PEM CA bundle that signed the collector's certificate ("" = system roots)
    tls_cert: str = ""  # PEM client certificate for mutual TLS
    tls_key: str = ""  # its private key
    tls_server_name: str = ""  # name to check in the collector's certificate instead of the host
    token_file: str = ""  # file holding this client's bearer token
    insecure: bool = False  # plaintext to a non-loopback collector


class AgentConfig(ClientSecurityConfig):
    """``[agent]``: where to send, how often to sample, where to spool, how to authenticate."""

    section = "agent"
    collector: str = DEFAULT_COLLECTOR
    node: str = field(default_factory=socket.gethostname)
    agent_id: str = ""
    job: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    interval_s: Positive = 1.0
    flush_interval_s: Positive = 1.0
    # flush less often when the collector asks (it falls behind): at most every its advice, up to 60 s
    follow_flush_advice: bool = True
    # while the collector has not acknowledged the last flush (it falls behind), a flush due gathers
    # another tick instead, up to this long after the last flush (0: flush on time regardless)
    flush_wait_max_s: Annotated[float, Meta(ge=0, le=60)] = 5.0
    health_interval_s: Positive = 10.0
    spool_dir: Path = Path("/var/lib/c4/spool")
    spool_max_bytes: Annotated[int, Meta(ge=1 << 16)] = 256 << 20
    spool_fsync: bool = False
    spool_hold_max_bytes: Annotated[int, Meta(ge=0)] = (
        64 << 20
    )  # batches kept in memory while the spool cannot be written
    max_batch_bytes: Annotated[int, Meta(ge=1 << 12)] = 4 << 20
    max_in_flight: Annotated[int, Meta(ge=1)] = 64
    backoff_initial_s: Positive = 0.2
    backoff_max_s: Positive = 10.0
    # on SIGTERM: how long to keep sending what is spooled before exiting (the rest stays spooled)
    drain_timeout_s: NonNegative = 5.0
    samplers: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_SAMPLERS))

    def __post_init__(self) -> None:
        """Addresses, paths and what the collector would refuse in every Hello and batch (c4.wire_limits)."""
        try:
            self.collector = check_addresses(self.collector)
        except ValueError as exc:
            raise ValueError(f"[agent.collector] {exc}") from None
        self.spool_dir = Path(self.spool_dir)
        problem = w.hostname_problem(self.node) or w.text_problem("job", self.job, w.MAX_JOB_CHARS)
        if not problem and self.agent_id:
            problem = w.agent_id_problem(self.agent_id)
        elif not problem and w.agent_id_problem(self.node):
            problem = f"node {w.shown(self.node)} cannot serve as the agent id: {w.agent_id_problem(self.node)}; set agent_id"
        for key, value in self.labels.items():
            problem = (
                problem
                or w.label_key_problem(key)
                or w.text_problem(f"label {key}", value, w.MAX_LABEL_VALUE_CHARS)
            )
        if not problem and len(self.labels) > w.MAX_LABELS:
            problem = f"{len(self.labels)} labels, over {w.MAX_LABELS}"
        if problem:
            raise ValueError(f"[agent] the collector would refuse this agent: {problem}")

    @property
    def effective_agent_id(self) -> str:
        """The agent id: configured, or the node name."""
        return self.agent_id or self.node


class QueryConfig(ClientSecurityConfig):
    """``[query]``: how readers (``c4 sql``, the UI) reach the collector's Query RPC."""

    section = "query"
    collector: str = DEFAULT_COLLECTOR

    def __post_init__(self) -> None:
        """The collector's address."""
        try:
            check_address(self.collector)
        except ValueError as exc:
            raise ValueError(f"[query.collector] {exc}") from None


#: The sections checked here (``c4.config`` adds the collector's).
CLIENT_SECTIONS: dict[str, type[Options]] = {"agent": AgentConfig, "query": QueryConfig}


def read_toml(path: Path | str | None) -> tuple[dict[str, Any], str]:
    """A config file's tables and where they came from ('defaults' without a file); ConfigError naming it."""
    if path is None:
        return {}, "defaults"
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p}: {exc}") from None
    except OSError as exc:  # a directory, unreadable, an I/O error
        raise ConfigError(f"config file {p} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    unknown = sorted(set(raw) - set(SECTION_NAMES))
    if unknown:
        raise ConfigError(
            f"invalid configuration ({p}): [{unknown[0]}] is not a section; use {', '.join(SECTION_NAMES)}"
        )
    return raw, str(p)


def env_overrides(env: Mapping[str, str], sections: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """C4_AGENT_SPOOL_DIR=/x -> {"agent": {"spool_dir": "/x"}} for the given sections; unknown keys are errors."""
    out: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith("C4_"):
            continue
        rest = name[3:].lower()
        for section, model in sections.items():
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1 :]
                if key not in model.model_fields or key == "samplers":
                    raise ConfigError(f"environment variable {name}: {section} has no key {key!r}")
                out.setdefault(section, {})[key] = env_value(name, value, _declared_type(model, key))
                break
    return out


def _declared_type(model: Any, key: str) -> Any:
    """The type a section declares for ``key`` (pydantic's field annotation, or an Options dataclass's)."""
    annotation = getattr(model.model_fields.get(key), "annotation", None)
    if annotation is None:
        annotation = typing.get_type_hints(model).get(key)
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def env_value(name: str, value: str, declared: Any) -> Any:
    """An environment variable's text as the value of a key of type ``declared``: a list key takes a TOML
    array (``["a", "b"]``) or comma-separated items, a table key a TOML inline table (``{rack = "r1"}``;
    other text is left to the key's own parsing); every other key its text, converted when checked."""
    origin = typing.get_origin(declared)
    text = value.strip()
    if origin is list:
        if text.startswith("["):
            return _toml_value(name, text)
        return [item.strip() for item in text.split(",") if item.strip()]
    if origin is dict and text.startswith("{"):
        return _toml_value(name, text)
    return value


def _toml_value(name: str, text: str) -> Any:
    """A TOML array or inline table written in environment variable ``name``."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"environment variable {name}: not a TOML array or inline table: {exc}") from None


def client_section(cls: type[Options], raw: Mapping[str, Any], where: str) -> Any:
    """One client section from its dict; ConfigError naming the source and the key."""
    try:
        return cls.model_validate(raw)
    except (OptionsError, ValueError) as exc:
        raise ConfigError(f"invalid configuration ({where}): {exc}") from None


def load_agent_config(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """The ``[agent]`` section of the file (if any) overlaid by C4_AGENT_* variables, checked (no pydantic).

    Only the agent's section is checked here; ``c4 collector`` checks its own."""
    env = os.environ if env is None else env
    raw, where = read_toml(path)
    agent = dict(raw.get("agent", {}))
    over = env_overrides(env, {"agent": AgentConfig}).get("agent")
    if over:
        agent.update(over)
        where += " + environment"
    return client_section(AgentConfig, agent, where)
