"""NVLink rollups, per link from the wide table's per-element view, give the raw numbers over the same interval.

A real fake-NVML node (A100, H100, B200) sampled by the real GPU sampler, wide rows with error counters sent
on change and on keyframes, committed to a real store and rolled by the collector's own code. Per link the
minute and hour rollups give what the ``nvlink_samples`` view and its ``_rate`` view give: counter bursts, a
reset and NVML errors (NULL elements) included.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from c4.agent.batcher import rows_to_table
from c4.agent.gpu import GpuSampler
from c4.agent.nvml import Nvml
from c4.catalogue import TABLES_DIR, Catalogue, load
from c4.catalogue.rollup import rolled_gauges
from c4.collector import rollup
from c4.collector.rollup import Step, retain_rollups, roll_all, view_minute_rows, wide_minute_rows
from c4.collector.store import PendingBatch, Store
from c4.sim.fake_nvml import FakeNvml, gpu_entry

WIDE = "nvlink_gpu_samples"
VIEW = "nvlink_samples"
T0 = datetime(2026, 12, 4, 12, 0, 0)
TICKS = 200  # three minutes and a bit, keyframes every 7 ticks: fills cross minute boundaries
KEYFRAME_TICKS = 7
NOW = T0 + timedelta(hours=1, minutes=5)
RATES = [c.name for c in load().shape(VIEW).counters]


class Clock:
    """The fake NVML's clock, stepped by the test."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _drive(sc: dict, tick: int) -> None:
    """Error bursts now and then, a reset, an NVML error for a while and a link failing every tick."""
    a100, h100, b200 = sc["gpus"]
    if tick % 37 in (5, 6):
        a100["link_counters"]["3"] = {"replay_errors": 4 * tick, "crc_data_errors": tick}
    if tick == 3:
        h100["link_counters"]["2"] = {"link_crc_errors": 50}
    elif tick == 70:  # a driver reload: the counter drops
        h100["link_counters"]["2"] = {"link_crc_errors": 1}
    if 115 <= tick < 125:
        h100["errors"] = {"nvlink_replay_errors": "unknown"}
    else:
        h100.pop("errors", None)
    if tick >= 90:
        b200["link_counters"]["7"] = {"link_recovery_failed_events": tick, "symbol_errors": 3 * tick}


def _catalogue(tmp) -> Catalogue:
    """The shipped catalogue, which declares the NVLink rollup (gpu.toml)."""
    cat = Catalogue.from_dir(TABLES_DIR)
    assert cat[WIDE].rollup and f"{VIEW}_1m" in cat.tables
    return cat


def _sampled_store(path, cat: Catalogue, ticks: int, keyframe_ticks: int) -> Store:
    """A store holding ``ticks`` seconds of the real GPU sampler's wide NVLink rows of one A100/H100/B200 node."""
    gpus = [gpu_entry(0, model="A100"), gpu_entry(1, model="H100"), gpu_entry(2, model="B200")]
    for g in gpus:
        g["link_counters"] = {}
    sc, clock = {"start_s": 100.0, "gpus": gpus, "events": []}, Clock()
    sampler = GpuSampler(
        Nvml(FakeNvml(sc, clock=clock)), xid_events=False, processes=False, keyframe_ticks=keyframe_ticks
    )
    sampler.probe()
    store = Store(path, cat)
    for tick in range(ticks):
        _drive(sc, tick)
        clock.t += 1.0
        defaults = {"ts": T0 + timedelta(seconds=tick, milliseconds=300), "node": "n1", "job": "j"}
        table = rows_to_table(cat, WIDE, sampler.sample(0)[WIDE], defaults)
        (result,) = store.commit([PendingBatch("agent-n1", tick + 1, cat[WIDE], table)])
        assert not result.error
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    cat = _catalogue(tmp_path_factory.mktemp("catalogue"))
    store = _sampled_store(tmp_path_factory.mktemp("nvlink-rollup") / "c4.duckdb", cat, TICKS, KEYFRAME_TICKS)
    assert roll_all(store, now=NOW) > 0
    yield store
    store.close()


