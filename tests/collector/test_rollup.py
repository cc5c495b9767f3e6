"""Rollups give the same numbers as the raw data over the same interval, at both resolutions.

A real DuckDB store with a table declared ``rollup = true``: gauges with NULLs, a counter that resets,
a 32-bit counter that wraps, a slow counter read every 10th tick, a node with a gap in its data and
late rows arriving after their bucket was rolled. "The same numbers" is defined in
``c4.catalogue.rollup``: min/max/last of the raw values or of the ``_rate`` view's per-sample rates,
means of the non-NULL samples each weighted once, increases and their seconds summed.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import time
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from c4.catalogue import Catalogue, CatalogueError, load
from c4.catalogue.rollup import rollup_name
from c4.collector import rollup
from c4.collector.rollup import floor_to, roll_all
from c4.collector.server import Collector
from c4.collector.store import PendingBatch, Store
from c4.config import CollectorConfig
from c4.sim.procs import start_collector

TOML = """
[tables.dev]
writer = "agent"
rollup = true
help = "a device sampled about once a second"
keys = ["node", "dev"]
columns = [
  { name = "dev", type = "INTEGER", kind = "label", help = "device" },
  { name = "model", type = "VARCHAR", kind = "label", help = "not a key: not in the rollup" },
  { name = "temp_c", type = "DOUBLE", kind = "gauge", unit = "C", help = "with NULLs" },
  { name = "mem_bytes", type = "UBIGINT", kind = "gauge", unit = "bytes", help = "integer gauge" },
  { name = "tx_bytes", type = "UBIGINT", kind = "counter", unit = "bytes", help = "resets" },
  { name = "pkts", type = "UBIGINT", kind = "counter", unit = "packets", wrap_bits = 32, help = "wraps" },
  { name = "errors", type = "UBIGINT", kind = "counter", unit = "errors", help = "read every 10th tick" },
  { name = "drops", type = "UBIGINT", kind = "counter", unit = "packets", help = "never moves" },
  { name = "stalls", type = "DOUBLE", kind = "counter", unit = "s", help = "never moves either" },
  { name = "resets", type = "UBIGINT", kind = "counter", unit = "events", help = "never moves, read every 7th" },
]
"""
START = datetime(2026, 12, 1, 10, 0, 0)
HOURS = 3
GAUGES = ("temp_c", "mem_bytes")
RATES = ("tx_bytes", "pkts", "errors", "drops", "stalls", "resets")  # the last three never move


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _rows(rng: np.random.Generator, node: str, dev: int, t0: float, t1: float) -> dict[str, list]:
    """About 1 Hz samples of one device in [t0, t1) seconds after START, jittered, with resets and wraps."""
    secs = np.arange(t0, t1, 1.0) + rng.uniform(0, 0.3, int(t1 - t0))
    n = len(secs)
    temp = rng.normal(60, 5, n)
    temp[rng.random(n) < 0.05] = np.nan
    tx = np.cumsum(rng.integers(1_000, 1_000_000, n)).astype(np.uint64)
    cut = n // 3  # the counter resets: the driver reloaded
    tx[cut:] = tx[cut:] - tx[cut] + rng.integers(0, 1000)
    pkts = (2**32 - 50_000 + np.cumsum(rng.integers(0, 2_000, n))) % 2**32  # wraps past 2^32 early on
    errors = np.cumsum(rng.integers(0, 3, n)).astype(object)
    errors[np.arange(n) % 10 != 0] = None
    return {
        "ts": [START + timedelta(seconds=float(s)) for s in secs],
        "node": [node] * n,
        "job": [""] * n,
        "dev": [dev] * n,
        "model": ["x"] * n,
        "temp_c": [None if math.isnan(v) else float(v) for v in temp],
        "mem_bytes": rng.integers(0, 2**40, n).tolist(),
        "tx_bytes": tx.tolist(),
        "pkts": pkts.tolist(),
        "errors": errors.tolist(),
        "drops": [3] * n,  # steady counters: their rates are the one shared all-zero result (counter_rates)
        "stalls": [1.5] * n,
        "resets": [2 if i % 7 == 0 else None for i in range(n)],
    }


def _insert(store: Store, cols: dict[str, list]) -> None:
    spec = store.catalogue["dev"]
    store.commit([PendingBatch("", 0, spec, pa.Table.from_pydict(cols, schema=spec.arrow_schema))])


@pytest.fixture
def store(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "dev.toml").write_text(TOML)
    s = Store(tmp_path / "c4.duckdb", Catalogue.from_dir(tmp_path / "cat"))
    rng = np.random.default_rng(7)
    end_s = HOURS * 3600
    for node in ("a", "b"):
        for dev in (0, 1):
            if (node, dev) == ("b", 1):  # a gap of 45 s, within the rate look-back, across a minute's end
                _insert(s, _rows(rng, node, dev, 0, 4000))
                _insert(s, _rows(rng, node, dev, 4045, end_s))
            else:
                _insert(s, _rows(rng, node, dev, 0, end_s))
    yield s
    s.close()


def _raw(cur, a: datetime, b: datetime) -> dict:
    """Per (node, dev): the statistics over [a, b) from the raw table and its _rate view."""
    parts = []
    for g in GAUGES:
        parts += [
            f"min({g})::DOUBLE",
            f"avg({g})::DOUBLE",
            f"max({g})::DOUBLE",
            f"arg_max({g}, ts) FILTER (WHERE {g} IS NOT NULL)::DOUBLE",
            f"count({g})",
        ]
    gauges = cur.execute(
        f"SELECT node, dev, count(*), {', '.join(parts)} FROM dev WHERE ts >= ? AND ts < ? GROUP BY ALL",
        [a, b],
    ).fetchall()
    parts = []
    for c in RATES:
        r = f"{c}_per_s"
        parts += [
            f"min({r})",
            f"avg({r})",
            f"max({r})",
            f"arg_max({r}, ts) FILTER (WHERE {r} IS NOT NULL)",
            f"count({r})",
        ]
    rates = cur.execute(
        f"SELECT node, dev, {', '.join(parts)} FROM dev_rate WHERE ts >= ? AND ts < ? GROUP BY ALL", [a, b]
    ).fetchall()
    out = {(r[0], r[1]): list(r[2:]) for r in gauges}
    for r in rates:
        out[(r[0], r[1])] += list(r[2:])
    return out


def _rolled(cur, table: str, a: datetime, b: datetime) -> dict:
    """The same statistics over [a, b) combined from a rollup's buckets."""
    parts = []
    for v in [*GAUGES, *(f"{c}_rate" for c in RATES)]:
        parts += [
            f"min({v}_min)",
            f"sum({v}_mean * {v}_n) / nullif(sum({v}_n), 0)",
            f"max({v}_max)",
            f"arg_max({v}_last, ts) FILTER (WHERE {v}_last IS NOT NULL)",
            f"sum({v}_n)",
        ]
    rows = cur.execute(
        f"SELECT node, dev, sum(samples), {', '.join(parts)} FROM {table} WHERE ts >= ? AND ts < ? GROUP BY ALL",
        [a, b],
    ).fetchall()
    return {(r[0], r[1]): list(r[2:]) for r in rows}


