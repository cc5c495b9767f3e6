"""The C4 NCCL profiler plugin, driven exactly as NCCL calls it, writes records the agent reads."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from collections import defaultdict

import pytest

from c4.agent.nccl_conn import ConnRecordSampler


def run_driver(built, tmp_path, *args, lib="plugin", env=None, prefix=()):
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    proc = subprocess.run(
        [*prefix, str(built["driver"]), args[0], str(built[lib]), *map(str, args[1:])],
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "C4_NCCL_PROFILER_DIR": str(records),
            "C4_NCCL_PROFILER_WINDOW_MS": "5",
            **(env or {}),
        },
    )
    return proc, records


def totals(records) -> tuple[dict, list[dict]]:
    """Connection rows summed per (peer, channel, direction) through the agent's own reader; other lines."""
    sampler = ConnRecordSampler(records)
    sampler.probe()
    rows = sampler.sample(0)["nccl_connections"]
    assert sampler.bad_lines == 0
    sums: dict[tuple, dict] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        key = (r["peer_rank"], r["channel"], r["direction"])
        for k in ("ops", "steps", "bytes", "transfer_us", "wait_peer_us", "wait_gpu_us"):
            sums[key][k] += r[k]
        assert r["comm_hash"] == "0x9a3f1c22d1e0b7a4" and r["rank"] == 0 and r["window_s"] > 0
    others = [
        json.loads(line)
        for f in records.glob("*.jsonl")
        for line in f.read_text().splitlines()
        if json.loads(line)["kind"] != "conn"
    ]
    return sums, others


@pytest.mark.parametrize("version", [4, 5, 6])
def test_ring_allreduce_records_add_up(built, tmp_path, version):
    proc, records = run_driver(built, tmp_path, "ring", version, 24, 4, 8, 524288)
    assert proc.returncode == 0, proc.stderr
    expected = json.loads(proc.stdout)
    sums, others = totals(records)
    assert set(sums) == {(c["peer"], c["channel"], c["dir"]) for c in expected["conns"]}
    for c in expected["conns"]:
        got = sums[(c["peer"], c["channel"], c["dir"])]
        assert (got["ops"], got["steps"], got["bytes"]) == (c["ops"], c["steps"], c["bytes"]), c
        assert got["transfer_us"] > 0
    # sends measured GPU and peer waits; receives measured the flush/consume wait
    assert sums[(1, 0, "send")]["wait_gpu_us"] > 0 and sums[(1, 0, "send")]["wait_peer_us"] > 0
    assert sums[(3, 0, "recv")]["wait_gpu_us"] > 0
    colls = [o for o in others if o["kind"] == "coll"]
    assert sorted(o["seq"] for o in colls) == list(range(expected["colls"]))
    assert all(o["network"] and o["stop_ns"] >= o["start_ns"] and o["func"] == "AllReduce" for o in colls)
    assert expected["warnings"] == 0
    assert len(list(records.glob("c4-conn-*.jsonl"))) == 1


def test_records_span_several_windows(built, tmp_path):
    proc, records = run_driver(
        built, tmp_path, "ring", 5, 64, 2, 4, 4096, env={"C4_NCCL_PROFILER_WINDOW_MS": "1"}
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for f in records.glob("*.jsonl") for x in f.read_text().splitlines()]
    assert len({x["ts_ns"] for x in lines if x["kind"] == "conn"}) > 1


def test_unwritable_directory_degrades_to_no_records(built, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    proc, _ = run_driver(
        built, tmp_path, "ring", 5, 4, 2, 2, 100, env={"C4_NCCL_PROFILER_DIR": str(blocker / "sub")}
    )
    # the job carries on: the driver completes; NCCL's logger got exactly one warning
    # init succeeds without a context (NCCL then sends no events); the logger got one warning
    assert "plugin gave no context" in proc.stderr and "Segmentation" not in proc.stderr
    assert proc.stderr.count("cannot open") == 1


def test_valgrind_clean(built, tmp_path):
    proc, records = run_driver(
        built,
        tmp_path,
        "ring",
        5,
        6,
        4,
        4,
        65536,
        lib="debug",
        prefix=(
            "valgrind",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--error-exitcode=9",
            "-q",
        ),
    )
    assert proc.returncode == 0, proc.stderr
    assert "ERROR SUMMARY" not in proc.stderr or "ERROR SUMMARY: 0 errors" in proc.stderr
    expected = json.loads(proc.stdout)
    sums, _ = totals(records)
    assert sum(v["bytes"] for v in sums.values()) == sum(c["bytes"] for c in expected["conns"])


# --- the same calls from Python through ctypes ---------------------------------------------


class ProxyOp(ctypes.Structure):
    _fields_ = [
        ("pid", ctypes.c_int),
        ("channelId", ctypes.c_uint8),
        ("peer", ctypes.c_int),
        ("nSteps", ctypes.c_int),
        ("chunkSize", ctypes.c_int),
        ("isSend", ctypes.c_int),
    ]


class Coll(ctypes.Structure):
    _fields_ = [
        ("seqNumber", ctypes.c_uint64),
        ("func", ctypes.c_char_p),
        ("sendBuff", ctypes.c_void_p),
        ("recvBuff", ctypes.c_void_p),
        ("count", ctypes.c_size_t),
        ("root", ctypes.c_int),
        ("datatype", ctypes.c_char_p),
        ("nChannels", ctypes.c_uint8),
        ("nWarps", ctypes.c_uint8),
        ("algo", ctypes.c_char_p),
        ("proto", ctypes.c_char_p),
        ("parentGroup", ctypes.c_void_p),
    ]


class Payload(ctypes.Union):
    _fields_ = [("coll", Coll), ("proxyOp", ProxyOp), ("step", ctypes.c_int), ("pad", ctypes.c_ubyte * 128)]


class Descr(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint64),
        ("parentObj", ctypes.c_void_p),
        ("rank", ctypes.c_int),
        ("u", Payload),
    ]


