"""``--apply-as``: parse the format list and write each format's files into the apply directory."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml

from c4.traffic.apply import launchers
from c4.traffic.apply.nccl_env import nccl_env_file
from c4.traffic.apply.order import planned_order
from c4.traffic.apply.sports import sport_rows, switch_routes
from c4.traffic.collectives import Job
from c4.traffic.planner import Plan

#: every format --apply-as accepts
FORMATS = ("hostfile", "slurm", "torchrun", "k8s", "nccl-env", "sport-table", "switch-routes")


class ApplyError(ValueError):
    """A bad --apply-as format or apply directory; the message says which."""


def parse_formats(values: list[str]) -> list[str]:
    """Formats from repeated and/or comma-separated --apply-as values, in first-seen order; unknown ones raise."""
    out: list[str] = []
    for v in values:
        for f in (x.strip() for x in v.split(",")):
            if not f:
                continue
            if f not in FORMATS:
                raise ApplyError(f"unknown --apply-as format {f!r}; choose from {', '.join(FORMATS)}")
            if f not in out:
                out.append(f)
    return out


def _safe(name: str) -> str:
    """A job name usable in a file name: other characters become '_', and it never starts with '.' or '-'."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
    return "_" + safe[1:] if safe.startswith((".", "-")) else safe


def file_stems(jobs: list[Job]) -> dict[str, str]:
    """Job name -> the stem of its files; ApplyError when two jobs' cleaned names collide."""
    stems: dict[str, str] = {}
    for job in jobs:
        stem = _safe(job.name)
        other = next((n for n, s in stems.items() if s == stem), None)
        if other is not None:
            raise ApplyError(
                f"jobs {other!r} and {job.name!r} would both write files named {stem}.*; rename one"
            )
        stems[job.name] = stem
    return stems


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Write text through a temp file in the same dir and os.replace it: a planted symlink is replaced, not followed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".c4-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_apply(
    formats: list[str],
    out_dir: str | Path,
    plan: Plan,
    plan_id: str,
    jobs: list[Job],
    adaptive_routing: bool | None = None,
) -> list[Path]:
    """Write the files of every format into out_dir (which must exist); returns the paths written."""
    d = Path(out_dir)
    if not d.is_dir():
        raise ApplyError(f"--apply-dir {out_dir}: not an existing directory")
    topo = plan.topo
    stems = file_stems(jobs)
    files: dict[str, str] = {}
    for job in jobs:
        order = planned_order(topo, job.hosts)
        name, g = stems[job.name], job.gpus_per_host
        if "hostfile" in formats:
            files[f"{name}.hostfile"] = launchers.hostfile(topo, order, g)
        if "slurm" in formats:
            files[f"{name}.slurm-hostfile"] = launchers.slurm_hostfile(order, g)
            files[f"{name}.srun.sh"] = launchers.slurm_script(job.name, order, g, f"{name}.slurm-hostfile")
        if "torchrun" in formats:
            files[f"{name}.torchrun.txt"] = launchers.torchrun_env(job.name, order, g)
    if "slurm" in formats:
        files["topology.yaml"] = launchers.slurm_topology_yaml(topo)
    if "k8s" in formats:
        files["k8s-labels.sh"] = launchers.k8s_script(topo)
        files["kueue-topology.yaml"] = yaml.safe_dump(launchers.kueue_topology(topo), sort_keys=False)
    if "nccl-env" in formats:
        files["nccl.env"] = nccl_env_file(plan, adaptive_routing)
    if "sport-table" in formats:
        files["sport-table.jsonl"] = "".join(json.dumps(r) + "\n" for r in sport_rows(plan, plan_id))
    if "switch-routes" in formats:
        files["switch-routes.json"] = json.dumps(switch_routes(plan, plan_id), indent=1) + "\n"
    paths = []
    for fname, text in files.items():
        path = d / fname
        try:
            write_file(path, text, 0o755 if fname.endswith(".sh") else 0o644)
        except OSError as exc:
            raise ApplyError(f"--apply-dir {out_dir}: cannot write {fname}: {exc.strerror or exc}") from None
        paths.append(path)
    return paths
