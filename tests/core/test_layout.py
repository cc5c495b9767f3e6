"""The house rules, checked from the AST of every module: imports point down only, c4/ is the ground,
imports sit at module level unless they say why, the rooms are the README's, tests carry their data.

Rooms (folder -> package c4.<room>, c4/ itself is the contract): see README "Layout" and DESIGN.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from c4.bench.cli import BENCHES
from c4.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]

#: room -> the rooms it may import (besides itself). c4/ is the ground and imports none.
MAY_IMPORT: dict[str, set[str]] = {
    "c4": set(),
    "agent": {"c4"},
    "traffic": {"c4"},
    "analytics": {"c4", "traffic"},
    "collector": {"c4", "analytics", "traffic"},
    "ui": {"c4"},
    "sim": {"c4", "agent", "traffic", "analytics", "collector"},
    "bench": {"c4", "agent", "traffic", "analytics", "collector", "ui", "sim"},
}
ROOMS = tuple(MAY_IMPORT)
#: Modules the CLI imports to build its parser (``c4 --help``): heavy imports stay inside run().
CLI_ENTRY_MODULES = {"c4.cli"} | set(COMMANDS.values()) | set(BENCHES.values())
LAZY_REASON = re.compile(r"#\s*lazy:\s*\S")


def room_of(module: str) -> str | None:
    """The room a ``c4...`` module lives in (None for anything outside the c4 namespace)."""
    parts = module.split(".")
    if parts[0] != "c4":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS and parts[1] != "c4" else "c4"


def module_name(path: Path, root: Path = REPO) -> str:
    """The dotted module of a source file (agent/x.py -> c4.agent.x, c4/x.py -> c4.x)."""
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts if parts[0] == "c4" else ["c4", *parts])


def sources() -> list[Path]:
    """Every hand-written module of every room (generated protobuf code aside)."""
    return sorted(
        p
        for room in ROOMS
        for p in (REPO / room).rglob("*.py")
        if "_pb2" not in p.name and "__pycache__" not in p.parts
    )


def imports(path: Path, root: Path = REPO) -> list[tuple[int, str, bool, str]]:
    """(line, imported module, at module level?, source line) of every import in a file, relative ones resolved."""
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    top: set[int] = set()
    for node in tree.body:
        nodes = ast.walk(node) if isinstance(node, ast.If | ast.Try) else [node]
        top |= {id(n) for n in nodes}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):  # from X import y: y may be a module (from c4 import sim)
            base = [node.module or ""]
            if node.level:  # from ..room import x: resolved against the file's package
                package = module_name(path, root).split(".")
                if path.name != "__init__.py":
                    package.pop()
                base = package[: len(package) - (node.level - 1)] + ([node.module] if node.module else [])
            names = [".".join([*base, a.name]) for a in node.names]
        else:
            continue
        source = " ".join(lines[node.lineno - 1 : node.end_lineno])
        out += [(node.lineno, n, id(node) in top, source) for n in names]
    return out


def test_every_room_is_a_folder_and_a_package():
    for room in ROOMS:
        assert (REPO / room / "__init__.py").is_file(), f"room {room}/ has no __init__.py"


def arrows_against_layout(paths: list[Path], root: Path = REPO) -> list[str]:
    """Every import from one room into a room it may not import, as 'file:line (room) imports module (room)'."""
    wrong = []
    for path in paths:
        here = room_of(module_name(path, root))
        for line, module, _, _ in imports(path, root):
            there = room_of(module)
            if there is not None and there != here and there not in MAY_IMPORT[here]:
                wrong.append(f"{path.relative_to(root)}:{line} ({here}) imports {module} ({there})")
    return wrong


def test_imports_point_down_only():
    wrong = arrows_against_layout(sources())
    assert not wrong, "imports against the layout:\n" + "\n".join(wrong)


def test_the_check_names_every_kind_of_back_up_arrow(tmp_path):
    """The checker itself: absolute, relative, function-level and guarded back-up imports are all caught."""
    files = {
        "agent/up_absolute.py": "from c4.collector.server import Collector\n",
        "agent/up_relative.py": "from ..analytics import diagnose\n",
        "c4/up_lazy.py": "def f():\n    import c4.agent.cli\n",
        "ui/up_guarded.py": "try:\n    from c4.analytics.fabric import cable_of\nexcept ImportError:\n    pass\n",
        "traffic/up_package.py": "from .. import sim\n",
        "collector/down.py": "from c4.analytics.diagnose import diagnose\nfrom . import server\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    wrong = arrows_against_layout(sorted(tmp_path.rglob("*.py")), tmp_path)
    assert sorted(w.split(":")[0] for w in wrong) == sorted(n for n in files if "/up_" in n), wrong


def test_product_rooms_never_import_sim_or_bench():
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sources()
        if room_of(module_name(path)) not in ("sim", "bench")
        for line, module, _, _ in imports(path)
        if room_of(module) in ("sim", "bench")
    ]
    assert not wrong, "\n".join(wrong)


def test_imports_sit_at_module_level_unless_they_say_why():
    """Function-level imports hide coupling: only CLI entry modules (imported to build ``c4 --help``) keep
    run()'s imports lazy; anywhere else the line carries ``# lazy: <why>`` (a cycle, an optional binding)."""
    wrong = []
    for path in sources():
        if module_name(path) in CLI_ENTRY_MODULES:
            continue
        for line, module, at_top, source in imports(path):
            if not at_top and not LAZY_REASON.search(source):
                wrong.append(f"{path.relative_to(REPO)}:{line}: {module}")
    assert not wrong, "function-level imports without '# lazy: <why>':\n" + "\n".join(wrong)


