"""A released hold runs the held remediation of open faults at once, without waiting for a diagnosis pass
to detect them again, and each step once however often it is offered."""

from __future__ import annotations

import asyncio
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from c4.catalogue import load
from c4.collector.diagnosis import Diagnosis
from c4.collector.holds import HoldKeeper
from c4.collector.ingest import Metrics
from c4.collector.store import Store
from c4.collector.writer import Writer
from c4.config import CollectorConfig
from c4.telemetry.v1 import telemetry_pb2 as pb


def script(path, name: str):
    """A shell script that appends its name and arguments to calls.txt next to it."""
    p = path / name
    p.write_text(f'#!/bin/sh\necho "{name} $@" >> "$(dirname "$0")/calls.txt"\n')
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return p


def fault_row(fault_id: str, node: str, job: str) -> dict:
    """An open faults row whose recommended action drains the node."""
    now = datetime.now(UTC).replace(tzinfo=None)
    spec = load()["faults"]
    return {c: None for c in spec.column_names} | {
        "ts": now,
        "node": node,
        "job": job,
        "fault_id": fault_id,
        "detector": "xid79",
        "fault_class": "hardware",
        "component_type": "gpu",
        "component": f"{node}/gpu3",
        "first_seen": now,
        "last_seen": now,
        "confidence": 1.0,
        "action": "drain_node",
        "state": "open",
        "summary": "GPU has fallen off the bus",
    }


async def scenario(tmp_path) -> tuple[list[str], list[str], list[tuple], list[int]]:
    """Hold job train, find a fault of it and of config-held job frozen, release train; what ran."""
    drain, requeue = script(tmp_path, "drain.sh"), script(tmp_path, "requeue.sh")
    cfg = CollectorConfig(
        isolation_command=f"{drain} {{node}}",
        isolation_dry_run=False,
        restart="command",
        restart_command=f"{requeue} {{job}}",
        restart_dry_run=False,
        remediation_hold_jobs=["frozen"],
    )
    store = Store(tmp_path / "c4.duckdb", load())
    writer = Writer(store)
    pool = ThreadPoolExecutor(2)
    diagnosis = Diagnosis(cfg, store, writer, Metrics(), pool)
    keeper = HoldKeeper(diagnosis.holds, store, writer, "collector-host")
    keeper.load()
    diagnosis.start()
    assert diagnosis.runner is not None
    faults = [fault_row("xid79:a/gpu3", "a", "train"), fault_row("xid79:b/gpu3", "b", "frozen")]
    await keeper.change(pb.HoldRequest(scope="job", job="train", hold=True, by="alice"), "ops")
    for f in faults:  # what a diagnosis pass found: in the fault book, stored, remediation asked
        diagnosis.runner.book.open[f["fault_id"]] = f
    await diagnosis.store_faults(faults)
    await diagnosis.store_faults(faults)  # the next pass: held steps are recorded once
    assert not (tmp_path / "calls.txt").exists()
    await keeper.change(pb.HoldRequest(scope="job", job="train", hold=False, by="alice"), "ops")
    # released: no diagnosis pass runs here; the release itself, offered three times at once
    resumed = list(await asyncio.gather(*(diagnosis.resume_held() for _ in range(3))))
    for _ in range(200):
        if not diagnosis._resuming:
            break
        await asyncio.sleep(0.05)
    ran_at_release = (tmp_path / "calls.txt").read_text().splitlines()
    await diagnosis.store_faults(faults)  # and a later pass
    cur = store.cursor()
    actions = cur.execute(
        "SELECT fault_id, sink, outcome FROM actions ORDER BY fault_id, outcome, sink"
    ).fetchall()
    cur.close()
    pool.shutdown()
    writer.close()
    store.close()
    return ran_at_release, (tmp_path / "calls.txt").read_text().splitlines(), actions, resumed


def test_release_runs_held_steps_at_once_and_each_once(tmp_path):
    at_release, calls, actions, resumed = asyncio.run(scenario(tmp_path))
    assert at_release == ["drain.sh a", "requeue.sh train"]  # before any later diagnosis pass
    assert calls == at_release  # the later pass ran nothing again
    assert resumed[0] == 2  # isolation and restart of the released job's fault (frozen stays held)
    assert actions == [
        ("xid79:a/gpu3", "isolation", "held"),
        ("xid79:a/gpu3", "restart", "held"),
        ("xid79:a/gpu3", "isolation", "ran"),
        ("xid79:a/gpu3", "restart", "ran"),
        ("xid79:b/gpu3", "isolation", "held"),
        ("xid79:b/gpu3", "restart", "held"),
    ]
