"""LeaderTasks: the lake-wide jobs start with the lease and stop with it; a run in progress when the
lease goes finishes (a pass that alerted still stores its actions row), none starts after, and a
shutdown cancels even the run in progress."""

from __future__ import annotations

import asyncio

from c4.collector.tasks import LeaderTasks, TaskHealth


class Job:
    """A job whose runs take ``run_s``; counts started and finished runs."""

    def __init__(self, run_s: float) -> None:
        self.run_s = run_s
        self.started = 0
        self.finished = 0

    async def __call__(self) -> None:
        self.started += 1
        await asyncio.sleep(self.run_s)
        self.finished += 1


async def until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


def test_losing_the_lease_lets_the_run_in_progress_finish_and_starts_no_other():
    async def main():
        health: dict[str, TaskHealth] = {}
        tasks = LeaderTasks(health, lambda key: None)
        job = Job(run_s=0.3)
        tasks.add("diagnosis", 0.01, job)
        assert health["diagnosis"].state == "standby" and not tasks.running
        assert tasks.follow(True) and tasks.running and health["diagnosis"].state == "starting"
        await asyncio.wait_for(until(lambda: job.started == 1), 30)
        assert tasks.follow(False)  # the lease is lost mid-run
        assert health["diagnosis"].state == "standby"
        await asyncio.wait_for(until(lambda: job.finished == 1), 30)  # cut short: it never finishes
        await asyncio.sleep(0.2)  # twenty periods
        assert job.started == 1, "a run started after the lease was lost"
        assert not tasks.follow(False)

    asyncio.run(main())


def test_a_shutdown_cancels_the_run_in_progress():
    async def main():
        tasks = LeaderTasks({}, lambda key: None)
        job = Job(run_s=5.0)
        tasks.add("lake_upkeep", 0.01, job)
        tasks.follow(True)
        await asyncio.wait_for(until(lambda: job.started == 1), 30)
        tasks.stop(finish=False)
        await asyncio.sleep(0.1)
        assert job.finished == 0 and not tasks._in_flight

    asyncio.run(main())