def _raw(cur, a: datetime, b: datetime) -> dict:
    """Per link: samples, then each gauge's and each counter's rate's min/mean/max/last/n from the views."""
    shape = load().shape(VIEW)
    parts = ["count(*)"]
    for g in rolled_gauges(shape):
        v = f'"{g.name}"'
        parts += [
            f"min({v})::DOUBLE",
            f"avg({v})::DOUBLE",
            f"max({v})::DOUBLE",
            f"arg_max({v}, ts) FILTER (WHERE {v} IS NOT NULL)::DOUBLE",
            f"count({v})",
        ]
    out = {
        (r[0], r[1]): list(r[2:])
        for r in cur.execute(
            f"SELECT gpu_index, link, {', '.join(parts)} FROM {VIEW} WHERE ts >= ? AND ts < ? GROUP BY ALL",
            [a, b],
        ).fetchall()
    }
    parts = []
    for c in shape.counters:
        v = f'"{c.name}_per_s"'
        parts += [
            f"min({v})",
            f"avg({v})",
            f"max({v})",
            f"arg_max({v}, ts) FILTER (WHERE {v} IS NOT NULL)",
            f"count({v})",
        ]
    for r in cur.execute(
        f"SELECT gpu_index, link, {', '.join(parts)} FROM {VIEW}_rate WHERE ts >= ? AND ts < ? GROUP BY ALL",
        [a, b],
    ).fetchall():
        out[(r[0], r[1])] += list(r[2:])
    return out


def _rolled(cur, table: str, a: datetime, b: datetime) -> dict:
    shape = load().shape(VIEW)
    names = [g.name for g in rolled_gauges(shape)] + [f"{c.name}_rate" for c in shape.counters]
    parts = ["sum(samples)"]
    for n in names:
        parts += [
            f'min("{n}_min")',
            f'sum("{n}_mean" * "{n}_n") / nullif(sum("{n}_n"), 0)',
            f'max("{n}_max")',
            f'arg_max("{n}_last", ts) FILTER (WHERE "{n}_last" IS NOT NULL)',
            f'sum("{n}_n")',
        ]
    rows = cur.execute(
        f"SELECT gpu_index, link, {', '.join(parts)} FROM {table} WHERE ts >= ? AND ts < ? GROUP BY ALL",
        [a, b],
    ).fetchall()
    return {(r[0], r[1]): list(r[2:]) for r in rows}


def _same(raw: dict, rolled: dict) -> None:
    assert raw and raw.keys() == rolled.keys()
    for key, want in raw.items():
        got = rolled[key]
        assert len(got) == len(want) == 1 + 5 * (len(rolled_gauges(load().shape(VIEW))) + len(RATES))
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            if w is None or g is None:
                assert w is None and g is None, (key, i, w, g)
            else:
                assert g == pytest.approx(w, rel=1e-9, abs=1e-9), (key, i, w, g)


def test_nvlink_rollups_per_link_equal_the_views(store):
    cur = store.cursor()
    assert cur.execute(f"SELECT count(DISTINCT link) FROM {VIEW}_1m").fetchone()[0] == 18
    links = cur.execute(f"SELECT count(*) FROM (SELECT DISTINCT gpu_index, link FROM {VIEW}_1m)").fetchone()[
        0
    ]
    assert links == 12 + 18 + 18
    (samples,) = cur.execute(f"SELECT sum(samples) FROM {VIEW}_1h").fetchone()
    assert samples == TICKS * 48  # every per-link row of the view, once
    minute = [T0 + timedelta(minutes=m) for m in range(4)]
    for a, b in [(minute[1], minute[2]), (minute[2], minute[3]), (minute[0], minute[3])]:
        _same(_raw(cur, a, b), _rolled(cur, f"{VIEW}_1m", a, b))
    hour = (T0, T0 + timedelta(hours=1))
    _same(_raw(cur, *hour), _rolled(cur, f"{VIEW}_1h", *hour))
    # the data moved: the burst on the A100's link 3 and the failing B200 link show in the rollup
    burst = cur.execute(
        f"SELECT max(replay_errors_rate_max), sum(replay_errors_increase) FROM {VIEW}_1h WHERE gpu_index = 0 AND link = 3"
    ).fetchone()
    assert burst[0] > 0 and burst[1] > 0
    failed = cur.execute(
        f"SELECT sum(link_recovery_failed_events_increase) FROM {VIEW}_1m WHERE gpu_index = 2 AND link = 7"
    ).fetchone()[0]
    moved = cur.execute(
        f"SELECT max(link_recovery_failed_events) - min(link_recovery_failed_events) FROM {VIEW} "
        "WHERE gpu_index = 2 AND link = 7"
    ).fetchone()[0]
    assert failed == moved >= TICKS - 90


def test_a_second_pass_finds_nothing_to_roll(store):
    """The plan counts the view's rows (links per wide row), so every rolled bucket is seen as current."""
    assert roll_all(store, now=NOW) == 0


