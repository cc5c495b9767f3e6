"""Which jobs C4P's closed loop replans: link findings mapped onto the fabric YAML, the jobs whose newest
plan crosses them, and never twice for one fault and link (decided from plan_runs alone)."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pyarrow as pa

from c4.analytics.findings import Finding
from c4.analytics.replan import (
    LinkTrigger,
    Unmapped,
    fault_triggers,
    jobs_to_replan,
    jobs_to_restore,
    newest_plans,
    vanished_triggers,
)
from c4.catalogue import load
from c4.traffic.generators import leaf_spine
from c4.traffic.spec import from_spec

T0 = datetime(2026, 12, 1, 12, 0)
CATALOGUE = load()


def frame(table: str, rows: list[dict]) -> pl.DataFrame:
    """Rows typed as the store holds them."""
    return pl.from_arrow(pa.Table.from_pylist(rows, schema=CATALOGUE[table].arrow_schema))


def fault(detector, ctype, component, evidence, state="open", node="host1"):
    f = Finding(detector, "hardware", ctype, component, node, T0, T0, 0.9, "replace_cable", "s", evidence)
    return f.row(T0 + timedelta(seconds=5), state)


def test_c4d_link_faults_become_triggers_on_the_fabric_yaml():
    topo = leaf_spine(4, 2, 2, nics_per_host=4)
    faults = frame(
        "faults",
        [
            fault("slow_switch_link", "switch_link", "leaf1<->spine0", {"throughput_ratio": 0.3}),
            fault("nic_down", "nic_port", "host2/mlx5_3p1", {"state": "DOWN"}),
            fault("nic_rate", "nic_port", "host0/mlx5_1p1", {"rate_bps": 2e11, "nominal_bps": 4e11}),
            fault("nic_down", "nic_port", "host1/mlx5_0p1", {}, state="resolved"),  # back up
            fault("nic_flap", "nic_port", "host1/mlx5_2p1", {"link_downed_increase": 3}),  # not a state
            fault("slow_switch_link", "switch_link", "leaf7<->spine0", {"throughput_ratio": 0.3}),
            fault("nic_down", "nic_port", "host9/mlx5_0p1", {}),
            fault("slow_switch_link", "switch_link", "leaf0<->spine1", {}),  # no ratio: no rate to plan at
        ],
    )
    unmapped = Unmapped({})
    got = fault_triggers(faults, topo, unmapped)
    assert [(t.reason, t.fault_id, t.link, t.throughput_ratio, t.rate_gbps) for t in got] == [
        ("link_degraded", "slow_switch_link:leaf1<->spine0", "leaf1->spine0", 0.3, None),
        ("link_down", "nic_down:host2/mlx5_3p1", f"host2/nic3p0->{topo.port('host2', 3).leaf}", None, None),
        (
            "link_degraded",
            "nic_rate:host0/mlx5_1p1",
            f"host0/nic1p0->{topo.port('host0', 1).leaf}",
            None,
            200.0,
        ),
    ]
    assert unmapped.counts == {
        "switch_link_not_in_fabric": 1,
        "nic_port_not_in_fabric": 1,
        "switch_link_without_ratio": 1,
    }


def test_a_ports_ifname_is_its_rdma_devices_interface():
    """On a real host the RDMA device (rocep65s0f0) is not NIC n: its interface, as the nic sampler
    stores it beside the device, is the YAML's ifname."""
    topo = from_spec(
        {
            "leaves": ["leaf0", "leaf1"],
            "spines": ["spine0"],
            "hosts": {
                "h0": {
                    "nics": [
                        {"leaf": "leaf0", "ip": "10.0.0.1", "ifname": "ens1f0np0"},
                        {"leaf": "leaf1", "ip": "10.0.1.1", "ifname": "ens2f0np0"},
                    ]
                }
            },
            "links": [["leaf0", "spine0", 400], ["leaf1", "spine0", 400]],
        }
    )
    rows = frame("faults", [fault("nic_down", "nic_port", "h0/rocep65s0f0p1", {})])
    netdevs = {("h0", "rocep65s0f0"): "ens2f0np0"}
    assert [t.link for t in fault_triggers(rows, topo, Unmapped({}), netdevs)] == ["h0/nic1p0->leaf1"]
    unmapped = Unmapped({})
    assert fault_triggers(rows, topo, unmapped) == [] and unmapped.counts == {"nic_port_not_in_fabric": 1}
    topo.hosts["h0"].nics[0][0].ifname = "mlx5_bond_0"  # a YAML may name the RDMA device itself
    got = fault_triggers(
        frame("faults", [fault("nic_down", "nic_port", "h0/mlx5_bond_0p1", {})]), topo, Unmapped({})
    )
    assert [t.link for t in got] == ["h0/nic0p0->leaf0"]