def _same(raw: dict, rolled: dict) -> None:
    assert raw.keys() == rolled.keys()
    for key, want in raw.items():
        got = rolled[key]
        assert len(got) == len(want)
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            if w is None or g is None:
                assert w is None and g is None, (key, i, w, g)
            else:
                assert g == pytest.approx(w, rel=1e-9, abs=1e-9), (key, i, w, g)


def _bytes_moved(cur, a: datetime, b: datetime) -> dict:
    """Per (node, dev) the counter's increase over [a, b), computed in Python from the raw readings."""
    rows = cur.execute("SELECT node, dev, ts, tx_bytes FROM dev ORDER BY node, dev, ts").fetchall()
    out: dict = {}
    prev: dict = {}
    for node, dev, ts, v in rows:
        p = prev.get((node, dev))
        prev[(node, dev)] = v
        if p is None or not (a <= ts < b):
            continue
        out[(node, dev)] = out.get((node, dev), 0) + (v - p if v >= p else v)
    return out


@pytest.mark.parametrize("chunk_rows", [7, 2000, None])
def test_rollups_equal_raw_over_the_same_interval_at_both_resolutions(store, monkeypatch, chunk_rows):
    """Whole slices, and slices computed a chunk of whole devices at a time: a device longer than a chunk
    (7 rows), a chunk ending inside the second device (2,000 rows of ~1,300 a device), or all in one."""
    monkeypatch.setattr(rollup, "MAX_ROWS_PER_SLICE", 5000)  # rolled in ~20-minute slices: no seam shows
    if chunk_rows:
        monkeypatch.setattr(rollup, "ROWS_PER_CHUNK", chunk_rows)
    now = START + timedelta(hours=HOURS, minutes=1)
    assert roll_all(store, now=now, recheck_s=300) > 0
    cur = store.cursor()
    m, h = rollup_name("dev", "1m"), rollup_name("dev", "1h")
    assert cur.execute(f"SELECT count(DISTINCT ts) FROM {m}").fetchone()[0] == HOURS * 60
    assert cur.execute(f"SELECT count(DISTINCT ts) FROM {h}").fetchone()[0] == HOURS
    # every bucket of every key, at the minute; and whole hours from both resolutions
    for a, b in [
        (START + timedelta(minutes=17), START + timedelta(minutes=18)),
        (START, START + timedelta(hours=HOURS)),
    ]:
        _same(_raw(cur, a, b), _rolled(cur, m, a, b))
    for hour in range(HOURS):
        a, b = START + timedelta(hours=hour), START + timedelta(hours=hour + 1)
        _same(_raw(cur, a, b), _rolled(cur, m, a, b))
        _same(_raw(cur, a, b), _rolled(cur, h, a, b))
    a, b = (
        START + timedelta(minutes=5),
        START + timedelta(minutes=137),
    )  # an odd span across the reset and gap
    _same(_raw(cur, a, b), _rolled(cur, m, a, b))
    # bytes moved / seconds: the increases add up to the counter's own, resets included
    moved = _bytes_moved(cur, START, START + timedelta(hours=HOURS))
    got = dict(
        ((n, d), v)
        for n, d, v in cur.execute(
            f"SELECT node, dev, sum(tx_bytes_increase) FROM {h} GROUP BY ALL"
        ).fetchall()
    )
    assert got == pytest.approx(moved, rel=1e-12)
    # a second pass finds nothing to do
    assert roll_all(store, now=now, recheck_s=300) == 0


