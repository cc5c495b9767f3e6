"""The collector's flush advice: raised at once when its commits fall behind, lowered a step at a time
once they are quick for a while, and the diagnosis told how far behind the clock the data may be."""

from __future__ import annotations

from c4.collector.flush_advice import FlushAdvisor, steps_up_to


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


class Busy:
    """A writer's seconds spent committing so far, moved by hand beside the clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.s = 0.0

    def __call__(self) -> float:
        return self.s


def run_busy(
    advisor: FlushAdvisor, clock: Clock, busy: Busy, seconds: float, latency_s: float, share: float
) -> None:
    """As ``run``, with the writer committing ``share`` of each second."""
    per_s = 50
    for _ in range(round(seconds * per_s)):
        clock.t += 1.0 / per_s
        busy.s += share / per_s
        advisor.observe(latency_s)


def test_a_writer_busy_committing_raises_the_advice_before_acks_are_late(caplog):
    caplog.set_level("INFO", logger="c4.collector.flush_advice")
    clock = Clock()
    busy = Busy(clock)
    advisor = FlushAdvisor(max_s=5.0, clock=clock, busy_s=busy, busy_share_max=0.7)
    run_busy(advisor, clock, busy, 10, 0.05, 0.6)  # busy, not too busy: nothing to advise
    assert advisor.advice_s() == 0.0
    run_busy(advisor, clock, busy, 2.1, 0.05, 0.9)  # the writer commits 90% of the time, acks still quick
    assert advisor.advice_s() == 5.0 and advisor.raised == advisor.raised_busy == 1
    assert "to=5s why=writer busy" in caplog.text  # the operator's log says why
    # the same second without a writer to look at: latency alone decides, and it was quick
    clock2 = Clock()
    latency_only = FlushAdvisor(max_s=5.0, clock=clock2)
    run(latency_only, clock2, 12.1, 0.05)
    assert latency_only.advice_s() == 0.0


def test_a_busy_writer_keeps_the_advice_up_though_acks_are_quick():
    clock = Clock()
    busy = Busy(clock)
    advisor = FlushAdvisor(max_s=5.0, hold_s=30.0, clock=clock, busy_s=busy, busy_share_max=0.7)
    run_busy(advisor, clock, busy, 2, 0.05, 0.9)
    assert advisor.advice_s() == 5.0
    for _ in range(12):  # two busy seconds every 10 s: no calm period for a step down
        run_busy(advisor, clock, busy, 8, 0.05, 0.3)
        run_busy(advisor, clock, busy, 2.1, 0.05, 0.95)
    assert advisor.advice_s() == 5.0 and advisor.lowered == 0
    run_busy(advisor, clock, busy, 70, 0.05, 0.3)  # then quiet: it comes down
    assert advisor.advice_s() < 5.0 and advisor.lowered >= 1


def test_busy_time_counts_over_the_window_however_long_it_lasted():
    clock = Clock()
    busy = Busy(clock)
    advisor = FlushAdvisor(max_s=5.0, clock=clock, busy_s=busy, busy_share_max=0.7)
    clock.t += 60.0  # an idle minute: no bundle closes a window
    busy.s += 2.0  # a few commits meanwhile (collector's own rows)
    advisor.observe(0.05)
    assert advisor.advice_s() == 0.0  # 2 s busy in 60 s is no load