def _same_table(want: pa.Table, got: pa.Table) -> None:
    """Two rollup tables hold the same rows (floats to 1e-9), whatever their order."""
    assert got.schema == want.schema and got.num_rows == want.num_rows > 0
    order = [(k, "ascending") for k in ("ts", "node", "gpu_index", "link")]
    want, got = want.sort_by(order).to_pylist(), got.sort_by(order).to_pylist()
    for w, g in zip(want, got, strict=True):
        for name, value in w.items():
            if value is None or g[name] is None or isinstance(value, str | datetime):
                assert g[name] == value, (w["gpu_index"], w["link"], w["ts"], name)
            else:
                assert g[name] == pytest.approx(value, rel=1e-9, abs=1e-9), (w["gpu_index"], w["link"], name)


def _both_paths(store, a: datetime, b: datetime) -> tuple[pa.Table, pa.Table | None]:
    """The minute rollup of [a, b) from the per-element view's rows and from the wide rows."""
    cat = store.catalogue
    view, wide, target = cat.shape(VIEW), cat[WIDE], cat[f"{VIEW}_1m"]
    cur = store.cursor()
    try:
        return (
            view_minute_rows(cur, view, a, b, 60, target, wide),
            wide_minute_rows(cur, view, wide, a, b, 60, target),
        )
    finally:
        cur.close()


def test_the_wide_rows_give_the_views_rollup_slice_by_slice(store):
    """Each slice the collector might roll (one minute, several), the wide path's rows are the view path's: its
    first rows' on-change counters are filled from before the slice (keyframes every 7 s cross the minute edges),
    the H100's link_crc_errors reset at tick 70 and its NVML error (NULL elements) at ticks 115-125 included."""
    minute = [T0 + timedelta(minutes=m) for m in range(5)]
    for a, b in [*zip(minute, minute[1:], strict=False), (minute[0], minute[4]), (minute[1], minute[3])]:
        want, got = _both_paths(store, a, b)
        assert got is not None
        _same_table(want, got)


@pytest.mark.parametrize("chunk_rows", [5, 250])
def test_the_wide_rows_computed_a_few_entities_at_a_time_give_the_same_rows(store, monkeypatch, chunk_rows):
    """Streamed in chunks of whole GPUs (one GPU's rows longer than a chunk, or a chunk ending mid-GPU), the
    wide path's rows are still the view path's."""
    a, b = T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)
    want, _ = _both_paths(store, a, b)
    monkeypatch.setattr(rollup, "WIDE_ROWS_PER_CHUNK", chunk_rows)
    _, got = _both_paths(store, a, b)
    assert got is not None
    _same_table(want, got)


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    """Keyframes every 500 ticks: after the first, an error counter list is sent only when it changes."""
    cat = _catalogue(tmp_path_factory.mktemp("catalogue"))
    store = _sampled_store(tmp_path_factory.mktemp("nvlink-sparse") / "c4.duckdb", cat, 330, 500)
    yield store
    store.close()


def test_a_counter_unsent_for_longer_than_the_keyframe_bound_is_null_as_in_the_view(sparse):
    """The fill looks back one keyframe_within_s (120 s) before the rate look-back (60 s), as the view's bounded
    SELECT does: the H100's link_crc_errors list was last sent at tick 70 (its reset), so minute 1 is filled and
    minute 5 (from 300 s) is not, in the wide path as in the view."""
    cur = sparse.cursor()
    sent = cur.execute(
        f"SELECT list(epoch(ts)::INT - epoch(TIMESTAMP '{T0}')::INT ORDER BY ts) FROM {WIDE} "
        "WHERE gpu_index = 1 AND link_crc_errors IS NOT NULL"
    ).fetchone()[0]
    cur.close()
    assert sent == [0, 3, 70]  # the first tick (a keyframe), then when it moved
    for m, filled in ((1, True), (5, False)):
        a, b = T0 + timedelta(minutes=m), T0 + timedelta(minutes=m + 1)
        want, got = _both_paths(sparse, a, b)
        assert got is not None
        _same_table(want, got)
        (row,) = [r for r in got.to_pylist() if r["gpu_index"] == 1 and r["link"] == 0]
        assert (row["link_crc_errors_rate_n"] > 0) == filled, (m, row["link_crc_errors_rate_n"])


def _wide_row(cat: Catalogue, second: int, links: list[int], **lists) -> pa.Table:
    """One hand-made wide row of GPU 0 on node n9 (for list layouts the sampler does not send)."""
    row = {"gpu_index": 0, "gpu_uuid": "GPU-0", "link": links, **lists}
    defaults = {"ts": T0 + timedelta(seconds=second), "node": "n9", "job": "j"}
    return rows_to_table(cat, WIDE, [row], defaults)