def test_late_rows_within_the_skew_re_roll_their_bucket(store):
    now = START + timedelta(hours=HOURS, seconds=5)
    roll_all(store, now=now, recheck_s=300)
    cur = store.cursor()
    late_at = (
        HOURS * 3600 - 120.5
    )  # half a second before a bucket rolled already ends: the next sample is in the next
    rows = _rows(np.random.default_rng(1), "a", 0, late_at, late_at + 1)
    rows["temp_c"] = [1000.0]  # hotter than anything: it must show as the bucket's max
    rows["tx_bytes"] = [10**15]  # the next sample's rate then sees a reset
    _insert(store, rows)
    later = now + timedelta(seconds=50)
    assert roll_all(store, now=later, recheck_s=300) > 0
    m = rollup_name("dev", "1m")
    bucket = START + timedelta(seconds=late_at - late_at % 60)
    assert cur.execute(
        f"SELECT temp_c_max FROM {m} WHERE ts = ? AND node = 'a' AND dev = 0", [bucket]
    ).fetchone() == (1000.0,)
    a, b = START + timedelta(hours=HOURS - 1), START + timedelta(hours=HOURS)
    _same(_raw(cur, a, b), _rolled(cur, m, a, b))
    # the hour re-rolls from its minutes while within the skew
    _same(_raw(cur, a, b), _rolled(cur, rollup_name("dev", "1h"), a, b))


def test_a_rollup_declaration_is_checked(tmp_path):
    (tmp_path / "t.toml").write_text(
        '[tables.x]\nhelp = "h"\nrollup = "yes"\ncolumns = [{ name = "v", type = "DOUBLE", kind = "gauge", help = "v" }]\n'
    )
    with pytest.raises(CatalogueError, match="x.*rollup must be true or false"):
        Catalogue.from_dir(tmp_path)
    (tmp_path / "t.toml").write_text(
        '[tables.x]\nhelp = "h"\nrollup = true\ncolumns = [{ name = "l", type = "VARCHAR", kind = "label", help = "l" }]\n'
    )
    with pytest.raises(CatalogueError, match="x.*needs a time column, keys and a gauge or counter"):
        Catalogue.from_dir(tmp_path)


