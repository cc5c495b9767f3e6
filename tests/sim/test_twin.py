"""Digital twin: each fault leaves its signature in what the unchanged samplers read; negatives leave none."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from testkit.twin import run_twin

from c4.sim.runner import SimRunner
from c4.sim.twin import FAULT_KINDS, ClusterTwin, Fault, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "scenarios"


def test_every_fault_kind_has_a_scenario_file():
    kinds = {f.kind for p in SCENARIOS.glob("*.yaml") for f in load_scenario(p)["faults"]}
    assert kinds == set(FAULT_KINDS)


def test_nic_degraded_rate_and_retransmits(tmp_path):
    twin, rows = run_twin(tmp_path, [Fault("nic_degraded", at_s=10, node="host1", nic=2, factor=0.5)])
    port = [r for r in rows["ib_port_samples"] if r["node"] == "host1" and r["device"] == "mlx5_2"]
    assert port[0]["rate_bps"] == 400e9 and port[-1]["rate_bps"] == 200e9
    assert port[-1]["roce_adp_retrans"] > port[0]["roce_adp_retrans"]
    assert any(e["kind"] == "rate" and e["device"] == "mlx5_2" for e in rows["nic_events"])
    other = [r for r in rows["ib_port_samples"] if r["node"] == "host0" and r["device"] == "mlx5_2"]
    assert other[-1]["rate_bps"] == 400e9 and not other[-1]["roce_adp_retrans"]
    # collectives slow down for everyone once the port is degraded
    ex = {}
    for r in rows["nccl_collectives"]:
        ex.setdefault(r["coll_sn"], []).append(r["exec_time_us"])
    early = sum(ex[1]) / len(ex[1])
    late = sum(ex[max(ex)]) / len(ex[max(ex)])
    assert late > early * 1.2


def test_link_flap_counts_downs_and_carrier_changes(tmp_path):
    _, rows = run_twin(tmp_path, [Fault("link_flap", at_s=5, duration_s=20, node="host0", nic=1)], steps=25)
    port = [r for r in rows["ib_port_samples"] if r["node"] == "host0" and r["device"] == "mlx5_1"]
    assert port[-1]["link_downed"] >= 3
    nd = [r for r in rows["netdev_samples"] if r["node"] == "host0" and r["netdev"] == "ens1np0"]
    assert nd[-1]["carrier_changes"] > nd[0]["carrier_changes"] + 3
    assert sum(1 for e in rows["nic_events"] if e["kind"] == "link_state" and e["device"] == "mlx5_1") >= 3


def test_xids_via_nvml_and_kernel_log(tmp_path):
    _, rows = run_twin(
        tmp_path,
        [
            Fault("xid", at_s=5, node="host2", gpu=1, xid=48),
            Fault("xid", at_s=8, node="host3", gpu=5, xid=79),
        ],
    )
    ev = rows["gpu_events"]
    assert {(e["source"], e["xid"], e["node"]) for e in ev if e["kind"] == "xid"} >= {
        ("nvml", 48, "host2"),
        ("kmsg", 48, "host2"),
        ("kmsg", 79, "host3"),
    }
    assert any(e["kind"] == "gpu_lost" and e["node"] == "host3" and e["gpu_index"] == 5 for e in ev)


def test_rank_hang_stalls_every_rank_at_one_sequence(tmp_path):
    _, rows = run_twin(tmp_path, [Fault("rank_hang", at_s=10, node="host1", gpu=4)], steps=30)
    last = {}
    for r in rows["nccl_collectives"]:
        last[r["rank"]] = max(last.get(r["rank"], -1), r["coll_sn"])
    assert len(set(last.values())) == 1  # everyone stopped after the same collective
    assert max(last.values()) < 20


def test_throttle_pcie_remap_signatures(tmp_path):
    _, rows = run_twin(
        tmp_path,
        [
            Fault("thermal_throttle", at_s=5, node="host0", gpu=3, factor=0.3),
            Fault("pcie_downtrain", at_s=5, node="host1", gpu=2),
            Fault("row_remap_failure", at_s=5, node="host2", gpu=6),
        ],
        steps=12,
    )
    g = {(r["node"], r["gpu_index"]): r for r in rows["gpu_samples"]}
    assert g[("host0", 3)]["clocks_event_reasons"] & 0x40 and g[("host0", 3)]["temp_gpu_c"] > 85
    assert g[("host0", 2)]["clocks_event_reasons"] == 0
    assert g[("host1", 2)]["pcie_gen_cur"] < g[("host1", 2)]["pcie_gen_max"]
    assert g[("host2", 6)]["remapped_rows_failure"] == 1


@pytest.mark.parametrize("kind", ["uniform_slowdown", "transient_slowdown", "job_restart"])
def test_negative_scenarios_show_no_hardware_signature(tmp_path, kind):
    _, rows = run_twin(tmp_path, [Fault(kind, at_s=5, duration_s=4, node="host1", factor=0.3)], steps=15)
    assert not rows.get("gpu_events") and not rows.get("nic_events")
    assert {r["rate_bps"] for r in rows["ib_port_samples"]} == {400e9}
    assert all(r["clocks_event_reasons"] == 0 for r in rows["gpu_samples"])


def test_same_seed_same_data(tmp_path):
    def digest(d: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix in (".log", ".jsonl", ".json"):
                h.update(p.relative_to(d).as_posix().encode() + p.read_bytes())
        return h.hexdigest()

    faults = [Fault("nic_degraded", at_s=5, node="host1", nic=2)]
    for sub in ("a", "b"):
        twin = ClusterTwin(nodes=4, leaves=2, spines=2, seed=7, faults=list(faults))
        runner = SimRunner(tmp_path / sub, twin, "t", epoch_s=1_800_000_000.0)
        for _ in range(10):
            runner.step()
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    twin = ClusterTwin(nodes=4, leaves=2, spines=2, seed=8, faults=list(faults))
    runner = SimRunner(tmp_path / "c", twin, "t", epoch_s=1_800_000_000.0)
    for _ in range(10):
        runner.step()
    assert digest(tmp_path / "c") != digest(tmp_path / "a")


def test_link_down_and_spine_degraded_and_congestion(tmp_path):
    _, rows = run_twin(tmp_path / "down", [Fault("link_down", at_s=5, node="host2", nic=6)], steps=12)
    port = [r for r in rows["ib_port_samples"] if r["node"] == "host2" and r["device"] == "mlx5_6"]
    assert port[-1]["state"] == "DOWN" and port[-1]["link_downed"] == 1
    last = {}
    for r in rows["nccl_collectives"]:
        last[r["rank"]] = max(last.get(r["rank"], -1), r["coll_sn"])
    assert len(set(last.values())) == 1 and max(last.values()) < 8  # the ring waits on the dead link

    twin, rows = run_twin(tmp_path / "spine", [Fault("spine_link_degraded", at_s=5, factor=0.25)], steps=12)
    assert twin.topo.link(twin.topo.leaves[0], twin.topo.spines[0]).state == "degraded"
    assert {r["rate_bps"] for r in rows["ib_port_samples"]} == {400e9}  # no host port changed

    _, rows = run_twin(tmp_path / "cong", [Fault("ecmp_congestion", at_s=5, factor=0.7)], steps=12)
    cnp = [r for r in rows["ib_port_samples"] if r["np_cnp_sent"]]
    assert cnp, "congestion must show as CNPs/ECN marks"
    assert all(not r["roce_adp_retrans"] and r["link_downed"] == 0 for r in rows["ib_port_samples"])
    assert not rows.get("nic_events") and not rows.get("gpu_events")


def test_xid74_comes_with_nvlink_errors_and_95_94_reach_the_log(tmp_path):
    _, rows = run_twin(
        tmp_path,
        [
            Fault("xid", at_s=3, node="host1", gpu=0, xid=74),
            Fault("xid", at_s=3, node="host2", gpu=2, xid=94),
            Fault("xid", at_s=3, node="host2", gpu=3, xid=95),
        ],
        steps=10,
    )
    xids = {(e["node"], e["xid"], e["action"]) for e in rows["gpu_events"] if e["kind"] == "xid"}
    assert {("host1", 74, "check_link"), ("host2", 94, "restart_job"), ("host2", 95, "reset_gpu")} <= xids
    links = [
        r for r in rows["nvlink_samples"] if r["node"] == "host1" and r["gpu_index"] == 0 and r["link"] == 0
    ]
    assert links[-1]["link_crc_errors"] > 0 and links[0]["link_crc_errors"] == 0  # H100: field 163
    healthy = [r for r in rows["nvlink_samples"] if r["node"] == "host0"]
    assert all(r["link_crc_errors"] == 0 for r in healthy)


def test_comm_hang_one_connection_stalls_while_all_ranks_wait(tmp_path):
    _, rows = run_twin(tmp_path, [Fault("comm_hang", at_s=5, node="host3", nic=1)], steps=12)
    conns = rows["nccl_connections"]
    late = [c for c in conns if c["ts"] >= max(c2["ts"] for c2 in conns)]
    stalled = [c for c in late if c["node"] == "host3" and c["nic_device"] == "mlx5_1"]
    assert stalled and all(c["bytes"] == 0 for c in stalled)
    assert any(c["bytes"] > 0 for c in late if c["node"] != "host3")
    assert all(c["wait_peer_us"] > 0 for c in late)


def test_job_restart_starts_sequence_numbers_again(tmp_path):
    _, rows = run_twin(tmp_path, [Fault("job_restart", at_s=6)], steps=14)
    seqs = [r["coll_sn"] for r in rows["nccl_collectives"] if r["rank"] == 0]
    assert seqs != sorted(seqs) and seqs.count(0) == 2  # 0, 1, ... then 0 again


def test_pipeline_stages_have_their_own_groups_and_p2p(tmp_path):
    twin = ClusterTwin(nodes=4, leaves=2, spines=2, seed=1, pp=2)
    assert twin.stages == [["host0", "host1"], ["host2", "host3"]]
    pp = [f for f in twin.flows if f.job == "pp"]
    assert {(f.src, f.dst) for f in pp} == {
        ("host0", "host2"),
        ("host2", "host0"),
        ("host1", "host3"),
        ("host3", "host1"),
    }
    t2 = ClusterTwin(nodes=4, leaves=2, spines=2, seed=1, pp=2)
    runner = SimRunner(tmp_path / "pp", t2, "pp", epoch_s=1_800_000_000.0)
    from c4.agent.nccl_inspector import InspectorSampler

    for _ in range(4):
        runner.step()
    s = InspectorSampler(runner.writers["host0"].root / "inspector")
    s.probe()
    recs = s.sample(0)["nccl_collectives"]
    colls = [r for r in recs if r["kind"] == "coll"]
    p2p = [r for r in recs if r["kind"] == "p2p"]
    assert {r["n_ranks"] for r in colls} == {16} and {r["comm_id"] for r in colls} == {"0x7c4c4c4c00000001"}
    assert p2p and all(r["peer"] >= 16 for r in p2p)  # host0 (stage 0) sends to stage 1 ranks
    with pytest.raises(ValueError, match="pp=3"):
        ClusterTwin(nodes=4, pp=3)


#: Scenarios of the single-job twin (those with ``jobs:`` run on JobsTwin: tests/sim/test_jobs_twin.py).
SINGLE_JOB = [p for p in sorted(SCENARIOS.glob("*.yaml")) if not load_scenario(p).get("jobs")]


@pytest.mark.parametrize("path", SINGLE_JOB, ids=lambda p: p.stem)
def test_every_shipped_scenario_runs(path):
    spec = load_scenario(path)
    cluster = {**spec.get("cluster", {}), "nodes": 8, "leaves": 2, "spines": 2}
    cluster["pp"] = 2 if cluster.get("pp", 1) > 1 else 1
    faults = [f for f in spec["faults"] if not f.node or int(f.node[4:]) < 8]
    for f in faults:
        f.at_s = min(f.at_s, 3)
    twin = ClusterTwin(**cluster, faults=faults)
    truth = twin.ground_truth()
    assert len(truth) == len(faults) and all(t["expected_class"] for t in truth)
    outs = [twin.step() for _ in range(8)]
    assert twin.t > 3 and any(o.ranks for o in outs)


def test_inspector_writes_the_default_form_unless_a_scenario_asks_for_verbose(tmp_path):
    """NCCL's default Inspector form (no event trace, no start time) unless cluster: {inspector_verbose: true}."""
    from c4.agent.nccl_inspector import InspectorSampler

    scenario = tmp_path / "verbose.yaml"
    scenario.write_text("cluster: {nodes: 4, leaves: 2, spines: 2, seed: 1, inspector_verbose: true}\n")
    spec = load_scenario(scenario)
    starts = {}
    for verbose, cluster in (
        (False, {k: v for k, v in spec["cluster"].items() if k != "inspector_verbose"}),
        (True, spec["cluster"]),
    ):
        runner = SimRunner(tmp_path / str(verbose), ClusterTwin(**cluster), "s", epoch_s=1_800_000_000.0)
        for _ in range(2):
            runner.step()
        root = runner.writers["host0"].root / "inspector"
        assert ("event_trace_ts" in "".join(p.read_text() for p in root.iterdir())) is verbose
        s = InspectorSampler(root)
        s.probe()
        starts[verbose] = {r["start_ts"] is None for r in s.sample(0)["nccl_collectives"]}
    assert starts == {False: {True}, True: {False}}