def test_cli_tables_name_existing_entry_modules():
    for module in CLI_ENTRY_MODULES:
        assert room_of(module) in ROOMS, module
        rel = Path(*module.split(".")[1:]) if room_of(module) != "c4" else Path(*module.split("."))
        assert (REPO / rel.with_suffix(".py")).is_file() or (REPO / rel / "__init__.py").is_file(), module


def test_readme_layout_table_lists_every_room():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Layout", 1)
    assert len(section) == 2, "README has no '## Layout' section"
    table = section[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z0-9_]+)/` \|", table, re.M))
    assert listed >= set(ROOMS), f"README's Layout table lacks {sorted(set(ROOMS) - listed)}"


def test_no_test_reads_outside_the_repository():
    """A bare clone has nothing beside it: tests read their data from tests/fixtures and tests/data."""
    wrong = [
        str(p.relative_to(REPO))
        for p in (REPO / "tests").rglob("*.py")
        if re.search(r"\.\./shared|parents\[2\]\s*/\s*[\"']shared", p.read_text())
    ]
    assert not wrong, wrong


def test_agent_never_imports_collector_or_analytics():
    """The oldest rule, kept by name: a node agent carries nothing of the collector's."""
    for path in (REPO / "agent").rglob("*.py"):
        bad = {m for _, m, _, _ in imports(path) if m.startswith(("c4.collector", "c4.analytics"))}
        assert not bad, f"{path} imports {bad}"


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
    for room in ROOMS:
        assert f"c4/{room}/__init__.py" in names or room == "c4"
    assert "c4/catalogue/tables/core.toml" in names and "c4/telemetry/v1/telemetry.proto" in names
    assert "c4/agent/plugin/c4_profiler.c" in names and "c4/agent/plugin/nccl_profiler_api.h" in names


ROOM_MODULE_STRING = re.compile(r"^c4\.(" + "|".join(r for r in ROOMS if r != "c4") + r")(\.|:|$)")


def test_modules_named_in_strings_follow_the_same_arrows():
    """An import by name (importlib, a plug-in setting's default) is an import too: c4/ names rooms only in
    the CLI's subcommand table, and no room names a module of a room it may not import."""
    wrong = []
    for path in sources():
        here = room_of(module_name(path))
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            match = ROOM_MODULE_STRING.match(node.value)
            if not match or match.group(1) == here:
                continue
            allowed = set(ROOMS) if module_name(path) == "c4.cli" else MAY_IMPORT[here]
            if match.group(1) not in allowed:
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno} ({here}) names {node.value!r}")
    assert not wrong, "modules named against the layout:\n" + "\n".join(wrong)
