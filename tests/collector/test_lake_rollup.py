"""Rollups on a lake: the leader rolls every shard's rows into the lake's ``_1m``/``_1h`` tables, with
the same numbers as the raw rows over the same interval, and rolls a bucket again when a shard's late
rows land in it. Two lake stores (two shards) on a real PostgreSQL, one process."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
from test_rollup import START, TOML, _insert, _raw, _rolled, _rows, _same

from c4.catalogue import Catalogue
from c4.catalogue.rollup import rollup_name
from c4.collector import rollup
from c4.collector.ingest import Metrics
from c4.collector.lake import LakeStore
from c4.collector.rollup import Rollups
from c4.collector.writer import Writer

MINUTES = 20


def test_the_leader_rolls_every_shards_rows_into_the_lake(tmp_path, postgres, monkeypatch):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "dev.toml").write_text(TOML)
    catalogue = Catalogue.from_dir(tmp_path / "cat")
    data = str(tmp_path / "lake-data")
    shards = {name: LakeStore(postgres.url, data, catalogue, name) for name in ("a", "b")}
    leader = shards["a"]
    writer = Writer(leader)
    pool = ThreadPoolExecutor(2)
    rng = np.random.default_rng(7)
    try:
        end_s = MINUTES * 60
        for node, shard in (("a", "a"), ("b", "b")):  # each node's agent reports to its own shard
            for dev in (0, 1):
                _insert(shards[shard], _rows(rng, node, dev, 0, end_s - 120))
        rollups = Rollups(leader, writer, Metrics(), recheck_s=300.0)
        now = START + timedelta(seconds=end_s)

        clock = [now]
        monkeypatch.setattr(rollup, "_now", lambda: clock[0])

        async def roll() -> dict[str, int]:
            """Rollup runs until current; rows written per rollup table."""
            written: dict[str, int] = {}
            while got := await rollups.run():
                for k, v in got.items():
                    written[k] = written.get(k, 0) + v
            return written

        written = asyncio.run(roll())
        m = rollup_name("dev", "1m")
        assert written[m] > 0
        cur = leader.cursor()
        assert cur.execute(f"SELECT count(DISTINCT node) FROM {m}").fetchone()[0] == 2, (
            "a shard's rows were left out"
        )
        for a, b in [
            (START, START + timedelta(minutes=MINUTES - 2)),
            (START + timedelta(minutes=7), START + timedelta(minutes=8)),
        ]:
            _same(_raw(cur, a, b), _rolled(cur, m, a, b))
        # a device of node b reports late, into minutes the leader rolled already: rolled again
        _insert(shards["b"], _rows(rng, "b", 2, end_s - 200, end_s - 5))
        clock[0] = START + timedelta(seconds=end_s + 60)
        assert asyncio.run(roll())[m] > 0
        a, b = START, START + timedelta(minutes=MINUTES)
        _same(_raw(cur, a, b), _rolled(cur, m, a, b))
        assert asyncio.run(roll()) == {}  # current: nothing to do
        cur.close()
    finally:
        writer.close()
        pool.shutdown()
        for s in shards.values():
            s.close()
