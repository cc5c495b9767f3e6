"""Run the digital twin with the real samplers in-process and collect their rows (no network)."""

from __future__ import annotations

from datetime import UTC, datetime

from c4.agent.labels import context_from
from c4.agent.runner import build_samplers
from c4.catalogue import load
from c4.config import AgentConfig
from c4.sim.runner import SimRunner
from c4.sim.twin import ClusterTwin

#: Wall-clock time of simulated t = 0 unless a test needs rows near the present (a live collector's window).
EPOCH_S = 1_800_000_000.0


def run_twin(tmp_path, faults, steps=30, nodes=4, seed=1, epoch_s=EPOCH_S, **cluster):
    """Step the twin and sample every node after each step; returns (twin, {table: rows with node}).

    Simulated time 0 is ``epoch_s`` (Unix seconds); rows sent to a collector must not lie ahead of
    its clock by more than its max_clock_skew_s (they would be clamped), so pass a recent past then.
    """
    twin = ClusterTwin(nodes=nodes, leaves=2, spines=2, seed=seed, faults=faults, **cluster)
    _, rows = sample_twin(tmp_path, twin, steps, epoch_s)
    return twin, rows


def sample_twin(tmp_path, twin, steps: int, epoch_s: float = EPOCH_S):
    """Step any twin (one job or several) and read every node with the production samplers after each
    step; returns (runner, {table: rows with ts, tick and node})."""
    runner = SimRunner(tmp_path, twin, "t", epoch_s=epoch_s)
    samplers = {}
    for host, w in runner.writers.items():
        cfg = AgentConfig(node=host, samplers=w.sampler_config(), spool_dir=tmp_path / "spool")
        samplers[host] = build_samplers(cfg, context_from(cfg, env={}))
        for s in samplers[host]:
            s.probe()
    rows: dict[str, list] = {}
    for step in range(steps):
        runner.step()
        ts = datetime.fromtimestamp(twin.t + epoch_s, UTC).replace(tzinfo=None)
        for host, ss in samplers.items():
            for s in ss:
                for table, rs in s.sampler.sample(0).items():
                    rows.setdefault(table, []).extend({"ts": ts, "tick": step, **r, "node": host} for r in rs)
    for (
        spec
    ) in load().tables.values():  # wide tables also as their per-element view's rows, as a reader sees them
        if spec.element is not None and spec.name in rows:
            rows[spec.element.view] = spec.element_rows(rows[spec.name])
    return runner, rows


def frames(rows: dict[str, list], tables) -> dict:
    """Sampler rows -> polars frames typed by the catalogue (what the collector would store)."""
    import polars as pl
    import pyarrow as pa

    out = {}
    for t in tables:
        spec = load().shape(t)
        data = [
            {**{k: v for k, v in r.items() if k in spec.column_names}, "job": ""} for r in rows.get(t, [])
        ]
        out[t] = (
            pl.from_arrow(pa.Table.from_pylist(data, schema=spec.arrow_schema)) if data else pl.DataFrame()
        )
    return out