def contradiction(system, port, expected, ts, kind="vanished"):
    return {
        "ts": ts,
        "node": system,
        "job": "",
        "kind": kind,
        "system": system,
        "port": port,
        "expected": expected,
        "seen": "",
        "detail": "d",
    }


def test_vanished_cables_trigger_until_discovery_sees_them_again():
    topo = leaf_spine(4, 2, 2, nics_per_host=1)
    rows = frame(
        "fabric_contradictions",
        [
            contradiction("leaf0", "swp33", "spine1/swp1", T0),
            contradiction("spine0", "swp2", "leaf1/swp33", T0),  # seen from the spine's end
            contradiction("leaf1", "swp34", "spine1/swp2", T0),  # back in the newest pass
            contradiction("leaf0", "swp9", "leaf5/swp1", T0),  # no such cable in the YAML
            contradiction("leaf0", "swp1", "", T0, kind="missing"),
        ],
    )
    unmapped = Unmapped({})
    got = vanished_triggers(rows, {frozenset(("leaf1", "spine1"))}, topo, unmapped)
    assert [(t.reason, t.fault_id, t.link, t.since) for t in got] == [
        ("link_vanished", "", "leaf0->spine1", T0),
        ("link_vanished", "", "leaf1->spine0", T0),
    ]
    assert unmapped.counts == {"vanished_cable_not_in_fabric": 1}


def piece(job, plan_id, path, ts, src_port="host0/nic0p0", dst_port="host2/nic0p0", qp=0):
    return {
        "ts": ts,
        "node": "",
        "job": job,
        "plan_id": plan_id,
        "src": src_port.split("/")[0],
        "dst": dst_port.split("/")[0],
        "channel": 0,
        "qp": qp,
        "src_port": src_port,
        "dst_port": dst_port,
        "src_ip": "10.0.0.1",
        "dst_ip": "10.0.0.3",
        "udp_sport": 49152,
        "lag_port": 0,
        "path": path,
        "share_bytes": 1e9,
        "max_load_over_bound": 1.0,
    }


def run(job, plan_id, reason, fault_id, link, ts):
    return {
        "ts": ts,
        "node": "",
        "job": job,
        "plan_id": plan_id,
        "reason": reason,
        "fault_id": fault_id,
        "link": link,
        "previous_plan_id": "",
        "connections": 1,
        "pieces": 1,
        "moved_pieces": 1,
        "max_load_over_bound": 1.0,
        "ecmp_over_bound": 2.0,
        "bound_s": 1.0,
        "completion_s": 1.0,
        "applied": "",
    }


def test_only_jobs_whose_newest_plan_crosses_the_link_and_once_per_fault():
    plans = frame(
        "plans",
        [
            piece("a", "a1", "leaf0>spine0>leaf1", T0),
            piece("a", "a2", "leaf0>spine1>leaf1", T0 + timedelta(seconds=1)),  # a's newest: spine1
            piece("b", "b1", "leaf1>spine0>leaf0", T0, qp=0),  # b crosses leaf0<->spine0 downwards
            piece("c", "c1", "leaf0", T0, dst_port="host1/nic0p0"),  # c stays under leaf0
            piece("d", "d1", "leaf0>spine10>leaf1", T0),  # spine10 is not spine1
        ],
    )
    assert sorted(set(newest_plans(plans)["plan_id"])) == ["a2", "b1", "c1", "d1"]
    down = LinkTrigger("link_degraded", "slow_switch_link:leaf0<->spine0", "leaf0", "spine0", T0)
    spine1 = LinkTrigger("link_degraded", "slow_switch_link:leaf0<->spine1", "leaf0", "spine1", T0)
    port = LinkTrigger("link_down", "nic_down:host1/mlx5_0p1", "host1/nic0p0", "leaf0", T0)
    empty = frame("plan_runs", [])
    got = jobs_to_replan([down, spine1, port], plans, empty)
    assert [(job, pid, t.fault_id) for job, pid, t in got] == [
        ("a", "a2", spine1.fault_id),
        ("b", "b1", down.fault_id),
        ("c", "c1", port.fault_id),
    ]
    done = frame("plan_runs", [run("b", "b2", "link_degraded", down.fault_id, "leaf0->spine0", T0)])
    assert [job for job, _, _ in jobs_to_replan([down], plans, done)] == []
    other_fault = frame("plan_runs", [run("b", "b2", "link_degraded", "other:x", "leaf0->spine0", T0)])
    assert [job for job, _, _ in jobs_to_replan([down], plans, other_fault)] == ["b"]
    # the fault resolved after that replan and opened again: a new episode, replanned once more
    again = LinkTrigger(**{**down.__dict__, "episode_since": T0 + timedelta(minutes=5)})
    assert [job for job, _, _ in jobs_to_replan([again], plans, done)] == ["b"]
    done_again = frame(
        "plan_runs",
        [run("b", "b3", "link_degraded", down.fault_id, "leaf0->spine0", T0 + timedelta(minutes=6))],
    )
    assert jobs_to_replan([again], plans, done_again) == []


