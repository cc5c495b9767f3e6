"""Issue 15 item 4: one bad value or record is skipped and counted alone; its neighbours are kept.

Each named instance is driven through the real sampler and the real Agent (rows -> Arrow -> spool)."""

from __future__ import annotations

import json
import socketserver
import threading
from collections import Counter
from pathlib import Path

from testkit.agent_rig import spooled

from c4.agent.nccl_conn import ConnRecordSampler
from c4.agent.nccl_debug_log import DebugLogSampler
from c4.agent.nccl_inspector import InspectorSampler
from c4.agent.nccl_ras import RasSampler
from c4.agent.nic import NicSampler
from c4.agent.ras_json import report_rows
from c4.agent.registry import SamplerContext
from c4.agent.runner import Agent, ScheduledSampler
from c4.agent.sampler import StartupPolicy
from c4.agent.xid_kmsg import KmsgXidSampler
from c4.catalogue import load
from c4.config import AgentConfig
from c4.sim.sysfs_tree import update_counters, write_ib_port

DATA = Path(__file__).resolve().parents[1] / "data" / "nccl"
XID79 = "NVRM: Xid (PCI:0000:2b:00): 79, pid=1234, name=python, GPU has fallen off the bus."
INSPECTOR_ROW = (DATA / "inspector-rank2.log").read_text().splitlines()[0]


def one_tick(tmp_path: Path, sampler) -> tuple[dict[str, list[dict]], ScheduledSampler]:
    """Probe and sample once through a real Agent, flush to its spool; the rows it stored, per table."""
    cfg = AgentConfig(node="n1", job="", spool_dir=tmp_path / "spool", collector="127.0.0.1:1", samplers={})
    s = ScheduledSampler(sampler, 1.0, StartupPolicy.ERROR)
    agent = Agent(cfg, [s], SamplerContext("n1", "", {}), spool_fsync=False)
    agent.start_samplers()
    agent.sample_one(s, 1_700_000_000_000_000_000)
    agent.flush()
    agent.spool.close()
    return spooled(tmp_path / "spool"), s


def test_huge_xid_next_to_a_real_xid_79(tmp_path):
    log = tmp_path / "kern.log"
    log.write_text(
        "NVRM: Xid (PCI:0000:2b:00): 99999999999999999999, pid=1, name=x, bogus\n"
        f"NVRM: Xid (PCI:0000:2b:00): {'9' * 5000}, pid=1, name=x, longer than int() takes\n"
        f"{XID79}\n"
    )
    rows, s = one_tick(tmp_path, KmsgXidSampler(log, from_start=True))
    assert [r["xid"] for r in rows["gpu_events"]] == [79]
    assert s.sampler.records_skipped + s.rows_dropped == 2


def test_deeply_nested_json_next_to_a_valid_inspector_row(tmp_path):
    d = tmp_path / "dump"
    d.mkdir()
    nested = '{"a":' * 100_000 + "1" + "}" * 100_000
    huge = INSPECTOR_ROW.replace('"coll_exec_time_us":61974', '"coll_exec_time_us":' + "9" * 400)
    (d / "rank2.log").write_text(f'{nested}\n{huge}\n{"{"}"n": {"1" * 5000}{"}"}\n{INSPECTOR_ROW}\n')
    rows, s = one_tick(tmp_path, InspectorSampler(d))
    got = [(r["coll_sn"], r["exec_time_us"]) for r in rows["nccl_collectives"]]
    assert got == [(1407, None), (1407, 61974.0)]  # a value out of range is NULL, its row kept
    assert s.sampler.records_skipped == 2


