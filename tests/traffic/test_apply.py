"""c4 plan --apply-as: every format written for small fabrics and read back; the planned host order under ECMP."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from c4.bench.plan import rank_order_row
from c4.cli import main
from c4.traffic.apply.launchers import kueue_topology
from c4.traffic.apply.nccl_env import qps_per_connection
from c4.traffic.apply.order import home_leaf, planned_order
from c4.traffic.apply.writer import FORMATS, ApplyError, parse_formats, write_apply
from c4.traffic.collectives import Job, job_flows
from c4.traffic.generators import fat_tree, leaf_spine, rail_optimized
from c4.traffic.planner import Planner
from c4.traffic.routing import capacities, ecmp_subflows, loads_from_subflows, lower_bound, max_utilization

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def small(max_qps=4, shuffle_seed=3, topo=None, hosts=16):
    """A 16-host, 4-leaf, 5-spine fabric with one shuffled ring job, planned."""
    topo = topo or leaf_spine(16, 4, 5, nics_per_host=1)  # 5 spines: some connections get 2 pieces
    job = Job(
        "ring-a", [f"host{i}" for i in range(hosts)], shuffle_seed=shuffle_seed, channels=2, gpus_per_host=4
    )
    plan = Planner(topo, max_qps=max_qps).plan(job_flows(job, topo))
    return topo, job, plan


def write(tmp_path, formats, **kw):
    topo, job, plan = small(**kw.pop("plan_kw", {}))
    paths = write_apply(parse_formats(formats), tmp_path, plan, "plan-t", [job], **kw)
    return topo, job, plan, {p.name: p for p in paths}


def test_planned_order_keeps_leaf_groups_together():
    topo = leaf_spine(16, 4, 4, nics_per_host=1)
    hosts = [f"host{i}" for i in range(16)]
    random.Random(5).shuffle(hosts)
    order = planned_order(topo, hosts)
    assert sorted(order) == sorted(hosts)
    leaves = [home_leaf(topo, h) for h in order]
    # each leaf appears as one contiguous run: the ring crosses leaves only len(leaves) times
    runs = [lf for i, lf in enumerate(leaves) if i == 0 or leaves[i - 1] != lf]
    assert len(runs) == len(set(leaves)) == 4


def test_planned_order_by_nic0_keeps_every_rail_and_plane_grouped():
    # grouping by NIC 0's leaf also keeps each other rail's and plane's leaves contiguous
    topo = rail_optimized(hosts=16, groups=2, spines=8, rails=4, ports_per_nic=2, dual_plane=True)
    hosts = list(topo.hosts)
    random.Random(2).shuffle(hosts)
    order = planned_order(topo, hosts)
    for nic in range(4):
        for port in range(2):
            leaves = [topo.port(h, nic, port).leaf for h in order]
            runs = [lf for i, lf in enumerate(leaves) if i == 0 or leaves[i - 1] != lf]
            assert len(runs) == len(set(leaves)) == 2, (nic, port)


def test_planned_order_chains_leaves_of_one_pod_in_a_fat_tree():
    topo = fat_tree(pods=2, leaves_per_pod=2, aggs_per_pod=2, cores=2, hosts_per_leaf=2)
    hosts = list(topo.hosts)[::-1]
    pods = [topo.pod_of[home_leaf(topo, h)] for h in planned_order(topo, hosts)]
    assert pods == sorted(pods)  # a pod's leaves are consecutive, so neighbours share aggregation switches


def test_hostfile_parses_with_slots(tmp_path):
    topo, job, _, files = write(tmp_path, ["hostfile"])
    lines = files["ring-a.hostfile"].read_text().splitlines()
    parsed = [re.fullmatch(r"(\S+) slots=(\d+)", ln).groups() for ln in lines]
    assert [h for h, _ in parsed] == planned_order(topo, job.hosts)
    assert {int(s) for _, s in parsed} == {job.gpus_per_host}


def test_slurm_topology_yaml_matches_the_fabric(tmp_path):
    topo, job, _, files = write(tmp_path, ["slurm"])
    topos = yaml.safe_load(files["topology.yaml"].read_text())
    assert [t["topology"] for t in topos] == ["c4-tree", "c4-block"]
    assert [t["cluster_default"] for t in topos] == [True, False]
    switches = {s["switch"]: s for s in topos[0]["tree"]["switches"]}
    by_leaf = {leaf: sorted(s["nodes"].split(",")) for leaf, s in switches.items() if "nodes" in s}
    want: dict[str, list[str]] = {}
    for h in topo.hosts:
        want.setdefault(home_leaf(topo, h), []).append(h)
    assert by_leaf == {k: sorted(v) for k, v in want.items()}
    for s in switches.values():
        for child in s.get("children", "").split(",") if "children" in s else []:
            assert child in switches  # children name declared switches
    blocks = topos[1]["block"]
    assert {b["block"]: sorted(b["nodes"].split(",")) for b in blocks["blocks"]} == by_leaf
    assert all(len(b["nodes"].split(",")) >= blocks["block_sizes"][0] for b in blocks["blocks"])
    # the srun side: the arbitrary distribution reads one task per line in rank order
    tasks = files["ring-a.slurm-hostfile"].read_text().split()
    order = planned_order(topo, job.hosts)
    assert tasks == [h for h in order for _ in range(job.gpus_per_host)]
    script = files["ring-a.srun.sh"].read_text()
    assert "--distribution=arbitrary" in script and f"--nodelist={','.join(order)} " in script


def test_slurm_tree_of_a_fat_tree_has_pods_under_a_core(tmp_path):
    topo, job, plan = small(
        topo=fat_tree(pods=2, leaves_per_pod=2, aggs_per_pod=2, cores=2, hosts_per_leaf=2), hosts=8
    )
    (path,) = write_apply(["slurm"], tmp_path, plan, "p", [])
    switches = {s["switch"]: s for s in yaml.safe_load(path.read_text())[0]["tree"]["switches"]}
    assert set(switches["core"]["children"].split(",")) == {"pod0", "pod1"}
    assert set(switches["pod0"]["children"].split(",")) == {lf for lf in topo.leaves if topo.pod_of[lf] == 0}


def test_torchrun_node_ranks_follow_the_order(tmp_path):
    topo, job, _, files = write(tmp_path, ["torchrun"])
    ranks = dict(
        re.findall(r"^(\S+): torchrun .*--node_rank=(\d+)", files["ring-a.torchrun.txt"].read_text(), re.M)
    )
    order = planned_order(topo, job.hosts)
    assert {h: int(r) for h, r in ranks.items()} == {h: i for i, h in enumerate(order)}


def test_k8s_labels_and_kueue_topology(tmp_path):
    topo, _, _, files = write(tmp_path, ["k8s"])
    labels = {}
    for ln in files["k8s-labels.sh"].read_text().splitlines():
        m = re.fullmatch(r"kubectl label node (\S+) (\S+)=(\S+) --overwrite", ln)
        if m:
            labels[m[1]] = (m[2], m[3])
    assert labels == {h: ("fabric.topograph.run/tier-0", home_leaf(topo, h)) for h in topo.hosts}
    kt = yaml.safe_load(files["kueue-topology.yaml"].read_text())
    assert kt["kind"] == "Topology" and kt["apiVersion"] == "kueue.x-k8s.io/v1alpha1"
    assert [lv["nodeLabel"] for lv in kt["spec"]["levels"]] == [
        "fabric.topograph.run/tier-0",
        "kubernetes.io/hostname",
    ]


def env_lines(text):
    """(var, value, comment above) per export line."""
    lines = text.splitlines()
    out = {}
    for i, ln in enumerate(lines):
        m = re.fullmatch(r"export (NCCL_\w+)=(\S+)", ln)
        if m:
            assert lines[i - 1].startswith("# "), ln  # every setting says its expected effect
            out[m[1]] = m[2]
    return out


@pytest.mark.parametrize("ar, want", [(None, None), (True, "1"), (False, "0")])
def test_nccl_env_file(tmp_path, ar, want):
    # 5 spines: the shuffled ring's cross-leaf connections need two pieces to reach the bound
    topo = leaf_spine(16, 4, 5, nics_per_host=1)
    _, _, plan, files = write(tmp_path, ["nccl-env"], adaptive_routing=ar, plan_kw={"topo": topo})
    env = env_lines(files["nccl.env"].read_text())
    qps = max(Counter(p.flow for p in plan.pieces).values())
    assert qps > 1
    assert env["NCCL_IB_QPS_PER_CONNECTION"] == str(qps) == str(qps_per_connection(plan))
    assert env["NCCL_IB_SPLIT_DATA_ON_QPS"] == "1"
    assert env.get("NCCL_IB_ADAPTIVE_ROUTING") == want


def test_nccl_env_one_qp_does_not_split(tmp_path):
    _, _, plan, files = write(tmp_path, ["nccl-env"], plan_kw={"max_qps": 1})
    env = env_lines(files["nccl.env"].read_text())
    assert env == {"NCCL_IB_QPS_PER_CONNECTION": "1", "NCCL_IB_SPLIT_DATA_ON_QPS": "0"}


def test_sport_table_rows_are_the_plan_pieces(tmp_path):
    _, _, plan, files = write(tmp_path, ["sport-table"])
    rows = [json.loads(ln) for ln in files["sport-table.jsonl"].read_text().splitlines()]
    assert len(rows) == len(plan.pieces) and any(p.qp > 0 for p in plan.pieces)
    for r, p in zip(rows, plan.pieces, strict=True):
        assert (r["src_host"], r["dst_host"], r["channel"], r["qp"], r["udp_sport"]) == (
            p.src,
            p.dst,
            p.channel,
            p.qp,
            p.sport,
        )
        assert r["src_ip"] == p.src_port.ip and r["dst_ip"] == p.dst_port.ip
        assert r["path"] == p.nodes[1:-1] and 1 <= r["udp_sport"] <= 65535
        assert r["src_dev"] == f"nic{p.src_port.nic}" and r["src_port"] == p.src_port.port


def test_switch_routes_walk_the_planned_paths(tmp_path):
    _, _, plan, files = write(tmp_path, ["switch-routes"])
    doc = json.loads(files["switch-routes.json"].read_text())
    assert doc["format"] == "c4-switch-routes/1" and doc["conflicts"] == []
    table = {
        sw: {tuple(r["match"].values()): r["egress"] for r in rules} for sw, rules in doc["switches"].items()
    }
    for p in plan.pieces:
        key = (p.src_port.ip, p.dst_port.ip, 17, p.sport, 4791)
        hops, cur = [p.src_port.name], p.nodes[1]
        for _ in range(len(p.nodes)):  # follow the rules switch by switch from the source leaf
            if cur == p.dst_port.name:
                break
            hops.append(cur)
            cur = table[cur][key]
        assert hops + [cur] == p.nodes


def test_planned_order_lowers_ecmp_max_load():
    # 4 hosts per leaf, uplinks as fast as host links: in leaf order every leaf sends exactly one
    # cross-leaf connection, so no ECMP hash can stack two on one uplink; a random order can
    topo = leaf_spine(16, 4, 4, nics_per_host=1)
    job = Job("j", [f"host{i}" for i in range(16)], channels=1)
    placed = dataclasses.replace(job, hosts=planned_order(topo, job.hosts))
    cap = capacities(topo)
    pf = job_flows(placed, topo)
    bound = lower_bound(topo, pf)
    worse = 0
    for s in range(10):
        rf = job_flows(dataclasses.replace(job, shuffle_seed=100 + s), topo)
        placed_load = max_utilization(loads_from_subflows(len(cap), ecmp_subflows(topo, pf, s)), cap)
        random_load = max_utilization(loads_from_subflows(len(cap), ecmp_subflows(topo, rf, s)), cap)
        assert placed_load == pytest.approx(bound)
        assert placed_load <= random_load * (1 + 1e-12)
        worse += random_load > placed_load * 1.5
    assert worse >= 5


def test_rank_order_bench_row():
    row = rank_order_row(
        lambda: leaf_spine(16, 4, 4, nics_per_host=1),
        lambda shuffle=0: [Job("j", [f"host{i}" for i in range(16)], shuffle_seed=1, channels=1)],
        12,
        "max-min",
    )
    assert row["samples"] == 12 and row["placed_ecmp_over_bound"] == pytest.approx(1.0)
    assert row["random_ecmp_over_bound"] > 1.2 and row["random_completion_over_placed"] > 1.2
    lo, hi = row["random_ecmp_ci"]
    assert lo <= row["random_ecmp_over_bound"] <= hi


def test_parse_formats():
    assert parse_formats(["hostfile,slurm", "slurm", " nccl-env "]) == ["hostfile", "slurm", "nccl-env"]
    assert set(parse_formats([",".join(FORMATS)])) == set(FORMATS)
    with pytest.raises(ApplyError, match="unknown --apply-as format 'mpi'"):
        parse_formats(["hostfile,mpi"])


def plan_cli(tmp_path, *extra):
    return main(
        [
            "plan",
            "--topology",
            str(EXAMPLES / "topology-leaf-spine.yaml"),
            "--job",
            str(EXAMPLES / "job-small.yaml"),
            "--out",
            str(tmp_path / "plan.json"),
            *extra,
        ]
    )


def test_cli_writes_every_format(tmp_path, capsys):
    out = tmp_path / "apply"
    out.mkdir()
    assert plan_cli(tmp_path, "--apply-as", ",".join(FORMATS), "--apply-dir", str(out), "--placed") == 0
    names = {p.name for p in out.iterdir()}
    assert {"topology.yaml", "nccl.env", "sport-table.jsonl", "switch-routes.json", "k8s-labels.sh"} <= names
    plan = json.loads((tmp_path / "plan.json").read_text())
    rows = [json.loads(ln) for ln in (out / "sport-table.jsonl").read_text().splitlines()]
    assert len(rows) == len(plan["pieces"]) and {r["plan_id"] for r in rows} == {plan["plan_id"]}


def test_cli_placed_order_lowers_ecmp(tmp_path):
    ring = str(EXAMPLES / "job-ring.yaml")  # llm-pretrain has shuffle_seed 7: a topology-blind order
    topo = str(EXAMPLES / "topology-leaf-spine.yaml")
    ecmp = {}
    for placed in (False, True):
        out = tmp_path / f"plan-{placed}.json"
        args = ["plan", "--topology", topo, "--job", ring, "--out", str(out)] + (
            ["--placed"] if placed else []
        )
        assert main(args) == 0
        ecmp[placed] = json.loads(out.read_text())["ecmp_over_bound"]
    assert ecmp[True] < ecmp[False]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--apply-as", "hostfile,bogus", "--apply-dir", "."], "unknown --apply-as format 'bogus'"),
        (["--apply-as", "hostfile"], "--apply-as needs --apply-dir"),
        (["--apply-as", "hostfile", "--apply-dir", "/nonexistent/c4-apply"], "not an existing directory"),
    ],
)
def test_cli_bad_format_or_dir_exits_2(tmp_path, capsys, extra, message):
    assert plan_cli(tmp_path, *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "plan.json").exists()  # refused before planning


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "apply"


def keys_by_path(node, path="", out=None):
    """Every mapping key under its path (list indices dropped), e.g. '/tree/switches/switch'."""
    out = set() if out is None else out
    if isinstance(node, dict):
        for k, v in node.items():
            out.add(f"{path}/{k}")
            keys_by_path(v, f"{path}/{k}", out)
    elif isinstance(node, list):
        for v in node:
            keys_by_path(v, path, out)
    return out


def test_slurm_topology_yaml_has_the_shape_of_slurms_own_example(tmp_path):
    real = yaml.safe_load((FIXTURES / "slurm-topology.yaml").read_text())
    topo, _, plan = small()
    (path,) = write_apply(["slurm"], tmp_path, plan, "p", [])
    ours = yaml.safe_load(path.read_text())
    # topology.yaml(5) lists `children` for tree switches; its example only uses `nodes`
    allowed = keys_by_path(real) | {"/tree/switches/children"}
    assert keys_by_path(ours) <= allowed
    for t in ours:  # `topology` first, as the man page requires, and exactly one type
        assert next(iter(t)) == "topology"
        assert len({"tree", "block", "flat"} & set(t)) == 1
    # same value types as the example: node lists are strings, block sizes ints
    assert all(isinstance(b["nodes"], str) for b in ours[1]["block"]["blocks"])
    assert all(isinstance(x, int) for x in ours[1]["block"]["block_sizes"])


def test_kueue_topology_has_the_shape_of_kueues_sample():
    real = next(
        d
        for d in yaml.safe_load_all((FIXTURES / "kueue-sample-queues.yaml").read_text())
        if d["kind"] == "Topology"
    )
    ours = kueue_topology(small()[0])
    assert ours["apiVersion"] == real["apiVersion"] and keys_by_path(ours) == keys_by_path(real)
    assert ours["spec"]["levels"][-1] == real["spec"]["levels"][-1] == {"nodeLabel": "kubernetes.io/hostname"}
