"""Regenerate facts.json from NCCL's own profiler headers: offsetof/sizeof/enum values per API version.

Run by hand, not by pytest: ``python generate_facts.py /path/to/nccl.git > facts.json``. For every
release tag listed below it extracts the example plugin's ``nccl/`` headers (NCCL's published
plugin ABI), compiles a probe against them with the system C compiler and prints the numbers.
Facts of one API version must agree across every tag that offers it; the file records the tags.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

#: API version -> tags whose loader offers it (first = the release that introduced it).
TAGS = {
    1: ["v2.23.4-1", "v2.24.3-1", "v2.25.1-1", "v2.26.6-1"],
    2: ["v2.24.3-1", "v2.25.1-1", "v2.26.6-1"],
    3: ["v2.26.3-1", "v2.26.6-1"],  # 2.26.2 offered v3 before its example headers had it
    4: ["v2.27.3-1", "v2.27.7-1", "v2.28.9-1", "v2.29.7-1", "v2.30.7-1"],
    5: ["v2.28.3-1", "v2.28.9-1", "v2.29.7-1", "v2.30.7-1"],
    6: ["v2.29.3-1", "v2.29.7-1", "v2.30.3-1", "v2.30.7-1"],  # likewise 2.29.2 for v6
}
TABLE = ["name", "init", "startEvent", "stopEvent", "recordEventState", "finalize"]
COLL = ["seqNumber", "func", "sendBuff", "recvBuff", "count", "root", "datatype", "nChannels", "nWarps"]
COLL += ["algo", "proto"]
P2P = ["func", "buff", "datatype", "count", "peer", "nChannels"]
PROXY_OP = ["pid", "channelId", "peer", "nSteps", "chunkSize", "isSend"]


def members(version: int) -> dict[str, list[str]]:
    """NCCL type -> members whose layout the C4 plugin (or its driver) relies on, for one version."""
    out = {f"ncclProfiler_v{version}_t": TABLE}
    if version < 4:
        return out
    extra = ["parentGroup"] if version >= 5 else []
    out[f"ncclProfilerEventDescr_v{version}_t"] = [
        "type",
        "parentObj",
        "rank",
        *(f"coll.{m}" for m in COLL + extra),
        *(f"p2p.{m}" for m in P2P + extra),
        *(f"proxyOp.{m}" for m in PROXY_OP),
        "proxyStep.step",
    ]
    out[f"ncclProfilerEventStateArgs_v{version}_t"] = ["proxyStep.transSize"]
    return out


ENUMS = [
    "ncclProfileGroup",
    "ncclProfileColl",
    "ncclProfileP2p",
    "ncclProfileProxyOp",
    "ncclProfileProxyStep",
    "ncclProfileProxyCtrl",
    "ncclProfileKernelCh",
    "ncclProfileNetPlugin",
    "ncclProfilerProxyStepSendGPUWait",
    "ncclProfilerProxyStepSendWait",
    "ncclProfilerProxyStepRecvWait",
    "ncclProfilerProxyStepRecvFlushWait",
    "ncclProfilerProxyStepRecvGPUWait",
    "ncclProfilerProxyOpInProgress_v4",
    "ncclProfilerProxyStepSendPeerWait_v4",
    "ncclProfilerKernelChStop",
]


def header_dir(git: Path, tag: str) -> str:
    """Where the example plugin keeps NCCL's headers at this tag."""
    names = subprocess.run(
        ["git", "-C", str(git), "ls-tree", "-r", "--name-only", tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return next(n for n in names if n.endswith("profiler/example/nccl/profiler.h")).rsplit("/", 1)[0]


def probe(git: Path, tag: str, version: int) -> tuple[str, dict]:
    """Compile a probe against the tag's headers; returns (header dir, facts)."""
    src_dir = header_dir(git, tag)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        names = subprocess.run(
            ["git", "-C", str(git), "ls-tree", "--name-only", f"{tag}:{src_dir}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for n in names:
            blob = subprocess.run(
                ["git", "-C", str(git), "show", f"{tag}:{src_dir}/{n}"], capture_output=True
            )
            (out / n).write_bytes(blob.stdout)
        lines = [
            "#include <stdbool.h>",
            "#include <stddef.h>",
            "#include <stdio.h>",
            "#include <sys/types.h>",
            '#include "err.h"' if "err.h" in names else "typedef int ncclResult_t;",
            '#include "profiler.h"',
            "int main(void) {",
        ]
        for typ, mems in members(version).items():
            lines.append(f'  printf("S {typ} %zu\\n", sizeof({typ}));')
            for m in mems:
                lines.append(
                    f'  printf("M {typ} {m} %zu %zu\\n", offsetof({typ}, {m}), sizeof((({typ}*)0)->{m}));'
                )
        for e in ENUMS if version >= 4 else []:
            lines.append(f'  printf("E {e} %d\\n", (int)({e}));')
        lines += ["  return 0;", "}"]
        (out / "probe.c").write_text("\n".join(lines) + "\n")
        cc = subprocess.run(
            ["cc", "-std=gnu11", "-w", "-I", str(out), "-o", str(out / "probe"), str(out / "probe.c")],
            capture_output=True,
            text=True,
        )
        if cc.returncode:
            raise SystemExit(f"{tag}: {cc.stderr}")
        text = subprocess.run([str(out / "probe")], capture_output=True, text=True, check=True).stdout
    facts: dict = {"sizeof": {}, "members": {}, "enums": {}}
    for line in text.splitlines():
        kind, *rest = line.split()
        if kind == "S":
            facts["sizeof"][rest[0]] = int(rest[1])
        elif kind == "M":
            facts["members"].setdefault(rest[0], {})[rest[1]] = {"offset": int(rest[2]), "size": int(rest[3])}
        else:
            facts["enums"][rest[0]] = int(rest[1])
    return src_dir, facts


def main(git: Path) -> None:
    """Print facts.json for every API version."""
    doc: dict = {
        "about": "Layout facts of NCCL's profiler plugin ABI, measured by compiling NCCL's own headers "
        "(the example plugin's nccl/ directory) at each tag; generated by generate_facts.py.",
        "abi": f"{platform.machine()} LP64, system C compiler",
        "license": "facts measured from NVIDIA NCCL headers (NCCL LICENSE.txt: BSD-3-Clause, Apache-2.0 from 2.29)",
        "versions": {},
    }
    for version, tags in TAGS.items():
        seen = None
        for tag in tags:
            src_dir, facts = probe(git, tag, version)
            if seen is not None and facts != seen[1]:
                raise SystemExit(f"v{version}: {tag} differs from {seen[0]}")
            seen = seen or (f"{tag}:{src_dir}/profiler_v{version}.h", facts)
        doc["versions"][f"v{version}"] = {"source": seen[0], "verified_tags": tags, **seen[1]}
    json.dump(doc, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
