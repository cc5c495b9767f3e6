"""The collector's fabric discovery pass: newest neighbour polls in, fabric_topology and
fabric_contradictions out through the writer thread; stale polls and the fabric YAML."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from c4.catalogue import load
from c4.collector.fabric import FabricDiscovery
from c4.collector.store import PendingBatch, Store
from c4.collector.writer import Writer

CATALOGUE = load()


def neighbor(node: str, itf: str, remote: str, port: str, kind: str, ts: datetime) -> dict:
    return {
        "ts": ts,
        "node": node,
        "job": "",
        "source": "lldpd",
        "local_system": node,
        "interface": itf,
        "system_name": remote,
        "chassis_id": f"mac-{remote}",
        "neighbor_port": port,
        "neighbor_kind": kind,
    }


@pytest.fixture
def parts(tmp_path):
    store = Store(tmp_path / "c4.duckdb", CATALOGUE)
    writer = Writer(store)
    pool = ThreadPoolExecutor(2)
    yield store, writer, pool
    writer.close()
    pool.shutdown()
    store.close()


def put(store: Store, rows: list[dict]) -> None:
    [result] = store.commit([PendingBatch.internal(CATALOGUE["fabric_neighbors"], rows)])
    assert not result.error


def test_a_pass_stores_the_cables_of_the_newest_polls_and_keeps_yaml_only_cables(parts, tmp_path):
    store, writer, pool = parts
    now = datetime.now(UTC).replace(tzinfo=None)
    old = now - timedelta(hours=1)
    put(store, [neighbor("h0", "eth0", "leaf0", "swp1", "switch", old)])  # stale: older than fabric_fresh_s
    put(store, [neighbor("h0", "eth0", "leaf0", "swp2", "switch", now)])
    put(store, [neighbor("leaf0", "swp2", "h0", "eth0", "host", now)])
    fabric_yaml = tmp_path / "fabric.yaml"
    fabric_yaml.write_text(
        yaml.safe_dump(
            {
                "leaves": ["leaf0", "leaf9"],
                "spines": ["spine0"],
                "hosts": {
                    "h0": {"nics": [{"leaf": "leaf0", "ip": "10.0.0.1", "ifname": "eth0"}]},
                    "h9": {"nics": [{"leaf": "leaf9", "ip": "10.0.0.9"}]},
                },
                "links": [["leaf0", "spine0", 400], ["leaf9", "spine0", 400]],
            }
        )
    )
    task = FabricDiscovery(store, writer, pool, fresh_s=300.0, fabric_yaml=str(fabric_yaml))
    found = asyncio.run(task.run())
    rows = store.con.execute(
        "SELECT a_system, a_port, b_system, b_port, tier, seen_from, sources FROM fabric_topology_current ORDER BY 1, 2"
    ).fetchall()
    assert rows == [
        ("h0", "eth0", "leaf0", "swp2", "host_leaf", "both", "lldpd"),
        ("h9", "h9/nic0p0", "leaf9", "", "host_leaf", "yaml", "yaml"),  # nobody reports h9 or leaf9
        ("leaf0", "", "spine0", "", "leaf_spine", "yaml", "yaml"),  # nor spine0
        ("leaf9", "", "spine0", "", "leaf_spine", "yaml", "yaml"),
    ]
    assert found.contradictions == []

    # the host cable is gone from the next polls: the next pass says it vanished
    later = now + timedelta(seconds=1)
    put(store, [neighbor("h0", "eth1", "leaf0", "swp5", "switch", later)])
    put(store, [neighbor("leaf0", "swp5", "h0", "eth1", "host", later)])
    asyncio.run(task.run())
    flagged = store.con.execute(
        "SELECT kind, system, port FROM fabric_contradictions_current ORDER BY 1"
    ).fetchall()
    assert ("vanished", "h0", "eth0") in flagged


def test_when_every_cable_vanished_the_current_views_show_that_pass(parts):
    store, writer, pool = parts
    now = datetime.now(UTC).replace(tzinfo=None)
    put(store, [neighbor("h0", "eth0", "leaf0", "swp1", "switch", now)])
    task = FabricDiscovery(store, writer, pool, fresh_s=300.0)
    asyncio.run(task.run())
    assert store.con.execute("SELECT count(*) FROM fabric_topology_current").fetchone() == (1,)
    task.fresh_s = 1e-6  # the poll is now too old: nothing is seen
    asyncio.run(task.run())
    assert store.con.execute("SELECT count(*) FROM fabric_topology_current").fetchone() == (0,)
    assert store.con.execute("SELECT kind FROM fabric_contradictions_current").fetchall() == [("vanished",)]
