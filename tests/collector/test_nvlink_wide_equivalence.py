"""Wide NVLink rows with on-change error counters answer every reader exactly as per-link rows did.

The same fake-NVML node is sampled by two real GPU samplers: the old way (every counter on every
tick, stored one row per link as nvlink_samples was) and the new way (one wide row per GPU, error
counters sent on change and on keyframes). Each goes into its own real DuckDB store; the per-link
view, its rate view and the NVLink detector must give the same answers row for row.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from c4.agent.batcher import rows_to_table
from c4.agent.gpu import GpuSampler
from c4.agent.nvml import Nvml
from c4.analytics.hardware import COUNTER_RULES, counter_burst_findings
from c4.analytics.window import window_from_cursor
from c4.arrow_ipc import encode_ipc
from c4.catalogue import load
from c4.collector.store import PendingBatch, Store
from c4.collector.validate import Refusal, validate_batch
from c4.sim.fake_nvml import FakeNvml, gpu_entry

WIDE = "nvlink_gpu_samples"
VIEW = "nvlink_samples"
T0 = datetime(2026, 12, 4, 12, 0, 0)
TICKS = 40
KEYFRAME_TICKS = 7


class Clock:
    """The fake NVML's clock, stepped by the test."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def scenario() -> dict:
    """Three GPUs, one per NVLink generation, as one node (A100 12 links, H100 and B200 18)."""
    gpus = [gpu_entry(0, model="A100"), gpu_entry(1, model="H100"), gpu_entry(2, model="B200")]
    for g in gpus:
        g["link_counters"] = {}
    return {"start_s": 100.0, "gpus": gpus, "events": []}


def drive(sc: dict, tick: int) -> None:
    """Counters that stay put, that move now and then, that reset, and a field that errors for a while."""
    a100, h100, b200 = sc["gpus"]
    if tick in (5, 6, 20):  # a burst on one A100 link, in steps
        a100["link_counters"]["3"] = {"replay_errors": 4 * tick, "crc_data_errors": tick}
    if tick == 12:  # a driver reload: H100 link 2's counter drops (a reset)
        h100["link_counters"]["2"] = {"link_crc_errors": 1}
    elif tick == 3:
        h100["link_counters"]["2"] = {"link_crc_errors": 50}
    if 15 <= tick < 18:  # NVML answers an error for one field: NULL elements, not "unchanged"
        h100["errors"] = {"nvlink_replay_errors": "unknown"}
    else:
        h100.pop("errors", None)
    if tick >= 9:  # a link that keeps failing to recover, one more each tick (changes every tick)
        b200["link_counters"]["7"] = {"link_recovery_failed_events": tick, "symbol_errors": 3 * tick}
    if tick == 30:  # a counter near the top of its width that then goes down: a reset, as before
        b200["link_counters"]["1"] = {"rx_error_packets": 2**64 - 5}
    elif tick == 31:
        b200["link_counters"]["1"] = {"rx_error_packets": 2}


def sample_both(tmp_path) -> tuple[list[pa.Table], list[pa.Table]]:
    """(old per-link tables, new wide tables) per tick, from two real samplers reading the same node."""
    sc, clock = scenario(), Clock()
    old = GpuSampler(Nvml(FakeNvml(sc, clock=clock)), xid_events=False, processes=False, keyframe_ticks=1)
    new = GpuSampler(
        Nvml(FakeNvml(sc, clock=clock)), xid_events=False, processes=False, keyframe_ticks=KEYFRAME_TICKS
    )
    old.probe()
    new.probe()
    cat = load()
    spec = cat[WIDE]
    shape = cat.shape(VIEW)
    old_tables, new_tables = [], []
    for tick in range(TICKS):
        drive(sc, tick)
        clock.t += 1.0
        defaults = {"ts": T0 + timedelta(seconds=tick), "node": "n1", "job": "j"}
        every = old.sample(0)[WIDE]
        assert all(r[c.name] is not None for r in every for c in spec.columns if c.on_change)
        per_link = spec.element_rows(every)  # every counter carried: one row per link, as before
        old_tables.append(
            pa.Table.from_pylist([{**defaults, **r} for r in per_link], schema=shape.arrow_schema)
        )
        new_tables.append(rows_to_table(cat, WIDE, new.sample(0)[WIDE], defaults))
    return old_tables, new_tables


