"""RoCEv2 packets round trip through pcap and the hash model; topology files; c4 plan on the shipped examples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from c4.catalogue import load
from c4.traffic.collectives import Job, job_flows
from c4.traffic.export import plan_table
from c4.traffic.generators import leaf_spine
from c4.traffic.planner import Planner
from c4.traffic.roce import RETH, IcrcError, pcap_to_qps, plan_to_pcap, probe, replay, write_packets
from c4.traffic.topology import TopologyError, load_yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def small_plan():
    topo = leaf_spine(16, 4, 4, nics_per_host=1)
    flows = job_flows(Job("j", [f"host{i}" for i in range(16)], shuffle_seed=3, channels=1), topo)
    planner = Planner(topo, max_qps=4)
    return topo, planner, planner.plan(flows)


def test_pcap_round_trip_matches_the_plan_per_link(tmp_path):
    topo, planner, plan = small_plan()
    written = plan_to_pcap(plan, tmp_path / "plan.pcap", bytes_per_unit=1 << 18)
    qps = pcap_to_qps(tmp_path / "plan.pcap")
    assert qps == written
    per_link = replay(topo, qps, planner._hasher)
    expected: dict[int, int] = {}
    for i, p in enumerate(plan.pieces):
        for lid in p.links:
            expected[lid] = expected.get(lid, 0) + written[(p.src_port.ip, p.dst_port.ip, p.sport, 0x100 + i)]
    assert per_link == expected


def test_packets_are_rdma_writes_with_reth_and_a_checked_icrc(tmp_path):
    pkts = write_packets("10.0.0.1", "10.0.0.2", 0xC123, 0x42, 10000, mtu=4096)
    assert [p["BTH"].opcode for p in pkts] == [0x06, 0x07, 0x08]
    assert RETH in pkts[0] and pkts[0][RETH].dlen == 10000 and RETH not in pkts[1]
    wrpcap(str(tmp_path / "ok.pcap"), pkts)
    assert pcap_to_qps(tmp_path / "ok.pcap") == {("10.0.0.1", "10.0.0.2", 0xC123, 0x42): 10000}
    raw = bytearray(bytes(rdpcap(str(tmp_path / "ok.pcap"))[1]))
    raw[70] ^= 0xFF  # corrupt one payload byte
    wrpcap(str(tmp_path / "bad.pcap"), [Ether(bytes(raw))])
    with pytest.raises(IcrcError):
        pcap_to_qps(tmp_path / "bad.pcap")
    p = probe("10.0.0.1", "10.0.0.2", 0xC777, ttl=2)
    assert p["UDP"].dport == 4791 and p["IP"].ttl == 2


def test_plan_table_matches_the_catalogue():
    _, _, plan = small_plan()
    t = plan_table(plan, "plan-x", 1.0)
    assert t.schema.equals(load()["plans"].arrow_schema) and t.num_rows == len(plan.pieces)
    assert isinstance(t, pa.Table) and set(t.column("plan_id").to_pylist()) == {"plan-x"}


def test_yaml_errors_name_the_element(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text(
        "generator: leaf_spine\nargs: {hosts: 4, leaves: 2, spines: 2}\nfailures:\n  - {link: [leaf0, spine9]}\n"
    )
    with pytest.raises(TopologyError, match="leaf0->spine9"):
        load_yaml(bad)
    bad.write_text("generator: torus\n")
    with pytest.raises(TopologyError, match="torus"):
        load_yaml(bad)
    with pytest.raises(TopologyError, match="hosts"):
        leaf_spine(0, 2, 2)


@pytest.mark.parametrize("topology", ["topology-leaf-spine.yaml", "topology-fat-tree.yaml"])
def test_c4_plan_on_the_examples(tmp_path, topology):
    out = tmp_path / "plan.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "c4.cli",
            "plan",
            "--topology",
            str(EXAMPLES / topology),
            "--job",
            str(EXAMPLES / "job-ring.yaml"),
            "--out",
            str(out),
            "--seeds",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "max link load / spraying bound" in proc.stdout
    plan = json.loads(out.read_text())
    assert plan["plan_over_bound"] <= plan["ecmp_over_bound"] + 1e-9
    assert {"src", "dst", "channel", "qp", "udp_sport", "path", "src_ip", "lag_port"} <= set(
        plan["pieces"][0]
    )


def c4_plan(topology: Path, out: Path, collector: str, *extra: str) -> subprocess.CompletedProcess:
    """`c4 plan` of the shipped ring jobs on ``topology``, stored in the collector."""
    proc = subprocess.run(
        [sys.executable, "-m", "c4.cli", "plan", "--topology", str(topology)]
        + ["--job", str(EXAMPLES / "job-ring.yaml"), "--out", str(out), "--seeds", "2"]
        + ["--collector", collector, *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_c4_plan_stores_the_plan_and_its_run_in_the_collector(tmp_path):
    from testkit.procs import CollectorProc

    from c4.query import query_arrow

    degraded = tmp_path / "degraded.yaml"  # the shipped fabric with a spine link down
    degraded.write_text(
        (EXAMPLES / "topology-leaf-spine.yaml").read_text()
        + "failures:\n  - {link: [leaf0, spine3], state: down}\n"
    )
    (tmp_path / "apply").mkdir()
    col = CollectorProc(tmp_path).start()
    try:
        c4_plan(EXAMPLES / "topology-leaf-spine.yaml", tmp_path / "p1.json", col.address)
        second = c4_plan(
            degraded,
            tmp_path / "p2.json",
            col.address,
            "--apply-as",
            "hostfile",
            "--apply-dir",
            str(tmp_path / "apply"),
        )
        first, again = (json.loads((tmp_path / f"p{i}.json").read_text()) for i in (1, 2))
        t, _ = query_arrow(
            col.address, "SELECT plan_id, count(*) AS n FROM plans GROUP BY plan_id ORDER BY n"
        )
        assert sorted(r["n"] for r in t.to_pylist()) == sorted([len(first["pieces"]), len(again["pieces"])])
        t, _ = query_arrow(col.address, "SELECT * FROM plan_history")
        runs = t.to_pylist()
    finally:
        col.stop()
    assert [r["plan_id"] for r in runs] == [first["plan_id"], again["plan_id"]]  # in the order they were made
    assert {r["job"] for r in runs} == {"llm-pretrain+finetune"}  # the YAML's two jobs, planned together
    one, two = runs
    assert (one["reason"], one["previous_plan_id"], one["moved_pieces"]) == ("initial", "", 0)
    assert (two["reason"], two["previous_plan_id"]) == ("manual", first["plan_id"])
    # the pieces that crossed leaf0->spine3 moved (or were split), nothing else had to
    assert 0 < two["moved_pieces"] < len(again["pieces"])
    assert f"replacing {first['plan_id']} ({two['moved_pieces']} pieces moved)" in second.stdout
    for run, plan in ((one, first), (two, again)):
        assert run["pieces"] == len(plan["pieces"])
        assert run["connections"] == len({(p["src"], p["dst"], p["channel"]) for p in plan["pieces"]})
        assert run["max_load_over_bound"] == pytest.approx(plan["plan_over_bound"])
        assert run["ecmp_over_bound"] == pytest.approx(plan["ecmp_over_bound"])  # the same 2 hash seeds
        assert run["completion_s"] >= run["bound_s"] * (1 - 1e-9) > 0  # nothing beats the spraying bound
    assert one["applied"] == "" and two["applied"] == f"hostfile:{tmp_path / 'apply'}"
    assert (one["fault_id"], one["link"], two["fault_id"]) == ("", "", "")