def test_irregular_link_lists_still_give_the_views_numbers(tmp_path):
    """A GPU whose link list changes order between rows is sorted per link (not transposed); one whose list
    shrinks while a longer on-change list is carried makes elements the view keys with a NULL link: the wide
    path declines and the collector computes that slice from the view, so its numbers are still the view's.
    (The plan counts such a slice's rows by the key lists, fewer than the view's, so it rolls it on every run.)"""
    cat = load()
    store = Store(tmp_path / "c4.duckdb", cat)
    try:
        for s in range(0, 240):
            links = [0, 1, 2] if s % 2 else [2, 1, 0]
            tx = [1000 * s * (1 + k) for k in links]
            replay = [s // 50 + k for k in links] if s % 30 == 0 else None
            table = _wide_row(cat, s, links, tx_data_bytes=tx, replay_errors=replay)
            (result,) = store.commit([PendingBatch("", 0, cat[WIDE], table)])
            assert not result.error
        a, b = T0 + timedelta(minutes=2), T0 + timedelta(minutes=3)
        want, got = _both_paths(store, a, b)
        assert got is not None
        _same_table(want, got)
        # the list shrinks to two links; replay_errors was last sent with three elements
        for s in range(240, 300):
            table = _wide_row(cat, s, [0, 1], tx_data_bytes=[1000 * s, 2000 * s])
            (result,) = store.commit([PendingBatch("", 0, cat[WIDE], table)])
            assert not result.error
        a, b = T0 + timedelta(minutes=4), T0 + timedelta(minutes=5)
        want, got = _both_paths(store, a, b)
        assert got is None
        assert None in {r["link"] for r in want.to_pylist()}  # the view's own reading of such rows
        cur = store.cursor()
        step = Step(cat.shape(VIEW), "1m", cat[WIDE])
        rolled = step.compute(cur, a, b, cat[f"{VIEW}_1m"])  # what the collector's rollup computes
        cur.close()
        _same_table(want, rolled)
        # rolling everything ends although that slice's counts never match (it rolled each pass before)
        assert roll_all(store, now=T0 + timedelta(minutes=6)) > 0
    finally:
        store.close()


def test_the_collectors_rollup_retention_covers_the_nvlink_rollups(sparse):
    """The collector's retention of rollups (each resolution its own age) deletes old NVLink minutes and hours."""
    end = T0 + timedelta(minutes=6)
    assert roll_all(sparse, now=end + timedelta(hours=1)) > 0
    cur = sparse.cursor()
    before = {r: cur.execute(f"SELECT count(*) FROM {VIEW}_{r}").fetchone()[0] for r in ("1m", "1h")}
    assert before["1m"] > 0 and before["1h"] > 0
    # keep minutes for 2 hours and hours for 30 days: 3 hours on, the minutes go and the hour stays
    deleted = retain_rollups(sparse, end + timedelta(hours=3), {"1m": 2 * 3600.0, "1h": 30 * 86400.0})
    assert deleted.get(f"{VIEW}_1m") == before["1m"] and f"{VIEW}_1h" not in deleted
    assert cur.execute(f"SELECT count(*) FROM {VIEW}_1h").fetchone()[0] == before["1h"]
    cur.close()


@pytest.mark.parametrize("chunk_rows", [5, 250, 5_000])
def test_the_link_matrices_give_the_flattened_samples_rows(store, monkeypatch, chunk_rows):
    """Computed on rows x links matrices (``rollup_matrix``), with no chunk flattened to per-link samples, the wide
    path's rows are those the flattened samples give: A100 (12 links) beside H100/B200 (18) in one chunk, the
    H100's NVML error (NULL elements for ten ticks) and its reset, bursts on error counters sent on change."""
    a, b = T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)
    monkeypatch.setattr(rollup, "WIDE_ROWS_PER_CHUNK", chunk_rows)
    monkeypatch.setattr(rollup, "MATRIX_PATH", False)
    _, flattened = _both_paths(store, a, b)
    monkeypatch.setattr(rollup, "MATRIX_PATH", True)

    def refuse(*args, **kwargs):
        raise AssertionError("a chunk was flattened")

    monkeypatch.setattr(rollup, "element_samples", refuse)
    _, got = _both_paths(store, a, b)
    assert got is not None and flattened is not None
    _same_table(flattened, got)


