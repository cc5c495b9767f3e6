"""The load generator's batches move in time: each tick's rows carry that tick's timestamp, byte and
packet counters climb, float gauges wander, and everything else is the sampled tick, byte for byte
(decoded with pyarrow, as the collector decodes them)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from c4.bench.load import HEALTH_TABLES, batch_templates, node_tick, plans_and_payloads, wire_batch
from c4.bench.load_motion import Layout, find_layout, moved, moving_columns
from c4.telemetry.v1 import telemetry_pb2 as pb

INTERVAL_US = 1_000_000
TICKS = 3


@pytest.fixture(scope="module")
def tick(tmp_path_factory):
    return node_tick(tmp_path_factory.mktemp("node"))


def _decode(wire: bytes) -> pa.Table:
    batch = pb.Batch.FromString(bytes(wire_batch(wire, 1)))
    return pa.ipc.open_stream(batch.arrow_ipc).read_all()


def _templates(tick, name: str, layouts: dict | None = None, shared: dict | None = None):
    payloads = plans_and_payloads(tick, name, TICKS, moving=True, shared=shared)
    return {t[0]: t for t in batch_templates(name, payloads, INTERVAL_US / 1e6, layouts)}


def test_each_ticks_rows_carry_its_time_and_the_rest_is_the_sampled_tick(tick):
    templates = _templates(tick, "load-0007")
    first_us = 1_790_000_000_000_000
    for table, (_, wire, rows, layout) in templates.items():
        assert isinstance(layout, Layout), table
        ticks = 1 if table in HEALTH_TABLES else TICKS
        got = _decode(moved(wire, layout, 10, first_us))
        sampled = tick[table]
        n = sampled.num_rows
        assert got.num_rows == rows == n * ticks
        ts = got.column("ts").cast(pa.int64()).to_pylist()
        assert ts == [first_us + (r // n) * INTERVAL_US for r in range(rows)], table
        moving = moving_columns(table)
        for name, values in zip(sampled.column_names, sampled.columns, strict=True):
            col = got.column(name).to_pylist()
            if name in ("node", "agent_id"):
                assert col == ["load-0007"] * rows
            elif name not in moving:
                assert col == list(values) * ticks, (table, name)  # untouched, byte for byte


def test_counters_climb_and_gauges_wander_from_batch_to_batch(tick):
    _, wire, _, layout = _templates(tick, "load-0001")["ib_port_samples"]
    a = _decode(moved(wire, layout, 5, 1_790_000_000_000_000))
    b = _decode(moved(wire, layout, 5 + TICKS, 1_790_000_003_000_000))
    tx_a, tx_b = a.column("tx_bytes").to_pylist(), b.column("tx_bytes").to_pylist()
    assert all(y > x for x, y in zip(tx_a, tx_b, strict=True))
    rows = len(tx_a) // TICKS
    # within a batch, a port's tick-to-tick climb is the same as between batches (one rate per port)
    assert tx_a[rows] - tx_a[0] == (tx_b[0] - tx_a[0]) // TICKS
    assert a.column("symbol_errors").to_pylist() == b.column("symbol_errors").to_pylist()  # errors stay
    _, wire, _, layout = _templates(tick, "load-0001")["gpu_samples"]
    p_a = _decode(moved(wire, layout, 1, 0)).column("power_w").to_pylist()
    p_b = _decode(moved(wire, layout, 2, 0)).column("power_w").to_pylist()
    sampled = tick["gpu_samples"].column("power_w")
    assert p_a != p_b and all(abs(x / s - 1) <= 0.05 for x, s in zip(p_a, sampled * TICKS, strict=True))
    nv = _decode(moved(*_templates(tick, "load-0001")["nvlink_gpu_samples"][1::2], 1, 0))
    nv2 = _decode(moved(*_templates(tick, "load-0001")["nvlink_gpu_samples"][1::2], 2, 0))
    assert all(
        y > x
        for row_a, row_b in zip(
            nv.column("tx_data_bytes").to_pylist(), nv2.column("tx_data_bytes").to_pylist(), strict=True
        )
        for x, y in zip(row_a, row_b, strict=True)
        if x is not None
    )


def test_agents_share_one_layout_per_batch_shape(tick):
    layouts: dict = {}
    shared: dict = {}
    first = _templates(tick, "load-0001", layouts, shared)
    second = _templates(tick, "load-0002", layouts, shared)
    assert all(second[t][3] is first[t][3] for t in first)  # the same layout object, found once
    got = _decode(moved(second["gpu_samples"][1], second["gpu_samples"][3], 0, 5))
    assert set(got.column("node").to_pylist()) == {"load-0002"}


def test_a_template_whose_values_are_not_where_the_plan_says_is_refused(tick):
    table, version, ipc, rows, (rows_per_tick, plan) = next(
        p for p in plans_and_payloads(tick, "load-0001", 1, moving=True) if p[0] == "gpu_samples"
    )
    frozen = next(p for p in plans_and_payloads(tick, "load-0001", 1) if p[0] == "gpu_samples")
    with pytest.raises(ValueError, match="are not in the template"):
        find_layout(frozen[2], plan, rows_per_tick, INTERVAL_US)  # encoded without the sentinels