def test_one_bad_nic_value_keeps_every_other_nic_row(tmp_path):
    root = tmp_path / "sys"
    for i in range(3):
        write_ib_port(root, f"mlx5_{i}", 1, counters={"port_xmit_data": 1000 + i})
    update_counters(root, "mlx5_1", 1, {"port_rcv_data": 99999999999999999999999})  # > 2^64
    update_counters(root, "mlx5_2", 1, {"symbol_error": -5})
    rows, s = one_tick(tmp_path, NicSampler(root))
    ports = {r["device"]: r for r in rows["ib_port_samples"]}
    assert sorted(ports) == ["mlx5_0", "mlx5_1", "mlx5_2"]
    assert ports["mlx5_1"]["rx_bytes"] is None and ports["mlx5_1"]["tx_bytes"] == 1001 * 4
    assert ports["mlx5_2"]["symbol_errors"] is None and s.rows_dropped == 0


def test_out_of_range_link_rate_is_not_a_tick_error(tmp_path):
    root = tmp_path / "sys"
    write_ib_port(root, "mlx5_0", 1)
    write_ib_port(root, "mlx5_1", 1)
    (root / "class/infiniband/mlx5_0/ports/1/rate").write_text("99999999999999999999999 Gb/sec (4X NDR)\n")
    (root / "class/infiniband/mlx5_1/ports/1/rate").write_text("1" + "0" * 400 + " Gb/sec (4X NDR)\n")
    rows, s = one_tick(tmp_path, NicSampler(root))
    assert [r["rate_bps"] for r in rows["ib_port_samples"]] == [None, None] and s.errors == 0


def test_bad_connection_records_next_to_good_ones(tmp_path):
    good = {
        "v": 1,
        "ts_ns": 1764000000_000000000,
        "window_ns": 1_000_000_000,
        "pid": 4242,
        "comm": "0x9a3f",
        "rank": 3,
        "peer": 11,
        "channel": 2,
        "dir": "send",
        "dev": "mlx5_3",
        "port": 1,
        "ops": 12,
        "steps": 96,
        "bytes": 402653184,
        "net_us": 8210.5,
        "wait_peer_us": 310.0,
        "wait_gpu_us": 95,
    }
    d = tmp_path / "conn"
    d.mkdir()
    lines = [
        json.dumps({**good, "ts_ns": 10**30}),  # datetime overflow
        json.dumps({**good, "bytes": 10**30}),  # does not fit the column
        json.dumps({**good, "net_us": 10**400}),  # float() overflow
        "[" * 100_000,  # RecursionError
        json.dumps(good),
    ]
    (d / "a.jsonl").write_text("\n".join(lines) + "\n")
    rows, s = one_tick(tmp_path, ConnRecordSampler(d))
    assert [r["peer_rank"] for r in rows["nccl_connections"]] == [11]
    assert s.sampler.records_skipped + s.rows_dropped == 4


def test_bad_debug_log_line_next_to_good_ones(tmp_path):
    d = tmp_path / "nccl"
    d.mkdir()
    good = (DATA / "nccl-debug-rank3.log").read_text().splitlines()
    bad = f"gpu-node-1:{'4' * 5000}:4250 [3] NCCL INFO Channel 00/0 : 3[3] -> 4[4] via P2P/IPC"
    (d / "rank3.log").write_text("\n".join([good[1], bad, *good[2:]]) + "\n")
    rows, s = one_tick(tmp_path, DebugLogSampler(d))
    assert {r["kind"] for r in rows["nccl_topology"]} >= {"init", "ring", "tree", "conn"}
    # the 5000-digit pid, and the fixture's own garbled "Channel 02/0 :" line (no longer dropped silently)
    assert s.sampler.records_skipped == 2
    assert s.sampler.skipped_by_reason == {"header": 1, "ring": 1}


def test_bad_ras_communicator_next_to_a_good_one():
    good_rank = {"rank": 0, "status": {"init_state": 0}, "collective_counts": {"AllReduce": 5}}
    report = {
        "communicators": [
            {"hash": "0xbad", "size": 4, "ranks": 7},  # not a list
            {"hash": "0x600d", "size": 2, "ranks": [good_rank]},
        ]
    }
    skipped: Counter = Counter()
    rows = report_rows(report, skipped)
    assert {r["comm_hash"] for r in rows} == {"0x600d"} and len(rows) == 2
    assert skipped == {"communicator_unreadable": 1}


