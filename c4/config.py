"""Configuration: a TOML file overlaid by C4_<SECTION>_<KEY> environment variables, validated at start."""

from __future__ import annotations

import os
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from c4.client_config import (  # noqa: F401 - re-exported: c4.config is where the rest of C4 looks
    CLIENT_SECTIONS,
    DEFAULT_COLLECTOR,
    DEFAULT_SAMPLERS,
    AgentConfig,
    ClientSecurityConfig,
    ConfigError,
    QueryConfig,
    check_address,
    check_addresses,
    client_section,
    load_agent_config,
    read_toml,
    split_host_port,
)
from c4.client_config import env_overrides as client_env_overrides
from c4.wire_limits import DEFAULT_MAX_BATCH_DECODED_BYTES, DEFAULT_MAX_BATCH_ROWS

#: Placeholders a remediation command template may use (isolation and restart alike).
TEMPLATE_FIELDS = ("node", "job", "fault_id", "component", "reason")

#: The restart command of each ``restart`` mode; ``command`` takes ``restart_command``.
RESTART_TEMPLATES = {
    "slurm": "scontrol requeue {job}",
    "kubernetes": "kubectl delete pod -l job={job}",
}

#: The --apply-as formats a collector's replan may write: those a plan alone defines (not the host order).
REPLAN_APPLY_FORMATS = ("sport-table", "switch-routes", "nccl-env")
#: The longest lake keep time or upkeep timeout, seconds (~31 years)
MAX_KEEP_S = 1e9
#: The longest any ``[collector]`` duration (a ``*_s`` key) may be: past it "now" plus or minus it leaves
#: the dates Python and DuckDB can hold, and the task using it fails at every run (retention, diagnosis)
MAX_SECONDS = MAX_KEEP_S
#: The shortest lake_lease_timeout_s other than 0: the lease is renewed three times a timeout
MIN_LEASE_TIMEOUT_S = 3.0
#: The largest byte size a ``[collector]`` key may name where DuckDB parses it as a memory size
MAX_STORE_BYTES = 1 << 40
#: The largest ``max_batch_bytes``: four batches and a MiB must fit gRPC's 32-bit message limit
MAX_BATCH_BYTES = (1 << 29) - (1 << 20)