LOGGER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p)
INIT = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.c_uint64,
    ctypes.POINTER(ctypes.c_int),
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    LOGGER,
)
START = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(Descr)
)
STOP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
RECORD = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_size_t * 1))
FINAL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class ProfilerV5(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("init", INIT),
        ("startEvent", START),
        ("stopEvent", STOP),
        ("recordEventState", RECORD),
        ("finalize", FINAL),
    ]


def test_ctypes_driver(built, tmp_path, monkeypatch):
    records = tmp_path / "rec"
    monkeypatch.setenv("C4_NCCL_PROFILER_DIR", str(records))
    lib = ctypes.CDLL(str(built["plugin"]))
    api = ProfilerV5.in_dll(lib, "ncclProfiler_v5")
    assert api.name == b"C4"
    logger = LOGGER(lambda *a: None)
    ctx, mask = ctypes.c_void_p(), ctypes.c_int()
    assert api.init(ctypes.byref(ctx), 0x9A3F1C22D1E0B7A4, ctypes.byref(mask), b"py", 1, 2, 0, logger) == 0
    assert mask.value == (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4)

    def start(kind, parent=None, **fields):
        d = Descr(type=kind, parentObj=parent, rank=0)
        for k, v in fields.items():
            setattr(d.u, k, v)
        h = ctypes.c_void_p()
        api.startEvent(ctx, ctypes.byref(h), ctypes.byref(d))
        return h

    coll = start(1 << 1, coll=Coll(seqNumber=7, func=b"AllGather", count=10))
    api.stopEvent(coll)
    for peer, is_send in ((1, 1), (1, 0)):
        op = start(
            1 << 3, coll, proxyOp=ProxyOp(pid=os.getpid(), channelId=5, peer=peer, nSteps=3, isSend=is_send)
        )
        for s in range(3):
            st = start(1 << 4, op, step=s)
            size = (ctypes.c_size_t * 1)(1000)
            for state in (8, 20, 9) if is_send else (10, 11, 12):
                api.recordEventState(st, state, ctypes.byref(size))
            api.stopEvent(st)
        api.stopEvent(op)
    api.stopEvent(None)  # a NULL handle is ignored
    assert api.finalize(ctx) == 0
    rows = ConnRecordSampler(records).sample(0)["nccl_connections"]
    got = {(r["peer_rank"], r["channel"], r["direction"]): (r["ops"], r["steps"], r["bytes"]) for r in rows}
    assert got == {(1, 5, "send"): (1, 3, 3000), (1, 5, "recv"): (1, 3, 3000)}
    colls = [
        json.loads(x) for f in records.glob("*.jsonl") for x in f.read_text().splitlines() if '"coll"' in x
    ]
    assert [(c["seq"], c["func"]) for c in colls] == [(7, "AllGather")]


# --- real NCCL behaviour the ring driver does not show -------------------------------------

COMM = "0x9a3f1c22d1e0b7a4"


def run_pxn(built, tmp_path, version, foreign, lib="plugin", prefix=()):
    """The pxn driver; reruns (at most twice) when ASLR put one of our mappings at the foreign address."""
    for _ in range(3):
        proc, records = run_driver(
            built, tmp_path, "pxn", version, 12, 4, 8192, foreign, lib=lib, prefix=prefix
        )
        if proc.returncode != 3:
            break
        for f in records.glob("*.jsonl"):
            f.unlink()
    return proc, records


