"""Host order out to launchers and schedulers: mpirun hostfile, Slurm, torchrun node ranks, Kubernetes labels."""

from __future__ import annotations

import shlex

import yaml

from c4.traffic.apply.order import home_leaf, leaf_chain
from c4.traffic.topology import Topology

#: node-label keys for the leaf (tier 0) and, in 3 tiers, the pod's aggregation block (tier 1): NVIDIA Topograph
#: v1.0.0's k8s engine label family (docs/engines/k8s.md: tier 0 is the switch closest to the node)
LEAF_LABEL = "fabric.topograph.run/tier-0"
POD_LABEL = "fabric.topograph.run/tier-1"
HOSTNAME_LABEL = "kubernetes.io/hostname"


def comment(text: str) -> str:
    """Text safe inside a one-line ``#`` comment: control characters (newlines too) become '?'."""
    return "".join(c if c.isprintable() else "?" for c in text)


def hostfile(topo: Topology, order: list[str], gpus_per_host: int) -> str:
    """Open MPI hostfile: one host per line in rank order, ``slots=`` the job's GPUs per host."""
    return "".join(f"{h} slots={gpus_per_host}\n" for h in order)


def slurm_hostfile(order: list[str], gpus_per_host: int) -> str:
    """SLURM_HOSTFILE for ``--distribution=arbitrary``: one line per task, tasks in rank order."""
    return "".join(f"{h}\n" for h in order for _ in range(gpus_per_host))


def slurm_script(job: str, order: list[str], gpus_per_host: int, hostfile_name: str) -> str:
    """An srun snippet that pins the planned rank order (arbitrary distribution from SLURM_HOSTFILE)."""
    q = shlex.quote
    return (
        "#!/bin/sh\n"
        f"# job {comment(job)}: ranks in the planned order (c4 plan --apply-as slurm)\n"
        f'export SLURM_HOSTFILE="$(dirname "$0")"/{q(hostfile_name)}\n'
        f"srun {q('--nodelist=' + ','.join(order))} --nodes={len(order)} --ntasks={len(order) * gpus_per_host} "
        f'--distribution=arbitrary "$@"\n'
    )


def _leaf_hosts(topo: Topology) -> dict[str, list[str]]:
    """Every host under its home leaf, leaves in chain order (leaves without hosts left out)."""
    groups: dict[str, list[str]] = {}
    for h in topo.hosts:
        groups.setdefault(home_leaf(topo, h), []).append(h)
    return {leaf: groups[leaf] for leaf in leaf_chain(topo, list(groups))}


def slurm_topology(topo: Topology) -> list[dict]:
    """Slurm topology.yaml (topology.yaml(5)): a tree (leaf switches under pods/the fabric root) and a block topology."""
    groups = _leaf_hosts(topo)
    switches = [{"switch": leaf, "nodes": ",".join(hosts)} for leaf, hosts in groups.items()]
    if topo.tiers == 3:
        pods: dict[int, list[str]] = {}
        for leaf in groups:
            pods.setdefault(topo.pod_of[leaf], []).append(leaf)
        switches += [{"switch": f"pod{p}", "children": ",".join(lv)} for p, lv in sorted(pods.items())]
        switches.append({"switch": "core", "children": ",".join(f"pod{p}" for p in sorted(pods))})
    else:
        switches.append({"switch": "spines", "children": ",".join(groups)})
    blocks = [{"block": leaf, "nodes": ",".join(hosts)} for leaf, hosts in groups.items()]
    base = min(len(h) for h in groups.values())
    return [
        {"topology": "c4-tree", "cluster_default": True, "tree": {"switches": switches}},
        {
            "topology": "c4-block",
            "cluster_default": False,
            "block": {"block_sizes": [base], "blocks": blocks},
        },
    ]


def slurm_topology_yaml(topo: Topology) -> str:
    """slurm_topology as YAML text with a header comment."""
    head = (
        f"# Slurm topology.yaml for fabric {comment(topo.name)} (c4 plan --apply-as slurm); schema: topology.yaml(5).\n"
        "# Leaves group hosts by the leaf of NIC 0; select one with the partition's Topology= option.\n"
    )
    return head + yaml.safe_dump(slurm_topology(topo), sort_keys=False)


def torchrun_ranks(order: list[str]) -> dict[str, int]:
    """torchrun ``--node_rank`` per host: its position in the planned order."""
    return {h: i for i, h in enumerate(order)}


def torchrun_env(job: str, order: list[str], gpus_per_host: int) -> str:
    """A shell file: per host the torchrun flags that give the planned rank order."""
    lines = [
        f"# job {comment(job)}: run on each host with the line for its hostname (c4 plan --apply-as torchrun)"
    ]
    for h, r in torchrun_ranks(order).items():
        lines.append(
            f"{comment(h)}: torchrun --nnodes={len(order)} --nproc_per_node={gpus_per_host} --node_rank={r} "
            f"--master_addr={shlex.quote(order[0])}"
        )
    return "\n".join(lines) + "\n"


def k8s_labels(topo: Topology) -> dict[str, dict[str, str]]:
    """Node labels per host: its leaf, and in 3 tiers its pod (the aggregation block)."""
    out = {}
    for h in topo.hosts:
        leaf = home_leaf(topo, h)
        labels = {LEAF_LABEL: leaf}
        if topo.tiers == 3:
            labels[POD_LABEL] = f"pod{topo.pod_of[leaf]}"
        out[h] = labels
    return out


def k8s_script(topo: Topology) -> str:
    """A ``kubectl label`` script for every host (node name = host name)."""
    lines = [
        "#!/bin/sh",
        f"# fabric {comment(topo.name)}: topology labels for Kueue TAS (c4 plan --apply-as k8s)",
        "set -e",
    ]
    for h, labels in k8s_labels(topo).items():
        kv = " ".join(shlex.quote(f"{k}={v}") for k, v in labels.items())
        lines.append(f"kubectl label node {shlex.quote(h)} {kv} --overwrite")
    return "\n".join(lines) + "\n"


def kueue_topology(topo: Topology) -> dict:
    """A Kueue ``Topology`` object whose levels are the labels k8s_labels sets, down to the hostname."""
    levels = ([POD_LABEL] if topo.tiers == 3 else []) + [LEAF_LABEL, HOSTNAME_LABEL]
    return {
        "apiVersion": "kueue.x-k8s.io/v1alpha1",
        "kind": "Topology",
        "metadata": {"name": f"c4-{topo.name}"},
        "spec": {"levels": [{"nodeLabel": x} for x in levels]},
    }
