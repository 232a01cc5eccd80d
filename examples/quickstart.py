"""asyncron in one screen: jobs of seven schedule kinds firing for a few seconds.

Run it with ``make demo`` (or ``python examples/quickstart.py``). No server needed.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from asyncron import (
    JobFailed,
    JobSucceeded,
    RunContext,
    Scheduler,
    cron,
    daily,
    every,
    monthly,
    once,
    random_every,
    weekly,
)

START = time.monotonic()


def log(kind: str, ctx: RunContext) -> None:
    """Print one line per run: seconds since start, kind, tick and job name."""
    print(
        f"[{time.monotonic() - START:5.2f}s] {kind:<12} tick={ctx.tick:%H:%M:%S.%f} "
        f"job={ctx.job.name}",
        flush=True,
    )


async def heartbeat(ctx: RunContext) -> None:
    """An async job on a fixed interval, aligned on whole seconds."""
    log("every", ctx)


def sync_report(ctx: RunContext) -> None:
    """A plain function: it runs in a worker thread, never blocking the loop."""
    log("cron", ctx)


async def jittery(ctx: RunContext) -> None:
    """A random interval, drawn before each run."""
    log("random_every", ctx)


async def wall_time(kind: str, ctx: RunContext) -> None:
    """Daily, weekly and monthly jobs set to fire a few seconds from now."""
    log(kind, ctx)


async def flaky(ctx: RunContext) -> None:
    """A one-off that fails: the failure is an event, never a crash."""
    log("once", ctx)
    raise RuntimeError("boom (on purpose)")


async def main() -> None:
    """Add the jobs, run for a few seconds, shut down gracefully."""
    now = datetime.now(UTC)
    soon = [(now + timedelta(seconds=s)).replace(microsecond=0).time() for s in (3, 4, 5)]
    scheduler = Scheduler(tz="UTC")
    scheduler.add_job(heartbeat, every(seconds=1), name="heartbeat")
    scheduler.add_job(sync_report, cron("*/2 * * * * *", seconds=True), name="cron-report")
    scheduler.add_job(jittery, random_every(0.7, 1.6), name="jittery")
    scheduler.add_job(wall_time, daily(at=soon[0]), args=("daily",), name="daily")
    scheduler.add_job(
        wall_time, weekly(on=now.weekday(), at=soon[1]), args=("weekly",), name="weekly"
    )
    scheduler.add_job(wall_time, monthly(on=now.day, at=soon[2]), args=("monthly",), name="monthly")
    scheduler.add_job(flaky, once(now + timedelta(seconds=2.5)), name="one-off")

    counts: dict[str, int] = {}

    def on_event(event: JobSucceeded | JobFailed) -> None:
        counts[type(event).__name__] = counts.get(type(event).__name__, 0) + 1
        if isinstance(event, JobFailed):
            print(f"         event: {event.job_name} failed: {event.exception!r}", flush=True)

    scheduler.subscribe(on_event, JobSucceeded, JobFailed)
    async with scheduler:
        print(f"scheduler {scheduler.state.value} with {len(scheduler.jobs)} jobs:", flush=True)
        for job in scheduler.jobs:
            print(f"  {job.name:<12} next {job.next_run:%H:%M:%S.%f}", flush=True)
        await asyncio.sleep(6.5)  # the demo's run time; the jobs fire meanwhile
    print(f"shut down cleanly ({scheduler.state.value}); events: {counts}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