def old_store(path, tables: list[pa.Table]) -> duckdb.DuckDBPyConnection:
    """A DuckDB file as stores were before: nvlink_samples a table of per-link rows, its rate view on it."""
    shape = dataclasses.replace(load().shape(VIEW), stored_in=None)
    con = duckdb.connect(str(path))
    con.execute("SET python_enable_replacements = false")  # its other tables are absent, not Python names
    con.execute(shape.ddl())
    con.execute(shape.rate_view_ddl())
    con.register("_old_rows", pa.concat_tables(tables))
    con.execute(f'INSERT INTO "{VIEW}" SELECT * FROM _old_rows')
    con.unregister("_old_rows")
    return con


def new_store(path, tables: list[pa.Table]) -> Store:
    """The collector's store with the wide rows committed one batch per tick, as agents' batches are."""
    store = Store(path, load())
    spec = load()[WIDE]
    for seq, t in enumerate(tables, start=1):
        (result,) = store.commit([PendingBatch("agent-n1", seq, spec, t)])
        assert not result.error
    return store


def answers(cur, sql: str) -> list[tuple]:
    return cur.execute(sql).fetchall()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wide")
    old_tables, new_tables = sample_both(tmp)
    old = old_store(tmp / "old.duckdb", old_tables)
    new = new_store(tmp / "new.duckdb", new_tables)
    yield old, new.cursor(), old_tables, new_tables
    old.close()
    new.close()


ORDER = "ORDER BY node, gpu_index, link, ts"


