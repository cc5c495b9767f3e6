"""Records written by the plugin flow through the unchanged agent into the collector's table."""

import json
import os
import subprocess
import time

from testkit.procs import AgentProc, CollectorProc

from c4.query import query_arrow


def test_plugin_records_reach_the_store(built, tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    proc = subprocess.run(
        [str(built["driver"]), "ring", str(built["plugin"]), "5", "16", "4", "8", "65536"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "C4_NCCL_PROFILER_DIR": str(records), "C4_NCCL_PROFILER_WINDOW_MS": "5"},
    )
    expected = {(c["peer"], c["channel"], c["dir"]): c["bytes"] for c in json.loads(proc.stdout)["conns"]}
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[agent]\nflush_interval_s = 0.2\n[agent.samplers.nccl_conn]\nrecord_dir = "{records}"\n')
    col = CollectorProc(tmp_path).start()
    agent = AgentProc(
        tmp_path, col.address, "gpu-node-1", ["--config", str(cfg), "--samplers", "nccl_conn"]
    ).start()
    sql = (
        "SELECT peer_rank, channel, direction, sum(bytes) AS b FROM nccl_connections "
        "WHERE node = 'gpu-node-1' GROUP BY ALL"
    )
    try:
        deadline = time.monotonic() + 30
        got = {}
        while time.monotonic() < deadline and got != expected:
            t, _ = query_arrow(col.address, sql)
            got = {(r["peer_rank"], r["channel"], r["direction"]): r["b"] for r in t.to_pylist()}
            time.sleep(0.2)
    finally:
        agent.stop()
        col.stop()
    assert got == expected