def test_a_vanished_cable_is_replanned_once_per_disappearance():
    plans = frame("plans", [piece("a", "a1", "leaf0>spine0>leaf1", T0)])
    gone = LinkTrigger("link_vanished", "", "leaf0", "spine0", T0 + timedelta(seconds=30))
    before = frame("plan_runs", [run("a", "a0", "link_vanished", "", "leaf0->spine0", T0)])  # an earlier one
    assert [job for job, _, _ in jobs_to_replan([gone], plans, before)] == ["a"]
    after = frame(
        "plan_runs", [run("a", "a2", "link_vanished", "", "leaf0->spine0", T0 + timedelta(seconds=31))]
    )
    assert jobs_to_replan([gone], plans, after) == []


def test_a_job_goes_back_onto_a_link_once_no_finding_holds_it():
    """Replanned off a link, a job is replanned back once that link's finding is gone, once; an operator's
    plan after the replan stands; with two links out, only the one that came back counts."""
    plans = frame("plans", [piece("a", "a2", "leaf0>spine1>leaf1", T0 + timedelta(minutes=1))])
    spine0 = LinkTrigger("link_down", "f0", "leaf0", "spine0", T0)
    spine2 = LinkTrigger("link_degraded", "f2", "leaf0", "spine2", T0)
    off = [
        run("a", "a0", "initial", "", "", T0),
        run("a", "a1", "link_down", "f0", "leaf0->spine0", T0 + timedelta(seconds=10)),
    ]
    assert jobs_to_restore([spine0], plans, frame("plan_runs", off)) == []  # still down
    [(job, pid, t)] = jobs_to_restore([], plans, frame("plan_runs", off))
    assert (job, pid, t.reason, t.fault_id, t.link) == ("a", "a2", "link_restored", "f0", "leaf0->spine0")
    back = off + [run("a", "a2", "link_restored", "f0", "leaf0->spine0", T0 + timedelta(minutes=1))]
    assert jobs_to_restore([], plans, frame("plan_runs", back)) == []  # once
    # down again after going back: a new replan off it, then back again
    again = back + [run("a", "a3", "link_down", "f0", "leaf0->spine0", T0 + timedelta(minutes=2))]
    assert [t.link for _, _, t in jobs_to_restore([], plans, frame("plan_runs", again))] == ["leaf0->spine0"]
    # an operator's plan after the replan stands
    manual = off + [run("a", "a2", "manual", "", "", T0 + timedelta(seconds=20))]
    assert jobs_to_restore([], plans, frame("plan_runs", manual)) == []
    # two links out: spine0 came back while spine2 is still slow, then spine2's fault resolved too; spine2
    # was a cable C4D found slow from its traffic: its fault resolving once the traffic left proves nothing
    two = off + [run("a", "a2", "link_degraded", "f2", "leaf0->spine2", T0 + timedelta(seconds=20))]
    assert [t.link for _, _, t in jobs_to_restore([spine2], plans, frame("plan_runs", two))] == [
        "leaf0->spine0"
    ]
    two_back = two + [run("a", "a3", "link_restored", "f0", "leaf0->spine0", T0 + timedelta(seconds=30))]
    assert jobs_to_restore([spine2], plans, frame("plan_runs", two_back)) == []
    assert jobs_to_restore([], plans, frame("plan_runs", two_back)) == []
    # a host port's rate is read on the node: its fault resolving is enough
    port = off + [run("a", "a2", "link_degraded", "f3", "host0/nic0p0->leaf0", T0 + timedelta(seconds=20))]
    assert [t.link for _, _, t in jobs_to_restore([spine0], plans, frame("plan_runs", port))] == [
        "host0/nic0p0->leaf0"
    ]
    assert jobs_to_restore([], frame("plans", []), frame("plan_runs", off)) == []  # no plans: nothing