def test_the_wide_store_holds_one_row_per_gpu_and_leaves_unchanged_counters_out(stores):
    old, new, old_tables, new_tables = stores
    assert sum(t.num_rows for t in old_tables) == TICKS * (12 + 18 + 18)
    assert sum(t.num_rows for t in new_tables) == TICKS * 3
    (stored,) = new.execute(f"SELECT count(*) FROM {WIDE}").fetchone()
    (not_sent,) = new.execute(f"SELECT count(*) FROM {WIDE} WHERE replay_errors IS NULL").fetchone()
    assert stored == TICKS * 3
    assert not_sent > TICKS  # most ticks carry no unchanged error counter
    # keyframes carry every on-change counter, even where every element is "not supported"
    keyframes = new.execute(
        f"SELECT count(*) FROM {WIDE} WHERE crc_flit_errors IS NOT NULL AND symbol_errors IS NOT NULL"
    ).fetchone()[0]
    assert keyframes >= 3 * (TICKS // KEYFRAME_TICKS)


def test_the_per_link_view_gives_every_row_of_the_per_link_table(stores):
    old, new, *_ = stores
    want = answers(old, f"SELECT * FROM {VIEW} {ORDER}")
    got = answers(new, f"SELECT * FROM {VIEW} {ORDER}")
    assert len(want) == TICKS * 48 and got == want
    cols_old = [d[0] for d in old.execute(f"SELECT * FROM {VIEW} LIMIT 0").description]
    cols_new = [d[0] for d in new.execute(f"SELECT * FROM {VIEW} LIMIT 0").description]
    assert cols_new == cols_old


def test_the_rate_view_gives_the_same_rates(stores):
    old, new, *_ = stores
    want = answers(old, f"SELECT * FROM {VIEW}_rate {ORDER}")
    got = answers(new, f"SELECT * FROM {VIEW}_rate {ORDER}")
    assert got == want
    # the data moved: the rates include the bursts, the reset and the errors as NULLs
    rates = dict(
        ((r[0], r[1]), r[2])
        for r in new.execute(
            f"SELECT gpu_index, epoch(ts)::BIGINT % 100, replay_errors_per_s FROM {VIEW}_rate "
            "WHERE link = 3 AND gpu_index = 0"
        ).fetchall()
    )
    assert rates[(0, 5)] == pytest.approx(20.0) and rates[(0, 7)] == 0.0
    nulls = new.execute(
        f"SELECT count(*) FROM {VIEW} WHERE gpu_index = 1 AND replay_errors IS NULL"
    ).fetchone()[0]
    assert nulls == 3 * 18  # three ticks of NVML errors, every link


def test_reading_a_window_gives_the_same_frames_and_findings(stores):
    old, new, *_ = stores
    now = T0 + timedelta(seconds=TICKS)
    rule = tuple(r for r in COUNTER_RULES if r["table"] == VIEW)
    for window_s in (8, 25, 60):  # windows starting between keyframes, and the whole run
        want = window_from_cursor(old, window_s, now)[VIEW]
        got = window_from_cursor(new, window_s, now)[VIEW]
        assert got.sort(["gpu_index", "link", "ts"]).equals(want.sort(["gpu_index", "link", "ts"]))
        assert counter_burst_findings({VIEW: got}, rule) == counter_burst_findings({VIEW: want}, rule)
    burst = window_from_cursor(new, 60, now)[VIEW].filter((pl.col("gpu_index") == 0) & (pl.col("link") == 3))
    assert burst["replay_errors"].max() - burst["replay_errors"].min() == 80  # the window saw the burst


def test_a_store_from_before_moves_its_per_link_rows_into_the_wide_table(stores, tmp_path):
    old, new, old_tables, _ = stores
    path = tmp_path / "upgraded.duckdb"
    old_store(path, old_tables).close()
    store = Store(path, load())
    try:
        cur = store.cursor()
        assert answers(cur, f"SELECT * FROM {VIEW} {ORDER}") == answers(old, f"SELECT * FROM {VIEW} {ORDER}")
        assert answers(cur, f"SELECT * FROM {VIEW}_rate {ORDER}") == answers(
            old, f"SELECT * FROM {VIEW}_rate {ORDER}"
        )
        assert cur.execute(f"SELECT count(*) FROM {WIDE}").fetchone()[0] == TICKS * 3
    finally:
        store.close()


def test_a_wide_batch_whose_lists_disagree_is_refused_by_name(stores):
    *_, new_tables = stores
    good = new_tables[1]  # a tick with unsent (NULL) error counters: accepted as is
    spec, table = validate_batch(load(), WIDE, load()[WIDE].version, encode_ipc(good), 1 << 24)
    assert table.num_rows == 3
    i = good.column_names.index("rx_data_bytes")
    short = good.column("rx_data_bytes").to_pylist()
    short[1] = short[1][:-1]  # one link missing on one GPU
    bad = good.set_column(i, good.schema.field(i), pa.array(short, good.schema.field(i).type))
    with pytest.raises(Refusal) as exc:
        validate_batch(load(), WIDE, load()[WIDE].version, encode_ipc(bad), 1 << 24)
    assert "'rx_data_bytes'" in str(exc.value) and "'link'" in str(exc.value) and "1 rows" in str(exc.value)


def test_a_window_read_looks_back_one_keyframe_period_only_and_stays_exact(stores):
    """With readers told keyframes come every KEYFRAME_TICKS s, the bounded read still fills every row."""
    old, new, *_ = stores
    spec = load()[WIDE]
    tight = dataclasses.replace(
        spec, element=dataclasses.replace(spec.element, keyframe_within_s=KEYFRAME_TICKS)
    )
    for first, last in ((9, 13), (15, 30), (22, 39)):  # windows starting between keyframes
        start, end = T0 + timedelta(seconds=first), T0 + timedelta(seconds=last)
        got = new.execute(f"{tight.element_window_sql()} {ORDER}", {"start": start, "end": end}).fetchall()
        want = old.execute(f"SELECT * FROM {VIEW} WHERE ts >= ? AND ts <= ? {ORDER}", [start, end]).fetchall()
        assert got == want and len(want) == (last - first + 1) * 48
