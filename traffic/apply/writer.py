"""``--apply-as``: parse the format list and write each format's files into the apply directory."""

from __future__ import annotations

import json
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
    """A job name usable in a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


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
    files: dict[str, str] = {}
    for job in jobs:
        order = planned_order(topo, job.hosts)
        name, g = _safe(job.name), job.gpus_per_host
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
        path.write_text(text)
        paths.append(path)
    return paths