def template_problem(key: str, template: str) -> str:
    """Why a command template cannot be filled (an unknown or positional placeholder, bad braces), or ''."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        return f"{key}: {template!r} is not a valid template: {exc}"
    bad = [n for n in names if n not in TEMPLATE_FIELDS]
    if bad:
        return (
            f"{key}: unknown placeholder {{{bad[0]}}} in {template!r}; "
            f"use {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
        )
    return ""


class CollectorConfig(BaseModel):
    """``[collector]``: listen address, database file, retention and query limits."""

    # inf and nan are refused in every number (an infinite retention or skew fails the tasks using it)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    listen: str = DEFAULT_COLLECTOR
    db: Path = Path("/var/lib/c4/c4.duckdb")
    retention_s: float = Field(7 * 86400, gt=0)
    retention_interval_s: float = Field(300, gt=0)
    # rollups (<table>_1m, <table>_1h of the tables declaring rollup = true): rolled this often (0: off),
    # kept this long; raw rows stay for retention_s
    rollup_interval_s: float = Field(60.0, ge=0)
    rollup_minute_retention_s: float = Field(14 * 86400, gt=0)
    rollup_hour_retention_s: float = Field(400 * 86400, gt=0)
    query_max_rows: int = Field(1_000_000, ge=1)
    query_timeout_s: float = Field(30.0, gt=0)
    query_max_running: int = Field(16, ge=1, le=256)  # queries executing at once, each on its own thread
    query_max_queued: int = Field(64, ge=0)  # queries waiting for one of those; more: RESOURCE_EXHAUSTED
    # what running queries may hold together
    query_memory_bytes: int = Field(2 << 30, ge=64 << 20, le=MAX_STORE_BYTES)
    max_batch_bytes: int = Field(16 << 20, ge=1 << 12, le=MAX_BATCH_BYTES)
    # what one batch may decode to (compressed Arrow declares it; refused before decoding)
    max_batch_rows: int = Field(DEFAULT_MAX_BATCH_ROWS, ge=1, le=1 << 31)
    max_batch_decoded_bytes: int = Field(DEFAULT_MAX_BATCH_DECODED_BYTES, ge=1 << 12)
    # rows dated further ahead of the collector's clock are stored with ts = their receive time; windows
    # (diagnosis, /metrics gauges) end this far past the collector's clock; retention drops rows beyond it
    max_clock_skew_s: float = Field(300.0, gt=0)
    clock_skew_interval_s: float = Field(10.0, gt=0)  # at most one agent_clock row per agent this often
    metrics_interval_s: float = Field(10.0, gt=0)
    group_commit_max_batches: int = Field(4096, ge=1)
    # a group commit starts at most this long after the previous one started (3x as long as that one took,
    # up to this; batches gather meanwhile into one commit); 0: as soon as batches wait
    group_commit_spacing_s: float = Field(0.25, ge=0, le=5)
    # processes that receive and check agents' batches beside the one owning the store (0: one process)
    ingest_processes: int = Field(0, ge=0, le=64)
    # DuckDB checkpoints past this WAL size
    checkpoint_wal_bytes: int = Field(128 << 20, ge=1 << 20, le=MAX_STORE_BYTES)
    # checkpoint from a thread of its own instead of inside the writer's COMMIT, the writer committing into
    # a side file meanwhile (c4.collector.side_store); false: DuckDB checkpoints inside a commit, acks wait
    background_checkpoints: bool = True
    # let DuckDB's checkpoints merge the partly filled row groups earlier checkpoints wrote (rewriting them:
    # 0.5 s checkpoints became 2-4 s at 2,000 nodes); false: every checkpoint writes only its new rows
    merge_row_groups: bool = False
    store_threads: int = Field(
        0, ge=0, le=1024
    )  # DuckDB threads (0: one per core but one; a lake: one per core)
    diagnose_interval_s: float = Field(10.0, ge=0)  # 0 disables the in-collector diagnosis
    diagnose_window_s: float = Field(120.0, gt=0)
    # C4D looks this far behind the clock: set it to the agents' flush_interval_s when that is more than a
    # second or two, so that no node's latest seconds are missing while the others' are there
    diagnose_delivery_lag_s: float = Field(0.0, ge=0, le=600)
    # the longest flush interval the collector asks its agents for while its commits fall behind (fewer,
    # larger batches for the same rows; c4.collector.flush_advice); C4D then looks that far behind the
    # clock on its own. 1 (or less): never ask for more than the agents' own interval
    agent_flush_max_s: float = Field(5.0, ge=0, le=60)
    # job accounting (job_accounting): over this much recent time, each job at most this often, with this
    # checkpoint interval when jobs do not say (0 = unknown: redone work is then not measured)
    accounting_window_s: float = Field(6 * 3600.0, gt=0)
    accounting_interval_s: float = Field(60.0, ge=0)  # 0: every diagnosis pass (a job whose data changed)
    checkpoint_interval_s: float = Field(0.0, ge=0)
    fabric_topology: str = ""  # fabric YAML: nominal switch link rates for localizing a degraded link
    fabric_discovery_interval_s: float = Field(60.0, ge=0)  # fabric_topology from LLDP/ibnetdiscover (0: off)
    fabric_fresh_s: float = Field(300.0, gt=0)  # neighbour polls older than this are not the fabric now
    # C4P's closed loop (needs fabric_topology): replan the jobs whose newest plan crosses a link C4D found
    # down or degraded or discovery saw vanish; store, announce, and write the plan where told (dry run: "")
    replan_on_link_faults: bool = True
    replan_interval_s: float = Field(0.0, ge=0)  # how often to look (0: every diagnose_interval_s)
    replan_max_qps: int = Field(8, ge=1, le=64)  # QPs a replan may give one connection
    # of plans within this share of the lowest max link load, the one moving fewest pieces is taken
    replan_load_slack: float = Field(0.05, ge=0, le=1)
    replan_apply_dir: str = ""  # write each replan here (<dir>/<job>/<plan_id>/), else a dry run
    replan_apply_formats: list[str] = Field(default_factory=lambda: ["sport-table", "switch-routes"])
    lake: str = ""  # postgres://user@host:port/db: write into a DuckLake shared with other collectors
    lake_data_path: str = "/var/lib/c4/lake"  # the lake's Parquet files (a shared directory or s3://...)
    shard: str = ""  # this collector's name in the lake (default: hostname_port)
    # the lake's diagnosis lease: a leader that stops renewing (hung) loses it after this long
    # (0: three diagnosis periods, at least 30 s); a dead leader loses it at once
    lake_lease_timeout_s: float = Field(0.0, ge=0)
    # (else at least MIN_LEASE_TIMEOUT_S: it is renewed three times a timeout, and a renewal a few ms late
    # lost the lease; at 0.001 s one collector alone logged "another collector takes over" 162 times)
    # the lake's file upkeep, on the lease holder (0: off): merge small Parquet files, expire snapshots
    # older than lake_snapshot_keep_s, delete the files they freed lake_file_keep_s after (> query_timeout_s)
    lake_upkeep_interval_s: float = Field(600.0, ge=0)
    # (at most MAX_KEEP_S: "now minus" a longer span is before year 1 and fails every pass)
    lake_snapshot_keep_s: float = Field(3600.0, gt=0, le=MAX_KEEP_S)
    lake_file_keep_s: float = Field(3600.0, gt=0, le=MAX_KEEP_S)
    # an upkeep pass runs in a child process, killed (the pass fails) after this long
    lake_upkeep_timeout_s: float = Field(3600.0, gt=0, le=MAX_KEEP_S)
    alertmanager_url: str = ""  # e.g. http://alertmanager:9093
    alert_webhook_urls: list[str] = Field(default_factory=list)
    slack_webhook_url: str = ""
    isolation_command: str = ""  # e.g. "scontrol update NodeName={node} State=DRAIN Reason={reason}"
    isolation_dry_run: bool = True
    # remediation's second step, after isolation: restart the fault's job (once per fault, dry-run by default)
    restart: Literal["none", "slurm", "kubernetes", "command"] = "none"
    restart_command: str = ""  # restart = "command": e.g. "/opt/site/requeue.sh {job} {node} {fault_id}"
    restart_dry_run: bool = True
    remediation_hold: bool = False  # cluster-wide hold: record what would run ("held"), run nothing
    remediation_hold_jobs: list[str] = Field(default_factory=list)  # jobs never isolated or restarted
    remediation_timeout_s: float = Field(60.0, gt=0)  # an isolation/restart command is killed after this
    tls_cert: str = ""  # PEM server certificate: serve gRPC over TLS
    tls_key: str = ""
    tls_client_ca: str = ""  # PEM CA of agent certificates: require mutual TLS
    tokens_file: str = ""  # bearer tokens: TOKEN ROLES NAME per line
    # mutual TLS without tokens_file: client certificate name (CN) -> roles, "*" for any other name
    mtls_roles: dict[str, str] = Field(default_factory=dict)
    insecure: bool = False  # allow plaintext / no tokens on a non-loopback listen address
    metrics_listen: str = ""  # HOST:PORT of the Prometheus /metrics endpoint ("" = off)
    metrics_window_s: float = Field(300.0, gt=0)  # rows older than this are not exported
    metrics_max_connections: int = Field(16, ge=1, le=1024)  # /metrics clients at once; more get 503
    metrics_read_timeout_s: float = Field(10.0, gt=0)  # a /metrics client silent this long is dropped
    # on a lake: /metrics serves the gauges read from the lake as computed at most this long ago,
    # recomputed in the background (0: at every scrape, which may take over 10 s)
    metrics_lake_cache_s: float = Field(15.0, ge=0)

    _addr = field_validator("listen")(classmethod(lambda cls, v: check_address(v)))

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_addr(cls, v: str) -> str:
        return check_address(v) if v else v

    @field_validator("replan_apply_formats")
    @classmethod
    def _replan_formats(cls, v: list[str]) -> list[str]:
        """Only the formats a plan alone defines (a replan keeps the host order)."""
        bad = sorted(set(v) - set(REPLAN_APPLY_FORMATS))
        if bad:
            raise ValueError(
                f"replan_apply_formats: {bad} not allowed; choose from {list(REPLAN_APPLY_FORMATS)}"
            )
        return v

    @field_validator("*")
    @classmethod
    def _durations_bounded(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse a duration so long that the clock plus or minus it is no date (every run would fail)."""
        if (info.field_name or "").endswith("_s") and isinstance(value, float) and value > MAX_SECONDS:
            raise ValueError(
                f"{value:g} s is longer than {MAX_SECONDS:g} s (~31 years): the collector's clock plus or "
                "minus it is past the dates it can store"
            )
        return value

    @field_validator("lake_lease_timeout_s")
    @classmethod
    def _lease_timeout(cls, value: float) -> float:
        """0 (three diagnosis periods, at least 30 s) or long enough to renew within."""
        if 0 < value < MIN_LEASE_TIMEOUT_S:
            raise ValueError(
                f"{value:g} s is too short to renew the lease within; use 0 (three diagnosis periods, at least "
                f"30 s) or at least {MIN_LEASE_TIMEOUT_S:g} s"
            )
        return value

    @model_validator(mode="after")
    def _lake_files(self) -> CollectorConfig:
        """Refuse a file keep time a running query could outlast (it would read a deleted file)."""
        if self.lake and self.lake_file_keep_s < self.query_timeout_s:
            raise ValueError(
                f"lake_file_keep_s ({self.lake_file_keep_s:g}) must be at least query_timeout_s "
                f"({self.query_timeout_s:g}): a query still reading a merged-away file would fail"
            )
        return self

    @model_validator(mode="after")
    def _templates(self) -> CollectorConfig:
        """Refuse at start a remediation template the collector could not fill."""
        if self.restart == "command" and not self.restart_command:
            raise ValueError('restart = "command" needs restart_command')
        restart = self.restart_command or RESTART_TEMPLATES.get(self.restart, "")
        for key, template in (("isolation_command", self.isolation_command), ("restart_command", restart)):
            problem = template_problem(key, template)
            if problem:
                raise ValueError(problem)
        return self

    @property
    def restart_template(self) -> str:
        """The job-restart command template in force ('' when restart = "none")."""
        if self.restart == "none":
            return ""
        return self.restart_command or RESTART_TEMPLATES[self.restart]

    @field_validator("mtls_roles", mode="before")
    @classmethod
    def _mtls_roles(cls, v: Any) -> Any:
        """A TOML table, or (from the environment) ``NAME=ROLE[,ROLE] NAME=ROLE ...``."""
        if not isinstance(v, str):
            return v
        out: dict[str, str] = {}
        for item in v.replace(";", " ").split():
            name, sep, roles = item.partition("=")
            if not sep or not name or not roles:
                raise ValueError(f"mtls_roles: expected NAME=ROLE[,ROLE] items, got {item!r}")
            out[name] = roles
        return out


