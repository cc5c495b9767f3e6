"""The rooms keep their import rules: agent never imports collector/analytics; nothing imports c4.ui."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_modules(folder: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in (REPO / folder).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        out[str(path.relative_to(REPO))] = names
    return out


def test_agent_never_imports_collector_or_analytics():
    for path, names in imported_modules("agent").items():
        bad = {n for n in names if n.startswith(("c4.collector", "c4.analytics"))}
        assert not bad, f"{path} imports {bad}"


def test_nothing_imports_ui():
    for folder in ("c4", "agent", "collector", "analytics", "traffic"):
        for path, names in imported_modules(folder).items():
            assert not {n for n in names if n.startswith("c4.ui")}, f"{path} imports c4.ui"


def test_wheel_holds_only_the_c4_namespace(tmp_path):
    """`pip install .` builds a wheel whose every module lives under c4/ (no bare agent/ or ui/)."""
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("c4-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"c4", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, tops
    for room in ("agent", "collector", "analytics", "traffic", "ui"):
        assert f"c4/{room}/__init__.py" in names
    assert "c4/catalogue/tables/core.toml" in names and "c4/telemetry/v1/telemetry.proto" in names
    assert "c4/agent/plugin/c4_profiler.c" in names and "c4/agent/plugin/nccl_profiler_api.h" in names