def test_rows_that_do_not_fit_are_dropped_one_by_one():
    from c4.agent.batcher import convert_rows

    good = {"agent_id": "a", "boot_ns": 1, "tick": 1, "uptime_s": 0.5}
    rows = [good, {**good, "tick": 2**70}, {**good, "tick": 3}, {**good, "nonsense": 1}, "not a row"]
    out = convert_rows(load(), "agent_heartbeat", rows, {"node": "n", "job": ""})
    assert out.table.column("tick").to_pylist() == [1, 3]
    assert out.dropped == 3 and "agent_heartbeat" in out.first_error and "row 1" in out.first_error


class _RawRas(socketserver.StreamRequestHandler):
    """NCCL RAS speaking the protocol, then writing raw report bytes."""

    report = b""

    def handle(self) -> None:
        self.rfile.readline()
        self.wfile.write(b"SERVER PROTOCOL 2\n")
        while self.rfile.readline().strip() != b"VERBOSE STATUS":  # TIMEOUT, SET FORMAT json
            self.wfile.write(b"OK\n")
        self.wfile.write(self.report)


def test_ras_report_with_invalid_utf8_and_a_bad_communicator(tmp_path):
    rank = {"rank": 0, "host": "nodeXX", "status": {"init_state": 0}, "collective_counts": {"AllReduce": 5}}
    good = {"hash": "0x600d", "size": 2, "ranks": [rank]}
    _RawRas.report = (
        json.dumps({"communicators": [{"hash": "0x1", "size": 10**30}, {"hash": "0xbad", "ranks": 7}, good]})
        .replace("nodeXX", "node\udcff")
        .encode("utf-8", "surrogateescape")
    )
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _RawRas) as srv:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            rows, s = one_tick(tmp_path, RasSampler(f"127.0.0.1:{srv.server_address[1]}", poll_every_ticks=1))
        finally:
            srv.shutdown()
    got = [(r["comm_hash"], r["scope"], r["status"], r["host"]) for r in rows["nccl_ras_status"]]
    assert got == [("0x600d", "communicator", "RUNNING", None), ("0x600d", "rank", "RUNNING", "node\ufffd")]
    assert s.sampler.records_skipped + s.rows_dropped == 2


def test_list_cells_are_checked_element_by_element_unless_every_element_fits():
    """LIST columns (the wide NVLink rows): lists of fitting values are taken as they are; a tuple cell is
    made a list, an element out of range or of the wrong type drops its row alone."""
    from c4.agent.batcher import convert_rows

    base = {"gpu_index": 0, "gpu_uuid": "GPU-0", "link": [0, 1], "tx_data_bytes": [1, 2]}
    rows = [
        base,
        {**base, "gpu_index": 1, "tx_data_bytes": (3, None)},  # a tuple, a NULL element: fine
        {**base, "gpu_index": 2, "tx_data_bytes": [4, -1]},  # -1 does not fit a UBIGINT
        {**base, "gpu_index": 3, "tx_data_bytes": [5, "6"]},  # a string is not a number
        {**base, "gpu_index": 4, "nvml_ts_us": [7, 2**63]},  # out of BIGINT range
    ]
    out = convert_rows(load(), "nvlink_gpu_samples", rows, {"ts": 0, "node": "n", "job": ""})
    assert out.dropped == 3 and "row 2" in out.first_error
    assert out.batch.column("gpu_index") == [0, 1]
    assert out.batch.column("tx_data_bytes") == [[1, 2], [3, None]]
    clean = convert_rows(load(), "nvlink_gpu_samples", [base, base], {"ts": 0, "node": "n", "job": ""})
    assert clean.dropped == 0 and clean.batch.column("tx_data_bytes") == [[1, 2], [1, 2]]