class Config(BaseModel):
    """The whole file: the clients' sections (c4.client_config, checked without pydantic) and the collector's."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    agent: Annotated[AgentConfig, BeforeValidator(AgentConfig.model_validate)] = Field(
        default_factory=AgentConfig
    )
    collector: CollectorConfig = Field(default_factory=CollectorConfig)
    query: Annotated[QueryConfig, BeforeValidator(QueryConfig.model_validate)] = Field(
        default_factory=QueryConfig
    )


SECTIONS = {"agent": AgentConfig, "collector": CollectorConfig, "query": QueryConfig}


def env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """C4_AGENT_SPOOL_DIR=/x -> {"agent": {"spool_dir": "/x"}}; unknown keys are errors."""
    return client_env_overrides(env, SECTIONS)


def load_config(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (if any), overlay C4_* variables, validate; raise ConfigError naming the problem."""
    env = os.environ if env is None else env
    raw, where = read_toml(path)
    over = env_overrides(env)
    for section, values in over.items():
        raw.setdefault(section, {}).update(values)
    if over:
        where += " + environment"
    clients = {name: client_section(cls, raw.get(name, {}), where) for name, cls in CLIENT_SECTIONS.items()}
    try:
        collector = CollectorConfig.model_validate(raw.get("collector", {}))
    except ValidationError as exc:
        raise ConfigError(
            f"invalid configuration ({where}): {validation_problems(exc, 'collector')}"
        ) from None
    return Config(collector=collector, **clients)


def validation_problems(exc: ValidationError, section: str = "") -> str:
    """A pydantic error as one line: ``[section.key] problem; ...`` (no input dump, no URL)."""
    return "; ".join(
        (
            f"[{'.'.join(map(str, [section] * bool(section) + list(e['loc'])))}] "
            if e["loc"] or section
            else ""
        )
        + e["msg"].removeprefix("Value error, ")
        for e in exc.errors()
    )
