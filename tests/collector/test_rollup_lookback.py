"""The rollups read only the look-back rows their first rates need, and give the rollup of the whole look-back.

Per entity the look-back starts at the last reading of each counter (``c4.collector.rollup_lookback``).
The wide cases are hand-made rows a sampler sends rarely: a link's counter NULL (an NVML error) in the
last rows before the minute, an on-change error counter that stops being reported, a link list that changes.
Each is compared with the per-element view's rollup, which reads the whole look-back.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from c4.agent.batcher import rows_to_table
from c4.catalogue import Catalogue, load
from c4.collector.rollup import raw_sql, view_minute_rows, wide_minute_rows, wide_sql
from c4.collector.store import PendingBatch, Store

WIDE = "nvlink_gpu_samples"
VIEW = "nvlink_samples"
T0 = datetime(2026, 12, 4, 12, 0, 0)
START = T0 + timedelta(minutes=3)  # the minute rolled: [START, START + 1 min)


def _count(store: Store, sql: str) -> int:
    cur = store.cursor()
    try:
        return cur.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
    finally:
        cur.close()


def _same(want: pa.Table, got: pa.Table) -> None:
    """Two rollup tables hold the same rows (floats to 1e-9), whatever their order."""
    assert got.schema == want.schema and got.num_rows == want.num_rows > 0
    keys = [k for k in ("ts", "node", "gpu_index", "link", "dev") if k in want.column_names]
    order = [(k, "ascending") for k in keys]
    for w, g in zip(want.sort_by(order).to_pylist(), got.sort_by(order).to_pylist(), strict=True):
        for name, value in w.items():
            if value is None or g[name] is None or isinstance(value, str | datetime):
                assert g[name] == value, (w, name)
            else:
                assert g[name] == pytest.approx(value, rel=1e-9, abs=1e-9), (w, name)


SCALAR_TOML = """
[tables.dev]
writer = "agent"
rollup = true
help = "a device"
keys = ["node", "dev"]
columns = [
  { name = "dev", type = "INTEGER", kind = "label", help = "device" },
  { name = "temp_c", type = "DOUBLE", kind = "gauge", unit = "C", help = "a gauge" },
  { name = "tx_bytes", type = "UBIGINT", kind = "counter", unit = "bytes", help = "read every tick" },
  { name = "errors", type = "UBIGINT", kind = "counter", unit = "errors", help = "read every 25th tick" },
  { name = "absent", type = "UBIGINT", kind = "counter", unit = "errors", help = "never read" },
]
"""


def test_a_scalar_tables_look_back_is_cut_at_each_counters_last_reading(tmp_path):
    """Of the minute before, only the rows from each device's last ``errors`` reading on are read (and a device
    with no look-back row at all still rolls); the minute's rollup is the one of the whole look-back, whose
    first ``errors`` rate spans back to that reading."""
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "dev.toml").write_text(SCALAR_TOML)
    cat = Catalogue.from_dir(tmp_path / "cat")
    store = Store(tmp_path / "c4.duckdb", cat)
    try:
        spec = cat["dev"]
        rows: dict[str, list] = {c: [] for c in spec.arrow_schema.names}
        for dev, first_s in ((0, 0), (1, 0), (2, 185)):  # device 2 starts within the minute rolled
            for s in range(first_s, 250):
                rows["ts"].append(T0 + timedelta(seconds=s, milliseconds=dev))
                rows["node"].append("n")
                rows["job"].append("")
                rows["dev"].append(dev)
                rows["temp_c"].append(40.0 + s % 7)
                rows["tx_bytes"].append(1000 * s * (dev + 1))
                rows["errors"].append(s // 3 if (s + 10 * dev) % 25 == 0 else None)
                rows["absent"].append(None)
        (result,) = store.commit(
            [PendingBatch("", 0, spec, pa.Table.from_pydict(rows, schema=spec.arrow_schema))]
        )
        assert not result.error
        end = START + timedelta(minutes=1)
        target = cat["dev_1m"]
        cur = store.cursor()
        got = view_minute_rows(cur, spec, START, end, 60, target)
        want = view_minute_rows(cur, spec, START, end, 60, target, lookback_cut=False)
        cut = _count(store, raw_sql(spec, START, end))
        whole = _count(store, raw_sql(spec, START, end, lookback_cut=False))
        cur.close()
        _same(want, got)
        in_minute = 60 + 60 + 55
        # errors were last read 5 s (device 0, at 175 s) and 15 s (device 1, at 165 s) before the minute
        assert (whole - in_minute, cut - in_minute) == (120, 5 + 15)
        rates = {r["dev"]: r["errors_rate_n"] for r in got.to_pylist()}
        assert rates == {0: 2, 1: 2, 2: 1}  # read at 200 and 225 s, 190 and 215 s, 205 and 230 s
    finally:
        store.close()


def _wide_row(cat: Catalogue, second: int, links: list[int], **lists) -> pa.Table:
    row = {"gpu_index": 0, "gpu_uuid": "GPU-0", "link": links, **lists}
    return rows_to_table(cat, WIDE, [row], {"ts": T0 + timedelta(seconds=second), "node": "n9", "job": "j"})


def _wide_store(tmp_path, row_of) -> Store:
    """A store of one GPU's wide rows, one a second for four minutes, ``row_of(second)`` each."""
    cat = load()
    store = Store(tmp_path / "c4.duckdb", cat)
    for s in range(0, 240):
        links, lists = row_of(s)
        (result,) = store.commit([PendingBatch("", 0, cat[WIDE], _wide_row(cat, s, links, **lists))])
        assert not result.error
    return store


