"""The collector's flush advice: raised at once when its commits fall behind, lowered a step at a time
once they are quick for a while, and the diagnosis told how far behind the clock the data may be."""

from __future__ import annotations

import asyncio
import time

from test_store_settings import heartbeat_rows

from c4.catalogue import load
from c4.collector.flush_advice import FlushAdvisor, steps_up_to
from c4.collector.ingest import IngestService, Metrics
from c4.collector.store import PendingBatch, Store
from c4.collector.writer import Writer
from c4.config import CollectorConfig


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def run(advisor: FlushAdvisor, clock: Clock, seconds: float, latency_s: float, per_s: int = 50) -> None:
    """``seconds`` of bundles, ``per_s`` a second, each committed ``latency_s`` after receipt."""
    for _ in range(round(seconds * per_s)):
        clock.t += 1.0 / per_s
        advisor.observe(latency_s)


def test_steps_end_at_the_configured_longest():
    assert steps_up_to(5.0) == (1.0, 2.0, 5.0)
    assert steps_up_to(3.0) == (1.0, 2.0, 3.0)
    assert steps_up_to(10.0) == (1.0, 2.0, 5.0, 10.0)
    assert steps_up_to(1.0) == (1.0,) and steps_up_to(0.0) == (1.0,)
    assert not FlushAdvisor(max_s=1.0).enabled and FlushAdvisor(max_s=5.0).enabled


def test_quick_commits_advise_nothing_longer():
    clock = Clock()
    advisor = FlushAdvisor(max_s=5.0, clock=clock)
    run(advisor, clock, 60, 0.05)
    assert advisor.advice_s() == 0.0 and advisor.raised == 0 and advisor.lag_s() == 0.0


def test_one_slow_second_is_not_enough_two_raise_to_the_longest_at_once():
    clock = Clock()
    advisor = FlushAdvisor(max_s=5.0, clock=clock)
    run(advisor, clock, 1.0, 0.9)  # a checkpoint's slow second
    run(advisor, clock, 3.0, 0.05)
    assert advisor.advice_s() == 0.0
    run(advisor, clock, 2.5, 0.9)  # a backlog: two slow windows in a row
    assert advisor.advice_s() == 5.0 and advisor.raised == 1  # not 2 s first: the backlog grows meanwhile
    assert advisor.lag_s() == 5.0


def test_a_tenth_of_slow_bundles_is_tolerated():
    clock = Clock()
    advisor = FlushAdvisor(max_s=5.0, clock=clock)
    for _ in range(20):  # 1 bundle in 10 slow, every second for 20 s
        for i in range(50):
            clock.t += 0.02
            advisor.observe(0.9 if i % 10 == 0 else 0.05)
    assert advisor.advice_s() == 0.0


def test_quick_commits_lower_the_advice_a_step_at_a_time():
    clock = Clock()
    advisor = FlushAdvisor(max_s=5.0, hold_s=30.0, clock=clock)
    run(advisor, clock, 3, 0.9)
    assert advisor.advice_s() == 5.0
    run(advisor, clock, 20, 0.05)
    assert advisor.advice_s() == 5.0  # not calm for hold_s yet
    run(advisor, clock, 20, 0.05)
    assert advisor.advice_s() == 2.0
    run(advisor, clock, 40, 0.05)
    assert advisor.advice_s() == 0.0 and advisor.lowered == 2


def test_a_few_slow_checkpoint_seconds_do_not_stop_the_advice_from_coming_down():
    clock = Clock()
    advisor = FlushAdvisor(max_s=5.0, hold_s=30.0, clock=clock)
    run(advisor, clock, 3, 0.9)
    for _ in range(8):  # every 8 s one second at 0.4 s (not slow enough to raise)
        run(advisor, clock, 1, 0.4)
        run(advisor, clock, 7, 0.05)
    assert advisor.advice_s() < 5.0


def test_commits_that_stay_middling_keep_the_advice():
    clock = Clock()
    advisor = FlushAdvisor(max_s=5.0, hold_s=30.0, clock=clock)
    run(advisor, clock, 3, 0.9)
    run(advisor, clock, 120, 0.3)  # under the raise threshold, over the lower one
    assert advisor.advice_s() == 5.0 and advisor.lowered == 0