def _gpu_rows(end: datetime, hours: float, step_s: float, nodes: int) -> pa.Table:
    """gpu_samples of ``nodes`` x 8 GPUs every ``step_s`` seconds over the ``hours`` before ``end``."""
    spec = load()["gpu_samples"]
    rng = np.random.default_rng(3)
    secs = np.arange(-hours * 3600, 0, step_s)
    s, n, g = (a.ravel() for a in np.meshgrid(secs, np.arange(nodes), np.arange(8), indexing="ij"))
    count = len(s)
    cols = {
        "ts": pa.array(np.datetime64(end, "us") + (s * 1e6).astype("timedelta64[us]")),
        "node": pa.array([f"host{i}" for i in n]),
        "job": pa.array([""] * count),
        "gpu_index": pa.array(g, pa.int32()),
        "util_gpu_pct": pa.array(rng.uniform(0, 100, count)),
        "power_w": pa.array(rng.uniform(100, 700, count)),
        "energy_mj": pa.array((s + hours * 3600) * 500_000 + g, pa.uint64()),
    }
    arrays = [
        cols[f.name].cast(f.type) if f.name in cols else pa.nulls(count, f.type) for f in spec.arrow_schema
    ]
    return pa.Table.from_arrays(arrays, schema=spec.arrow_schema)


#: The backlog a collector finds on its first start: several slices (MAX_BUCKETS_PER_RUN) of minutes.
HOURS_BEHIND = 13


def _differences(con, a: str, b: str, table: str) -> int:
    """Rows of ``table`` in database ``a`` and ``b`` that differ (by key and bucket), beyond float rounding."""
    spec = load()[table]
    on = " AND ".join(f'x."{k}" = y."{k}"' for k in ("ts", *spec.keys))
    same = " AND ".join(
        f'(x."{c}" IS NOT DISTINCT FROM y."{c}" OR abs(x."{c}" - y."{c}") <= 1e-9 * abs(y."{c}") + 1e-9)'
        for c in spec.column_names
        if c not in ("ts", *spec.keys)
    )
    return con.execute(
        f"SELECT count(*) FROM {a}.{table} x FULL JOIN {b}.{table} y ON {on} WHERE NOT coalesce({same}, false)"
    ).fetchone()[0]


