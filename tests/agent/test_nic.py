"""NIC sampler on the captured sysfs trees (expected values read from the files here) and synthetic ones."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from c4.agent.nic import NicSampler
from c4.agent.sampler import Inventory, SourceUnavailable
from c4.agent.sysfs import parse_rate_bps, parse_state
from c4.catalogue import load
from c4.sim.sysfs_tree import (
    eight_nic_node,
    set_link,
    update_counters,
    write_file,
    write_ib_port,
    write_netdev,
)


def raw(path: Path) -> int:
    return int(path.read_text().split()[0])


def typed(table: str, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"ts": None, "node": "n", "job": "", **r} for r in rows], schema=load()[table].arrow_schema
    )


def by_port(rows):
    return {(r["device"], r["port"]): r for r in rows}


def test_captured_tree_values(sysfs_fixture: Path):
    s = NicSampler(sysfs_fixture.parent)  # a root holding sys/class/ is accepted too
    s.probe()
    out = s.sample(0)
    ports = by_port(out["ib_port_samples"])
    assert set(ports) == {("mlx5_0", 1), ("mlx4_0", 1), ("mlx4_0", 2), ("hfi1_0", 1)}
    ib = sysfs_fixture / "class" / "infiniband"
    for (dev, port), row in ports.items():
        c = ib / dev / "ports" / str(port) / "counters"
        assert row["tx_bytes"] == raw(c / "port_xmit_data") * 4  # 4-byte words -> bytes
        assert row["rx_bytes"] == raw(c / "port_rcv_data") * 4
        assert row["tx_packets"] == raw(c / "port_xmit_packets")
        assert row["symbol_errors"] == raw(c / "symbol_error")
        assert row["state"] == "ACTIVE" and row["state_code"] == 4
    mlx5 = ports[("mlx5_0", 1)]
    assert mlx5["rate_bps"] == 25_000_000_000 and mlx5["link_layer"] == "InfiniBand"
    hw = ib / "mlx5_0" / "ports" / "1" / "hw_counters"
    assert mlx5["local_ack_timeout_err"] == raw(hw / "local_ack_timeout_err")
    assert mlx5["roce_adp_retrans"] == raw(hw / "roce_adp_retrans")
    assert mlx5["out_of_sequence"] == raw(hw / "out_of_sequence")
    # mlx5 in this capture has no CNP/ECN files: missing, not zero; mlx4 has no hw_counters at all
    assert mlx5["np_cnp_sent"] is None and mlx5["rp_cnp_handled"] is None
    assert ports[("mlx4_0", 2)]["local_ack_timeout_err"] is None
    assert ports[("hfi1_0", 1)]["rate_bps"] == 100_000_000_000
    assert ports[("mlx4_0", 1)]["fw_ver"] == (ib / "mlx4_0" / "fw_ver").read_text().strip()
    nets = {r["netdev"]: r for r in out["netdev_samples"]}
    assert set(nets) == {"eth0", "enp162s0f0np0"}
    assert nets["eth0"]["speed_mbps"] == 1000 and nets["eth0"]["carrier_changes"] == 2
    assert nets["eth0"]["operstate"] == "up" and nets["eth0"]["mtu"] == 1500
    real = sysfs_fixture / "devices/pci0000:a2/0000:a2:00.0/net/enp162s0f0np0"  # behind the symlink
    assert nets["enp162s0f0np0"]["rx_bytes"] == raw(real / "statistics" / "rx_bytes")
    assert nets["enp162s0f0np0"]["carrier_changes"] == raw(real / "carrier_changes")
    for t, rows in out.items():
        typed(t, rows)
    inv = Inventory()
    s.inventory(inv)
    assert {(n["device"], n["port"], n["rate_bps"]) for n in inv.nics} >= {("mlx5_0", 1, 25_000_000_000)}


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("25 Gb/sec (1X EDR)", 25 * 10**9),
        ("400 Gb/sec (4X NDR)", 400 * 10**9),
        ("2.5 Gb/sec (1X SDR)", 2.5e9),
        ("100 Mb/sec", 10**8),
        ("garbage", None),
        (None, None),
    ],
)
def test_rate_parsing(text, bps):
    assert parse_rate_bps(text) == bps


def test_state_parsing():
    assert parse_state("4: ACTIVE") == (4, "ACTIVE") and parse_state("5: LinkUp") == (5, "LinkUp")
    assert parse_state("") == (None, "")


def test_synthetic_events_cnp_down_rate_reset(tmp_path):
    write_ib_port(
        tmp_path,
        "mlx5_0",
        1,
        rate_gbps=400,
        netdev="ens0np0",
        counters={"port_xmit_data": 1000, "link_downed": 0},
        hw_counters={"np_cnp_sent": 7, "rp_cnp_handled": 11, "np_ecn_marked_roce_packets": 13},
    )
    write_netdev(tmp_path, "ens0np0")
    s = NicSampler(tmp_path)
    s.probe()
    first = by_port(s.sample(0)["ib_port_samples"])[("mlx5_0", 1)]
    assert (first["np_cnp_sent"], first["rp_cnp_handled"], first["np_ecn_marked_roce_packets"]) == (7, 11, 13)
    assert first["netdev"] == "ens0np0" and first["rate_bps"] == 400 * 10**9 and first["tx_bytes"] == 4000
    set_link(tmp_path, "mlx5_0", 1, state="DOWN", phys_state="Polling")
    update_counters(tmp_path, "mlx5_0", 1, {"link_downed": 1})
    out = s.sample(0)
    kinds = {(e["kind"], e["old"], e["new"]) for e in out["nic_events"]}
    assert ("link_state", "ACTIVE", "DOWN") in kinds and ("phys_state", "LinkUp", "Polling") in kinds
    assert by_port(out["ib_port_samples"])[("mlx5_0", 1)]["link_downed"] == 1
    set_link(tmp_path, "mlx5_0", 1, state="ACTIVE", phys_state="LinkUp", rate_gbps=200)
    out = s.sample(0)
    assert ("rate", str(400 * 10**9), str(200 * 10**9)) in {
        (e["kind"], e["old"], e["new"]) for e in out["nic_events"]
    }
    assert by_port(out["ib_port_samples"])[("mlx5_0", 1)]["rate_bps"] == 200 * 10**9
    update_counters(tmp_path, "mlx5_0", 1, {"port_xmit_data": 10})  # the driver was reloaded
    out = s.sample(0)
    (reset,) = [e for e in out["nic_events"] if e["kind"] == "counter_reset"]
    assert "tx_bytes" in reset["counter"]
    assert (
        by_port(out["ib_port_samples"])[("mlx5_0", 1)]["tx_bytes"] == 40
    )  # stored raw; the rate view handles it
    typed("nic_events", out["nic_events"])


def test_odd_files_are_skipped_and_counted(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    port = write_ib_port(tmp_path, "mlx5_0", 1)
    (port / "counters" / "symbol_error").write_text("N/A (no PMA)\n")
    (port / "hw_counters" / "out_of_sequence").unlink()
    (port / "hw_counters" / "out_of_sequence").mkdir()  # a directory where a file should be
    (port / "counters" / "link_downed").write_text("garbage\n")
    (tmp_path / "class" / "infiniband" / "weird0").mkdir()  # a driver without ports/
    shutil.rmtree(write_ib_port(tmp_path, "nocnt0", 1) / "counters")  # a port without counters/
    s = NicSampler(tmp_path)
    s.probe()
    rows = by_port(s.sample(0)["ib_port_samples"])
    assert rows[("mlx5_0", 1)]["symbol_errors"] is None and rows[("mlx5_0", 1)]["link_downed"] is None
    assert rows[("mlx5_0", 1)]["out_of_sequence"] is None and rows[("mlx5_0", 1)]["tx_bytes"] == 0
    assert ("nocnt0", 1) in rows and rows[("nocnt0", 1)]["tx_bytes"] is None
    assert s.warnings >= 4
    assert not any("symbol_error" in r.getMessage() for r in caplog.records)  # documented N/A: no warning
    assert "not a readable file" in caplog.text
    assert "without ports/" in caplog.text and "without counters/" in caplog.text


def test_devices_appearing_are_events(tmp_path):
    write_ib_port(tmp_path, "mlx5_0", 1)
    s = NicSampler(tmp_path, rediscover_every_ticks=1)
    s.probe()
    assert s.sample(0)["nic_events"] == []
    write_ib_port(tmp_path, "mlx5_1", 1)
    out = s.sample(0)
    assert len(out["ib_port_samples"]) == 2
    assert [(e["kind"], e["device"]) for e in out["nic_events"]] == [("device_added", "mlx5_1")]
    held = dict(s._files._held)
    shutil.rmtree(tmp_path / "class" / "infiniband" / "mlx5_0")
    out = s.sample(0)
    assert [(e["kind"], e["device"]) for e in out["nic_events"]] == [("device_removed", "mlx5_0")]
    # a rediscovery lets go of the files of the port that went away and keeps the others' open
    assert not any("/mlx5_0/" in path for path in s._files._held)
    kept = [path for path in held if "/mlx5_1/" in path]
    assert kept and all(s._files._held.get(path, (None,))[0] == held[path][0] for path in kept)


def test_empty_root_is_unavailable(tmp_path):
    with pytest.raises(SourceUnavailable):
        NicSampler(tmp_path).probe()


def test_eight_nic_node(tmp_path):
    eight_nic_node(tmp_path)
    s = NicSampler(tmp_path)
    s.probe()
    out = s.sample(0)
    assert len(out["ib_port_samples"]) == 8 and len(out["netdev_samples"]) == 9
    assert all(r["rate_bps"] == 400 * 10**9 and r["np_cnp_sent"] == 0 for r in out["ib_port_samples"])


def test_slow_counters_are_read_every_n_ticks(tmp_path):
    write_ib_port(tmp_path, "mlx5_0", 1, counters={"VL15_dropped": 3, "symbol_error": 1})
    write_netdev(tmp_path, "ens0np0", stats={"collisions": 2, "rx_bytes": 5})
    s = NicSampler(tmp_path, slow_every_ticks=3)
    s.probe()
    ticks = [s.sample(0) for _ in range(4)]
    vl15 = [t["ib_port_samples"][0]["vl15_dropped"] for t in ticks]
    assert vl15 == [3, None, None, 3]  # NULL = not read this tick; fast counters every tick
    assert [t["ib_port_samples"][0]["symbol_errors"] for t in ticks] == [1, 1, 1, 1]
    assert [t["netdev_samples"][0]["collisions"] for t in ticks] == [2, None, None, 2]
    assert [t["netdev_samples"][0]["rx_bytes"] for t in ticks] == [5, 5, 5, 5]


def _legacy_mlx4(root: Path, counters: dict[str, int], ext: dict[str, int]) -> Path:
    """An mlx4 port as MLNX_OFED lays it out: counters/ plus counters_ext/ (names as in the real
    capture tests/conformance/nic/node_exporter-mlx4-i40iw-bond)."""
    port = write_ib_port(
        root, "mlx4_0", 1, link_layer="InfiniBand", counters=counters, with_hw_counters=False
    )
    for name, value in ext.items():
        write_file(port / "counters_ext" / name, value)
    return port


def test_legacy_counters_ext_without_64_suffix_are_read(tmp_path):
    """counters_ext/port_{uni,multi}cast_* have no _64 suffix; they hold the value counters/ lacks."""
    _legacy_mlx4(
        tmp_path,
        {"multicast_rcv_packets": 0, "unicast_xmit_packets": 0},
        {"port_multicast_rcv_packets": 93, "port_unicast_xmit_packets": 61239},
    )
    s = NicSampler(tmp_path)
    s.probe()
    row = s.sample(0)["ib_port_samples"][0]
    assert (row["multicast_rx_packets"], row["unicast_tx_packets"]) == (93, 61239)


def test_zero_counters_ext_does_not_hide_a_64bit_counter(tmp_path):
    """A counters_ext/*_64 file the driver leaves at 0 loses to a counters/ value above 2^32, and a
    32-bit counters/ value saturated at 2^32 - 1 loses to its 64-bit twin: the larger is the count."""
    _legacy_mlx4(
        tmp_path,
        {"port_rcv_packets": 6825908347, "port_xmit_packets": 2**32 - 1, "port_xmit_data": 10},
        {"port_rcv_packets_64": 0, "port_xmit_packets_64": 5_000_000_000, "port_xmit_data_64": 12},
    )
    s = NicSampler(tmp_path)
    s.probe()
    row = s.sample(0)["ib_port_samples"][0]
    assert row["rx_packets"] == 6825908347 and row["tx_packets"] == 5_000_000_000
    assert row["tx_bytes"] == 48  # words x 4 from whichever file wins
    write_file(tmp_path / "class/infiniband/mlx4_0/ports/1/counters/port_rcv_packets", 5)  # driver reload
    out = s.sample(0)
    assert out["ib_port_samples"][0]["rx_packets"] == 5
    assert any(e["kind"] == "counter_reset" and "rx_packets" in e["counter"] for e in out["nic_events"])


def test_hca_type_discards_duplex_and_address_are_stored(tmp_path):
    port = write_ib_port(tmp_path, "mlx4_0", 1, counters={"port_rcv_discards": 7})
    assert (port.parent.parent / "hca_type").read_text().strip() == "MT4129"
    n = write_netdev(tmp_path, "ens0np0")
    write_file(n / "duplex", "full")
    write_file(n / "address", "0c:42:a1:2b:3c:4d")
    s = NicSampler(tmp_path)
    s.probe()
    out = s.sample(0)
    ib = out["ib_port_samples"][0]
    assert ib["hca_type"] == "MT4129" and ib["rx_discards"] == 7
    nd = out["netdev_samples"][0]
    assert (nd["duplex"], nd["address"], nd["operstate"], nd["carrier"], nd["mtu"], nd["speed_mbps"]) == (
        "full",
        "0c:42:a1:2b:3c:4d",
        "up",
        1,
        4200,
        400000,
    )
    for t, rows in out.items():
        typed(t, rows)


def test_bonding_masters_is_not_a_netdev(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    write_netdev(tmp_path, "bond0")
    write_file(tmp_path / "class" / "net" / "bonding_masters", "bond0")  # the bonding driver's class file
    (tmp_path / "class" / "net" / "stray").write_text("not a link\n")  # anything else is still warned about
    s = NicSampler(tmp_path)
    s.probe()
    assert [r["netdev"] for r in s.sample(0)["netdev_samples"]] == ["bond0"]
    assert "bonding_masters" not in caplog.text and "netdev=stray" in caplog.text


def test_unreadable_counters_are_counted_by_reason_but_no_pma_is_not(tmp_path):
    port = write_ib_port(tmp_path, "mlx5_0", 1)
    write_file(port / "counters" / "symbol_error", "N/A (no PMA)")  # documented: not available
    write_file(port / "counters" / "link_downed", "garbage")
    write_file(port / "counters" / "port_xmit_data", 2**63)  # x4 leaves 2^64
    s = NicSampler(tmp_path)
    s.probe()
    row = s.sample(0)["ib_port_samples"][0]
    assert row["symbol_errors"] is None and row["link_downed"] is None and row["tx_bytes"] is None
    assert s.skipped_by_reason == {"not_a_number": 1, "out_of_range": 1} and s.records_skipped == 2