def test_a_step_down_that_was_too_short_doubles_the_wait_for_the_next():
    clock = Clock()
    advisor = FlushAdvisor(max_s=5.0, hold_s=30.0, clock=clock)
    run(advisor, clock, 3, 0.9)
    run(advisor, clock, 40, 0.05)
    assert advisor.advice_s() == 2.0
    run(advisor, clock, 10, 0.9)  # 2 s was too short: back up
    assert advisor.advice_s() == 5.0 and advisor.raised == 2
    run(advisor, clock, 40, 0.05)
    assert advisor.advice_s() == 5.0  # 30 s of calm no longer enough
    run(advisor, clock, 30, 0.05)
    assert advisor.advice_s() == 2.0


def test_the_lag_stays_while_agents_may_still_flush_on_the_older_advice():
    clock = Clock()
    advisor = FlushAdvisor(max_s=5.0, hold_s=30.0, clock=clock)
    run(advisor, clock, 3, 0.9)
    while advisor.advice_s() > 0.0:
        run(advisor, clock, 0.1, 0.05)
    # just lowered from 2 s to 1 s: agents may still flush once on 2 s
    assert advisor.lag_s() == 2.0
    run(advisor, clock, 11, 0.05)
    assert advisor.lag_s() == 0.0


def test_without_bundles_nothing_changes():
    clock = Clock()
    advisor = FlushAdvisor(max_s=5.0, clock=clock)
    clock.t += 3600
    assert advisor.advice_s() == 0.0 and advisor.lag_s() == 0.0


def test_a_writer_busy_most_of_the_time_keeps_the_advice_though_acks_are_quick():
    """Quick acks at 5 s with the writer busy 70% of the time: 2 s would multiply its per-batch work, so
    the advice stays; the same acks with the writer busy 30% of the time step down as before."""
    for busy_share, expected in ((0.7, 5.0), (0.3, 2.0)):
        clock = Clock()
        start = clock.t
        advisor = FlushAdvisor(
            max_s=5.0,
            hold_s=30.0,
            clock=clock,
            busy_s=lambda share=busy_share, clock=clock, start=start: share * (clock.t - start),
        )
        run(advisor, clock, 3, 0.9)
        run(advisor, clock, 45, 0.05)
        assert advisor.advice_s() == expected, busy_share
    run(advisor, clock, 40, 0.05)
    assert advisor.advice_s() == 0.0  # and on down while the writer stays that idle


def test_the_busy_share_is_of_the_period_judged_not_of_all_time():
    """A writer that was busy all through a backlog, then idle: the step down waits for a calm period of
    its own, not for the average since the start to fall."""
    clock = Clock()
    busy = [0.0]
    advisor = FlushAdvisor(max_s=5.0, hold_s=30.0, clock=clock, busy_s=lambda: busy[0])
    for _ in range(600):  # a minute of backlog, the writer busy throughout
        clock.t += 0.1
        busy[0] += 0.1
        advisor.observe(0.9)
    assert advisor.advice_s() == 5.0
    run(advisor, clock, 45, 0.05)  # then quick and idle: the busy minute is not held against it
    assert advisor.advice_s() == 2.0


def test_the_writer_counts_the_time_it_is_busy_and_the_collectors_advisor_reads_it(tmp_path):
    """What the advisor is given: the real writer's seconds of commits and jobs."""
    catalogue = load()
    spec = catalogue["agent_heartbeat"]
    writer = Writer(Store(tmp_path / "c4.duckdb", catalogue))
    try:
        service = IngestService(CollectorConfig(), catalogue, writer, Metrics())

        async def work() -> None:
            await writer.call_async(lambda store: time.sleep(0.3))
            (result,) = await writer.submit_many_async(
                [PendingBatch("a", 1, spec, heartbeat_rows(spec, 1, 50))]
            )
            assert result.rows == 50

        before = service.flush_advisor._busy_s()
        asyncio.run(work())
        assert writer.commits == 1 and writer.busy_s >= 0.3
        assert service.flush_advisor._busy_s() - before == writer.busy_s - before >= 0.3
    finally:
        writer.close()
        writer.store.close()
