"""The plugin's own header matches NCCL's profiler ABI: every offset, size and enum value it relies on.

The facts (nccl_abi/facts.json) were measured by compiling NCCL's own headers at each release tag
(nccl_abi/generate_facts.py); here a small C program compiled against agent/plugin/nccl_profiler_api.h
prints the same numbers for C4's declarations and every one must agree.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from c4.agent.plugin_build import CFLAGS, SOURCE_DIR, compiler

FACTS = json.loads((Path(__file__).parent / "nccl_abi" / "facts.json").read_text())

#: NCCL type -> (C4 type, prefix of the payload members that NCCL keeps in an anonymous union)
TYPES = {
    **{f"ncclProfiler_v{v}_t": ("c4ProfilerLegacy", "") for v in (1, 2, 3)},
    "ncclProfiler_v4_t": ("c4Profiler_v4", ""),
    "ncclProfiler_v5_t": ("c4Profiler_v5", ""),
    "ncclProfiler_v6_t": ("c4Profiler_v5", ""),
    "ncclProfilerEventDescr_v4_t": ("c4EventDescr_v4", "u."),
    "ncclProfilerEventDescr_v5_t": ("c4EventDescr_v5", "u."),
    "ncclProfilerEventDescr_v6_t": ("c4EventDescr_v5", "u."),
    **{f"ncclProfilerEventStateArgs_v{v}_t": ("c4EventStateArgs", "") for v in (4, 5, 6)},
}
TOP_LEVEL = {"type", "parentObj", "rank"}
#: Types NCCL reads from the plugin (the exported tables) must match in size too; descriptors and
#: state arguments are written by NCCL and only read by the plugin, so member layout is what counts.
WHOLE_SIZE = {t for t in TYPES if t.startswith("ncclProfiler_v")}


def c4_enum(name: str) -> str:
    """NCCL enum name -> the C4 header's name for the same value."""
    if name.startswith("ncclProfiler"):
        return "c4" + name.removeprefix("ncclProfiler").removesuffix("_v4")
    return "c4" + name.removeprefix("nccl")


def c4_member(nccl_type: str, member: str) -> str:
    """NCCL member path -> the C4 member path."""
    prefix = TYPES[nccl_type][1]
    return member if member in TOP_LEVEL or not prefix else prefix + member


def facts() -> list[tuple[str, str, int]]:
    """(fact id, C expression on C4's header, NCCL's value) for every recorded fact."""
    out = []
    for version, doc in FACTS["versions"].items():
        for typ, mems in doc["members"].items():
            c4t = TYPES[typ][0]
            for m, v in mems.items():
                cm = c4_member(typ, m)
                out.append((f"{version} {typ}.{m} offset", f"offsetof({c4t}, {cm})", v["offset"]))
                out.append((f"{version} {typ}.{m} size", f"sizeof((({c4t}*)0)->{cm})", v["size"]))
        for typ, size in doc["sizeof"].items():
            if typ in WHOLE_SIZE:
                out.append((f"{version} sizeof {typ}", f"sizeof({TYPES[typ][0]})", size))
        for name, value in doc["enums"].items():
            out.append((f"{version} enum {name}", f"(long)({c4_enum(name)})", value))
    return out


def measure(tmp_path: Path, checks: list[tuple[str, str, int]]) -> dict[str, int]:
    """Compile and run the probe against the plugin's header; fact id -> C4's value."""
    src = tmp_path / "abi_probe.c"
    body = "\n".join(f'  printf("%ld\\n", (long)({expr}));' for _, expr, _ in checks)
    src.write_text(
        '#include <stdio.h>\n#include "nccl_profiler_api.h"\nint main(void) {\n' + body + "\n  return 0;\n}\n"
    )
    exe = tmp_path / "abi_probe"
    subprocess.run(
        [compiler(), *CFLAGS, "-I", str(SOURCE_DIR), "-o", str(exe), str(src)],
        check=True,
        capture_output=True,
    )
    values = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    return {fid: int(v) for (fid, _, _), v in zip(checks, values, strict=True)}


def test_facts_cover_every_version_the_plugin_exports():
    assert set(FACTS["versions"]) == {"v1", "v2", "v3", "v4", "v5", "v6"}
    for version, doc in FACTS["versions"].items():
        tag, path = doc["source"].split(":", 1)
        assert tag.startswith("v2.") and path.endswith(f"profiler_{version}.h"), doc["source"]
    assert len(facts()) > 250


def test_header_matches_nccl_abi(tmp_path):
    checks = facts()
    got = measure(tmp_path, checks)
    wrong = [f"{fid}: NCCL {want}, C4 {got[fid]}" for fid, _, want in checks if got[fid] != want]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "fid", ["v5 ncclProfilerEventDescr_v5_t.proxyOp.pid offset", "v4 enum ncclProfileProxyStep"]
)
def test_probe_sees_a_wrong_fact(tmp_path, fid):
    """The check can fail: a fact that is off by one is reported."""
    checks = [(f, e, v + 1 if f == fid else v) for f, e, v in facts()]
    got = measure(tmp_path, checks)
    assert [f for f, _, v in checks if got[f] != v] == [fid]