@pytest.mark.parametrize("foreign", ["unmapped", "mapped"])
@pytest.mark.parametrize("version", [4, 5, 6])
def test_pxn_ops_never_touch_the_foreign_context(built, tmp_path, version, foreign):
    """NCCL hands the proxy process another process's profilerContext and task handle (PXN):
    with the pointer unmapped here the old plugin died of SIGSEGV, with a mapping there it wrote
    into it. Now neither is touched, and the op is counted for the rank and process it came from."""
    proc, records = run_pxn(built, tmp_path, version, foreign)
    assert proc.returncode == 0, proc.stderr
    expected = json.loads(proc.stdout)
    assert expected["canary"] == ("intact" if foreign == "mapped" else None)
    assert expected["sender_rc"] == 0 and expected["warnings"] == 0
    raw = [json.loads(x) for f in records.glob("*.jsonl") for x in f.read_text().splitlines()]
    pxn_raw = [r for r in raw if r.get("pxn")]
    assert pxn_raw and all(r["proxy_pid"] != r["pid"] for r in pxn_raw)
    sampler = ConnRecordSampler(records)
    rows = sampler.sample(0)["nccl_connections"]
    assert sampler.bad_lines == 0
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        key = (r["comm_hash"], r["pid"], r["rank"], r["peer_rank"], r["direction"])
        for i, k in enumerate(("ops", "steps", "bytes")):
            sums[key][i] += r[k]
    px, local = expected["pxn"], expected["local"]
    local_pid = pxn_raw[0]["proxy_pid"]
    assert dict(sums) == {
        ("0x0000000000000000", px["pid"], 0, 2, "send"): [px["ops"], px["steps"], px["bytes"]],
        (COMM, local_pid, 1, 0, "recv"): [local["ops"], local["steps"], local["bytes"]],
    }


def test_pxn_valgrind_clean(built, tmp_path):
    proc, records = run_pxn(
        built,
        tmp_path,
        5,
        "unmapped",
        lib="debug",
        prefix=(
            "valgrind",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--error-exitcode=9",
            "-q",
        ),
    )
    assert proc.returncode == 0, proc.stderr
    assert "ERROR SUMMARY" not in proc.stderr or "ERROR SUMMARY: 0 errors" in proc.stderr
    expected = json.loads(proc.stdout)
    rows = ConnRecordSampler(records).sample(0)["nccl_connections"]
    assert sum(r["bytes"] for r in rows) == expected["pxn"]["bytes"] + expected["local"]["bytes"]


MASK = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4)


@pytest.mark.parametrize("version", [4, 5, 6])
def test_a_failed_init_leaves_profiling_on_and_teardown_clean(built, tmp_path, version):
    """Two communicators share NCCL's one event-mask int; the second init runs out of memory.
    The old plugin zeroed the mask (profiling off for the first too) and, as NCCL >= 2.28 skips
    finalize for a NULL context, its flush thread outlived dlclose and crashed the process."""
    proc, _ = run_driver(built, tmp_path, "inits", version, "oom")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert (got["ctx_a"], got["ctx_b"]) == (True, False)
    assert got["mask_after_failed_init"] == MASK and got["mask"] == MASK
    assert got["threads_after_finalize"] == got["threads_before"] == got["threads_after_unload"]
    assert proc.stderr.count("out of memory; this communicator is not profiled") == 1


@pytest.mark.parametrize("version", [4, 6])
def test_a_failed_thread_start_is_retried_by_the_next_init(built, tmp_path, version):
    """The first init cannot start the flush thread: it hands out no context and leaves the
    mask alone; the next communicator is profiled (the old plugin never retried)."""
    proc, records = run_driver(built, tmp_path, "inits", version, "thread")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert (got["ctx_a"], got["ctx_b"]) == (False, True)
    assert got["mask_after_failed_init"] == 0 and got["mask"] == MASK
    assert got["threads_after_finalize"] == got["threads_before"] == got["threads_after_unload"]
    assert "cannot start the flush thread" in proc.stderr
    rows = ConnRecordSampler(records).sample(0)["nccl_connections"]
    assert [(r["comm_hash"], r["bytes"]) for r in rows] == [("0x000000000000b0b0", 4096)]


@pytest.mark.parametrize(("nccl", "api"), [("2.23", 1), ("2.24", 2), ("2.25", 2), ("2.26", 3)])
def test_nccl_before_2_27_gets_a_clear_line(built, tmp_path, nccl, api):
    """NCCL 2.23-2.26 look up ncclProfiler_v3..v1 only: the plugin says once that it needs 2.27+,
    hands out no context and leaves the mask 0, so NCCL sends no events."""
    proc, records = run_driver(built, tmp_path, "legacy", nccl)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"loaded": api, "init_rc": 0, "ctx": None, "mask": 0}
    line = (
        f"this NCCL offers profiler API v{api} only (NCCL 2.23-2.26); the C4 plugin needs NCCL 2.27 or later"
    )
    assert proc.stderr.count(line) == 1
    assert not list(records.glob("*.jsonl"))