def test_an_on_change_list_shorter_than_the_links_gives_the_views_nulls(tmp_path, monkeypatch):
    """An error counter list sent with fewer elements than the GPU has links: the view keys the missing links'
    elements NULL, and so do the matrices (no chunk flattened), whether the short list is sent or carried."""
    cat = load()
    store = Store(tmp_path / "c4.duckdb", cat)
    try:
        for s in range(0, 200):
            replay = None
            if s % 20 == 0:
                replay = [s // 40, 7] if s % 40 == 0 else [s // 40, 7, s // 20]  # two or three of three
            table = _wide_row(cat, s, [0, 1, 2], tx_data_bytes=[500 * s, 0, 9 * s], replay_errors=replay)
            (result,) = store.commit([PendingBatch("", 0, cat[WIDE], table)])
            assert not result.error
        a, b = T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)
        want, _ = _both_paths(store, a, b)

        def refuse(*args, **kwargs):
            raise AssertionError("a chunk was flattened")

        monkeypatch.setattr(rollup, "element_samples", refuse)
        _, got = _both_paths(store, a, b)
        assert got is not None
        _same_table(want, got)
        link2 = [r for r in got.to_pylist() if r["link"] == 2]
        assert any(r["replay_errors_rate_n"] < r["samples"] for r in link2)  # the short lists' NULL elements
        assert any(r["replay_errors_increase"] for r in link2)  # and the long lists' moves
    finally:
        store.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_wide_rows_give_the_views_numbers_on_the_matrices(tmp_path, monkeypatch, seed):
    """Hostile wide rows, drawn at random: GPUs of 2 and 3 links side by side, ticks missing, rows arriving late
    (committed ticks after their time), whole lists and single elements NULL, counters that reset, an on-change
    error counter sent now and then, sometimes one element short. Computed on the matrices (the flatten
    refused), every slice gives the view's numbers. (Two rows of one GPU at the same time are left out: which
    comes first is undefined, in the view's window as in the rollup's sort.)"""
    import random

    rnd = random.Random(seed)
    cat = load()
    store = Store(tmp_path / "c4.duckdb", cat)
    try:
        gpus = [(f"n{i // 2}", i % 2, 2 + (i % 3 == 0)) for i in range(6)]  # (node, gpu index, links)
        tx = {g: [rnd.randrange(10**6) for _ in range(g[2])] for g in gpus}
        replay = {g: [0] * g[2] for g in gpus}
        late: list = []
        for s in range(0, 200):
            tables, late = [t for due, t in late if due <= s], [(due, t) for due, t in late if due > s]
            for g in gpus:
                node, index, width = g
                if rnd.random() < 0.1:  # a tick missing
                    continue
                tx[g] = [0 if rnd.random() < 0.02 else v + rnd.randrange(5000) for v in tx[g]]  # resets
                sent = None if rnd.random() < 0.03 else [None if rnd.random() < 0.05 else v for v in tx[g]]
                if rnd.random() < 0.1:
                    replay[g] = [v + rnd.randrange(3) for v in replay[g]]
                errors = None
                if s % 30 == 0 or rnd.random() < 0.15:
                    errors = list(replay[g][: width - 1] if rnd.random() < 0.1 else replay[g])
                rate = [None if rnd.random() < 0.05 else rnd.random() * 1e9 for _ in range(width)]
                row = {"gpu_index": index, "gpu_uuid": f"GPU-{node}-{index}", "link": list(range(width))}
                row |= {"tx_data_bytes": sent, "replay_errors": errors, "tx_data_bytes_per_s": rate}
                defaults = {"ts": T0 + timedelta(seconds=s, milliseconds=250), "node": node, "job": "j"}
                table = rows_to_table(cat, WIDE, [row], defaults)
                if rnd.random() < 0.03:  # arrives a few ticks late, after newer rows of its GPU
                    late.append((s + rnd.randrange(1, 5), table))
                else:
                    tables.append(table)
            rnd.shuffle(tables)
            for table in tables:
                (result,) = store.commit([PendingBatch("", 0, cat[WIDE], table)])
                assert not result.error

        def refuse(*args, **kwargs):
            raise AssertionError("a chunk was flattened")

        monkeypatch.setattr(rollup, "element_samples", refuse)
        minute = [T0 + timedelta(minutes=m) for m in range(4)]
        for a, b in [(minute[1], minute[2]), (minute[2], minute[3]), (minute[0], minute[3])]:
            for chunk_rows in (7, 5_000):
                monkeypatch.setattr(rollup, "WIDE_ROWS_PER_CHUNK", chunk_rows)
                want, got = _both_paths(store, a, b)
                assert got is not None
                _same_table(want, got)
    finally:
        store.close()