def _wide_vs_view(store: Store) -> tuple[pa.Table, pa.Table]:
    cat = store.catalogue
    view, wide, target = cat.shape(VIEW), cat[WIDE], cat[f"{VIEW}_1m"]
    end = START + timedelta(minutes=1)
    cur = store.cursor()
    try:
        got = wide_minute_rows(cur, view, wide, START, end, 60, target)
        want = view_minute_rows(cur, view, START, end, 60, target, wide)
    finally:
        cur.close()
    assert got is not None
    return want, got


def _lookback_rows(store: Store) -> int:
    cat = store.catalogue
    sql = wide_sql(cat.shape(VIEW), cat[WIDE], START, START + timedelta(minutes=1))
    return _count(store, sql) - 60


LINKS = [0, 1, 2]
TX = lambda s: [1000 * s * (k + 1) for k in LINKS]  # noqa: E731


def test_a_steady_gpus_look_back_is_its_last_row_and_its_keyframes(tmp_path):
    """Every link read each second, an error counter sent on change (keyframes every 30 s): the wide path reads
    the last row before the minute and the lists carried before it (for the fill), not the whole minute."""
    store = _wide_store(
        tmp_path,
        lambda s: (LINKS, {"tx_data_bytes": TX(s), "replay_errors": [s // 40] * 3 if s % 30 == 0 else None}),
    )
    try:
        want, got = _wide_vs_view(store)
        _same(want, got)
        # carried at 0, 30, ..., 150 (the fill reads from 120 s before the look-back), and the row at 179 s
        assert _lookback_rows(store) == 6 + 1
    finally:
        store.close()


def test_a_link_unread_in_the_last_rows_before_the_minute_keeps_its_last_reading(tmp_path):
    """Link 1's traffic counter is NULL (an NVML error) from 150 s on, and read again in the minute: its first
    rate spans back to its reading at 149 s, as in the view, although the GPU's last row (179 s) lacks it."""

    def row_of(s):
        tx = TX(s)
        if 150 <= s < 185:
            tx[1] = None
        return LINKS, {"tx_data_bytes": tx}

    store = _wide_store(tmp_path, row_of)
    try:
        want, got = _wide_vs_view(store)
        _same(want, got)
        (link1,) = [r for r in got.to_pylist() if r["link"] == 1]
        assert link1["tx_data_bytes_increase"] == 2000 * (239 - 149)
        assert _lookback_rows(store) == 179 - 149 + 1  # from the last row with every link read
    finally:
        store.close()


def test_an_error_counter_that_stops_being_reported_reads_the_whole_look_back(tmp_path):
    """Link 2's replay_errors are reported (keyframes every 30 s), then NULL in the list carried at 160 s, then
    reported again at 200 s: its first rate in the minute is from its last filled reading (159 s), which the
    view has; the wide path reads every look-back row to have it too."""

    def row_of(s):
        replay = None
        if s % 30 == 0 or s in (160, 200):
            replay = [1, 2, None if 160 <= s < 200 else 3 + s // 100]
        return LINKS, {"tx_data_bytes": TX(s), "replay_errors": replay}

    store = _wide_store(tmp_path, row_of)
    try:
        want, got = _wide_vs_view(store)
        _same(want, got)
        (link2,) = [r for r in got.to_pylist() if r["link"] == 2]
        # 4 until 160 s, 5 from 200 s: the first rate over 41 s, then 39 of one second each
        assert (link2["replay_errors_increase"], link2["replay_errors_span_s"]) == (1, 41 + 39)
    finally:
        store.close()


def test_a_link_list_that_changes_before_the_minute_reads_the_whole_look_back(tmp_path):
    """Link 3 is in the GPU's list until 170 s and back in the minute: its first rate is from its reading at
    169 s, though the rows after it (every listed link read) do not list it."""

    def row_of(s):
        links = [0, 1, 2] if 170 <= s < 190 else [0, 1, 2, 3]
        return links, {"tx_data_bytes": [1000 * s * (k + 1) for k in links]}

    store = _wide_store(tmp_path, row_of)
    try:
        want, got = _wide_vs_view(store)
        _same(want, got)
        (link3,) = [r for r in got.to_pylist() if r["link"] == 3]
        assert link3["tx_data_bytes_increase"] == 4000 * (239 - 169)
    finally:
        store.close()
