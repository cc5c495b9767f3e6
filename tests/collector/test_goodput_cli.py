"""A real collector's diagnosis passes write job accounts; `c4 goodput` reads them through the Query RPC."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from testkit.procs import CollectorProc

from c4.catalogue import Catalogue
from c4.cli import main
from c4.collector.store import PendingBatch, Store


def test_collector_accounts_jobs_and_goodput_prints_them(tmp_path, capsys):
    now = datetime.now(UTC).replace(tzinfo=None)
    t0 = now - timedelta(seconds=200)
    store = Store(tmp_path / "c4.duckdb", Catalogue.from_dir())
    spec = store.catalogue["nccl_collectives"]
    names = spec.arrow_schema.names
    pts = [(i, i) for i in range(60)] + [(100 + i, i) for i in range(60)]  # a 41 s silence, then sn from 0
    rows = [
        {c: None for c in names}
        | {
            "ts": t0 + timedelta(seconds=t),
            "node": f"n{r // 8}",
            "job": "llm",
            "comm_id": "a" if t < 100 else "b",
            "rank": r,
            "coll_sn": sn,
            "n_ranks": 16,
        }
        for t, sn in pts
        for r in range(16)
    ]
    store.commit([PendingBatch.internal(spec, rows)])
    store.close()
    cfg = tmp_path / "c4.toml"
    cfg.write_text("[collector]\ndiagnose_interval_s = 1.0\ncheckpoint_interval_s = 20.0\n")
    col = CollectorProc(tmp_path, extra=["--config", str(cfg)]).start()
    try:
        deadline, got = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            capsys.readouterr()
            assert main(["goodput", "--collector", col.address, "--json"]) == 0
            got = json.loads(capsys.readouterr().out)
            if got["jobs"]:
                break
            time.sleep(1)
        (job,) = got["jobs"]
        assert job["job"] == "llm" and job["gpus"] == 16 and job["runs"] == 2
        # no fault explains the 41 s restart nor the 19 s since run 0's last checkpoint (at 20 s intervals)
        assert job["restarting_s"] == 0.0 and abs(job["unexplained_s"] - 60.0) < 1e-6
        assert job["lost_s"] == job["unexplained_s"] and got["faults"] == []
        assert main(["goodput", "--collector", col.address]) == 0
        assert "llm" in capsys.readouterr().out
        assert main(["goodput", "--collector", col.address, "--job", "nosuch"]) == 0
        assert "no account for job 'nosuch'" in capsys.readouterr().out  # not "no job accounts yet"
        for top, words in (
            ("0", "--top must be 1.."),
            ("-3", "argument --top: -3 is negative"),  # every command's numeric flags (c4.cli_numbers)
            ("99999999999999999999", "--top must be 1.."),
        ):
            assert main(["goodput", "--collector", col.address, "--top", top]) == 2
            assert words in capsys.readouterr().err
    finally:
        col.stop()
