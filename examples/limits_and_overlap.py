"""Concurrency limits, overlap rules, misfires and timeouts, on a virtual clock.

A slow job ticks faster than it finishes; see what each option does with the extra
ticks. Runs in milliseconds: the virtual clock moves only when told to.
Run it: ``python examples/limits_and_overlap.py``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from asyncron import JobFailed, JobMissed, JobSkipped, JobStarted, Scheduler, every
from asyncron.testing import VirtualClock


async def main() -> None:
    """Three jobs that take 25 s each, ticking every 10 s, under different rules."""
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=UTC))
    # stop_timeout=0: at exit, runs still sleeping on the virtual clock are cancelled
    # (nothing advances the clock during shutdown).
    scheduler = Scheduler(
        clock=clock, max_concurrent_jobs=3, concurrency_mode="wait", stop_timeout=0
    )

    async def slow() -> None:
        await clock.sleep_until(clock.monotonic() + 25)  # "work" on the virtual clock

    def show(event: JobStarted | JobSkipped | JobMissed | JobFailed) -> None:
        at = clock.now().strftime("%H:%M:%S")
        detail = getattr(event, "reason", "") or getattr(event, "exception", "")
        print(f"{at}  {event.job_name:<9} {type(event).__name__:<11} {detail!s}")

    scheduler.subscribe(show, JobStarted, JobSkipped, JobMissed, JobFailed)
    # skip: a tick that finds the previous run still going is dropped (the default).
    scheduler.add_job(slow, every(seconds=10), name="skip")
    # wait: it queues; with coalesce=True at most one tick waits, newer ones replace it.
    scheduler.add_job(slow, every(seconds=10), name="wait", overlap="wait")
    # timeout: a run longer than 15 s is cancelled and fails with RunTimeout.
    scheduler.add_job(slow, every(seconds=10), name="timeout", timeout=15, max_instances=2)
    async with scheduler:
        await clock.advance(seconds=60)
        print(f"waiting ticks now: {scheduler.waiting_runs}")
        for job in scheduler.jobs:
            print(f"{job.name:<9} started {job.run_count} runs")


if __name__ == "__main__":
    asyncio.run(main())