def test_a_collector_killed_mid_rollup_loses_and_doubles_no_bucket(tmp_path):
    """A real collector catching up a day of gpu_samples is SIGKILLed while rolling; after a restart
    the rollups equal those rolled in one go from a copy of the same raw rows."""
    end = _utcnow().replace(second=0, microsecond=0) - timedelta(minutes=10)
    work, pristine = tmp_path / "run", tmp_path / "pristine.duckdb"
    s = Store(work / "c4.duckdb", load())
    s.commit([PendingBatch("", 0, load()["gpu_samples"], _gpu_rows(end, HOURS_BEHIND, 20.0, 4))])
    s.close()
    shutil.copy(work / "c4.duckdb", pristine)
    env = {"C4_COLLECTOR_ROLLUP_INTERVAL_S": "0.05", "C4_COLLECTOR_DIAGNOSE_INTERVAL_S": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        proc = start_collector(work)
        log = work / "collector.log"
        deadline = time.monotonic() + 60
        while "rollup table=gpu_samples_1m" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.proc.kill()  # SIGKILL: no checkpoint, no clean close; the rollup was mid-way
        proc.proc.wait(10)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    s = Store(work / "c4.duckdb", load())
    try:
        partial = s.cursor().execute("SELECT count(*) FROM gpu_samples_1m").fetchone()[0]
        assert 0 < partial < HOURS_BEHIND * 60 * 32, "the kill fell between the first slice and the end"
        now = _utcnow()
        roll_all(s, now=now)  # the restarted collector's task does the rest
    finally:
        s.close()
    p = Store(pristine, load())
    roll_all(p, now=now)
    p.close()
    con = duckdb.connect()
    con.execute(f"ATTACH '{work / 'c4.duckdb'}' AS k (READ_ONLY)")
    con.execute(f"ATTACH '{pristine}' AS p (READ_ONLY)")
    assert con.execute("SELECT count(*) FROM p.gpu_samples_1m").fetchone()[0] == HOURS_BEHIND * 60 * 32
    closed = floor_to(now, 3600)
    raw = con.execute("SELECT count(*) FROM p.gpu_samples WHERE ts < ?", [closed]).fetchone()[0]
    assert con.execute("SELECT sum(samples) FROM k.gpu_samples_1h").fetchone()[0] == raw
    for table in ("gpu_samples_1m", "gpu_samples_1h"):
        assert _differences(con, "k", "p", table) == 0, table
        doubled = f"SELECT count(*) - count(DISTINCT (ts, node, gpu_index)) FROM k.{table}"
        assert con.execute(doubled).fetchone()[0] == 0, table


def test_retention_keeps_each_resolution_for_its_own_time(tmp_path):
    """Minutes and hours older than their retention go; raw rows follow retention_s; newer rows stay."""
    cfg = CollectorConfig(
        listen="127.0.0.1:0",
        db=tmp_path / "c4.duckdb",
        retention_s=86400,
        rollup_minute_retention_s=2 * 86400,
        rollup_hour_retention_s=30 * 86400,
    )
    now = _utcnow().replace(minute=0, second=0, microsecond=0)
    ages_days = (0.5, 1.5, 3, 20, 40)

    async def scenario() -> dict[str, list]:
        col = Collector(cfg)
        await col.start()
        try:
            batches = []
            for name in ("gpu_samples", "gpu_samples_1m", "gpu_samples_1h"):
                spec = col.store.catalogue[name]
                rows = [
                    {"ts": now - timedelta(days=d), "node": "n", "job": "", "gpu_index": 0} for d in ages_days
                ]
                batches.append(PendingBatch.internal(spec, rows))
            assert all(not r.error for r in await col.writer.submit_many_async(batches))
            await col.retain()
            cur = col.store.cursor()
            return {
                name: [r[0] for r in cur.execute(f"SELECT ts FROM {name} ORDER BY ts DESC").fetchall()]
                for name in ("gpu_samples", "gpu_samples_1m", "gpu_samples_1h")
            }
        finally:
            await col.stop()

    left = asyncio.run(scenario())
    kept = {name: [round((now - ts).total_seconds() / 86400, 1) for ts in v] for name, v in left.items()}
    assert kept == {"gpu_samples": [0.5], "gpu_samples_1m": [0.5, 1.5], "gpu_samples_1h": [0.5, 1.5, 3, 20]}


def test_the_last_partial_hour_before_an_idle_spell_is_rolled(store):
    """Samples stop half-way through an hour (the cluster idles): that hour still rolls once it has passed."""
    cur = store.cursor()
    cur.execute("DELETE FROM dev WHERE ts >= ?", [START + timedelta(hours=2, minutes=30)])
    roll_all(store, now=START + timedelta(hours=5))
    raw = cur.execute("SELECT count(*) FROM dev").fetchone()[0]
    hours = cur.execute(f"SELECT count(DISTINCT ts), sum(samples) FROM {rollup_name('dev', '1h')}").fetchone()
    assert hours == (3, raw)


def test_rollups_are_computed_on_a_thread_of_lower_priority(tmp_path, monkeypatch):
    """A minute's rollups of 2,000 nodes are seconds of CPU: they run on a thread of their own at nice
    ROLLUP_NICE, so that the writer and the gRPC loop (priority unchanged) keep their cores; the OS knows
    the thread as c4-rollup."""
    import threading
    from pathlib import Path

    from c4.catalogue import load
    from c4.collector import rollup
    from c4.collector.ingest import Metrics
    from c4.collector.store import Store
    from c4.collector.writer import Writer

    seen: list[tuple[str, int]] = []
    real_prepare = rollup.prepare

    def prepare(*args):
        tid = threading.get_native_id()
        seen.append(
            (Path(f"/proc/self/task/{tid}/comm").read_text().strip(), os.getpriority(os.PRIO_PROCESS, tid))
        )
        return real_prepare(*args)

    monkeypatch.setattr(rollup, "prepare", prepare)
    store = Store(tmp_path / "c4.duckdb", load())
    writer = Writer(store)
    rollups = rollup.Rollups(store, writer, Metrics(), recheck_s=300.0)
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    try:
        asyncio.run(rollups.run())
    finally:
        rollups.close()
        writer.close()
        store.close()
    assert seen and {name for name, _ in seen} == {"c4-rollup"}  # its name in the OS (top -H)
    assert {nice for _, nice in seen} == {min(19, own + rollup.ROLLUP_NICE)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own  # the caller's is unchanged


def _table_rows(cur, table: str) -> list[tuple]:
    return cur.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def test_a_slice_written_in_parts_between_ingest_commits_stores_what_one_transaction_does(store, monkeypatch):
    """The collector writes a slice's rollup rows in writer jobs of WRITE_PART_BYTES (ingest commits go in
    between): the same rows as written in one transaction."""
    from c4.collector.ingest import Metrics
    from c4.collector.writer import Writer

    m = rollup_name("dev", "1m")
    now = START + timedelta(hours=HOURS, seconds=5)
    step = rollup.Step(store.catalogue["dev"], "1m")
    piece = rollup.prepare(store, step, now, 300.0)
    parts = piece.writes(4096)
    assert len(parts) > 10  # a few rows each
    writer = Writer(store)
    rollups = rollup.Rollups(store, writer, Metrics(), recheck_s=300.0)
    monkeypatch.setattr(rollup, "WRITE_PART_BYTES", 4096)
    try:
        asyncio.run(rollups.run())  # the three hours' backlog, in one pass
    finally:
        rollups.close()
        writer.close()
    cur = store.cursor()
    in_parts = _table_rows(cur, m)
    cur.execute(f"DELETE FROM {m}")
    roll_all(store, now=now)
    assert _table_rows(cur, m) == in_parts and len(in_parts) == 4 * HOURS * 60


def test_a_slice_written_in_part_is_rolled_again_however_long_the_collector_was_down(store):
    """A collector stopped between two of a slice's writer jobs leaves a bucket written in part, the newest
    rolled: the next pass, even past ``recheck_s``, rolls it again (the plan starts from the newest bucket)."""
    m = rollup_name("dev", "1m")
    now = START + timedelta(minutes=30, seconds=5)
    step = rollup.Step(store.catalogue["dev"], "1m")
    piece = rollup.prepare(store, step, now, 0.0)
    jobs = piece.writes(piece.rows.nbytes * 3 // piece.rows.num_rows + 1)  # 3 rows a job, 4 devices a bucket
    stop = len(jobs) // 2 if len(jobs) // 2 % 4 else len(jobs) // 2 + 1
    for job in jobs[:stop]:  # then the collector stops
        job(store)
    cur = store.cursor()
    newest = cur.execute(
        f"SELECT max(ts), sum(samples) FROM {m} WHERE ts = (SELECT max(ts) FROM {m})"
    ).fetchone()
    raw = cur.execute(
        "SELECT count(*) FROM dev WHERE ts >= ? AND ts < ?", [newest[0], newest[0] + timedelta(minutes=1)]
    ).fetchone()[0]
    assert newest[1] < raw  # the newest bucket is written in part
    later = now + timedelta(hours=1)  # down for longer than recheck_s
    roll_all(store, now=later, recheck_s=0.0)
    a, b = START, START + timedelta(minutes=30)
    _same(_raw(cur, a, b), _rolled(cur, m, a, b))


def test_one_pass_catches_up_a_backlog_of_several_slices(store, monkeypatch):
    """Slices are bounded (here by 30 minutes' rows); one of the collector's passes rolls slice after slice until
    current (up to MAX_SLICES_PER_PASS each), where a pass of one slice each fell behind at 2,000 nodes."""
    from c4.collector.ingest import Metrics
    from c4.collector.writer import Writer

    monkeypatch.setattr(rollup, "MAX_ROWS_PER_SLICE", 4 * 60 * 30)
    monkeypatch.setattr(rollup, "_now", lambda: START + timedelta(hours=HOURS, seconds=5))
    writer = Writer(store)
    rollups = rollup.Rollups(store, writer, Metrics(), recheck_s=300.0)
    try:
        first = asyncio.run(rollups.run())
        again = asyncio.run(rollups.run())
    finally:
        rollups.close()
        writer.close()
    m = rollup_name("dev", "1m")
    assert first[m] == 4 * HOURS * 60 and m not in again  # every minute in one pass (six slices)
    cur = store.cursor()
    a, b = START, START + timedelta(hours=HOURS)
    _same(_raw(cur, a, b), _rolled(cur, m, a, b))


def test_a_pass_that_finds_the_lease_lost_stops_after_the_slice_it_wrote(store, monkeypatch):
    """On a lake only the lease holder rolls up: a pass under way when the lease goes finishes the slice it is
    writing (never cut short) and rolls no further one beside the new leader."""
    from c4.collector.ingest import Metrics
    from c4.collector.writer import Writer

    monkeypatch.setattr(rollup, "MAX_ROWS_PER_SLICE", 4 * 60 * 30)
    monkeypatch.setattr(rollup, "_now", lambda: START + timedelta(hours=HOURS, seconds=5))
    asked: list[int] = []

    def leading() -> bool:  # the lease goes while the first slice is written
        asked.append(1)
        return len(asked) == 1

    writer = Writer(store)
    rollups = rollup.Rollups(store, writer, Metrics(), recheck_s=300.0, leading=leading)
    try:
        written = asyncio.run(rollups.run())
    finally:
        rollups.close()
        writer.close()
    assert written == {rollup_name("dev", "1m"): 4 * 30}  # one slice of 30 minutes, nothing after it
