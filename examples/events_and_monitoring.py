"""Events and monitoring: subscriptions, per-job listeners, a veto hook and a Monitor.

Run it with ``python examples/events_and_monitoring.py``: three jobs run for a few
seconds (one succeeds, one fails, one overlaps itself), then a summary is printed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from asyncron import (
    Clock,
    Event,
    JobFailed,
    JobMissed,
    JobSkipped,
    JobSucceeded,
    RunContext,
    Scheduler,
    SchedulerStarted,
    SchedulerStopped,
    every,
)


class CountingMonitor:
    """A Monitor: called synchronously once per finished (or skipped) run with plain
    values. Keep it quick; export the numbers to Prometheus, StatsD, logs…"""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.slowest: dict[str, float] = {}

    def record_run(
        self, job: str, status: str, reason: str | None, duration: float, lateness: float
    ) -> None:
        """Count the outcome and remember the slowest run of each job."""
        self.outcomes[job, status] += 1
        self.slowest[job] = max(self.slowest.get(job, 0.0), duration)


@dataclass
class Observed:
    """What the callbacks of this example saw."""

    event_types: Counter[str] = field(default_factory=Counter)
    lines: list[str] = field(default_factory=list)
    maintenance: bool = False


async def ping() -> str:
    """Succeeds every second."""
    return "pong"


async def flaky() -> None:
    """Fails every time: a JobFailed event, never a crash of the scheduler."""
    raise RuntimeError("upstream is down")


async def slow(clock: Clock) -> None:
    """Takes 1.5 s but is due every second, so every other tick is skipped (overlap).

    It waits on the scheduler's clock rather than ``asyncio.sleep`` so that a test on a
    VirtualClock runs it in no real time."""
    await clock.sleep_until(clock.monotonic() + 1.5)


def build(clock: Clock | None = None) -> tuple[Scheduler, CountingMonitor, Observed]:
    """Create the scheduler with its monitor, veto hook, subscriptions and jobs."""
    monitor = CountingMonitor()
    seen = Observed()

    # before_run is the only synchronous hook: False (or raising) vetoes the run.
    def not_in_maintenance(ctx: RunContext) -> bool:
        return not seen.maintenance

    scheduler = Scheduler(monitor=monitor, clock=clock, before_run=not_in_maintenance)

    # A sync subscriber for every event (no types given = all of them).
    scheduler.subscribe(lambda event: seen.event_types.update([type(event).__name__]))

    # An async subscriber for some types, matched by isinstance. Callbacks run one at a
    # time in a dispatcher task, outside the run pipeline: a slow one never delays a run.
    async def alert(event: JobFailed | JobMissed) -> None:
        if isinstance(event, JobFailed):
            seen.lines.append(f"ALERT {event.job_name} failed: {event.exception!r}")
        else:
            seen.lines.append(f"ALERT {event.job_name} missed {event.count} ticks")

    scheduler.subscribe(alert, JobFailed, JobMissed)

    # subscribe() returns a Subscription: unsubscribe() it, or use it in ``with``.
    scheduler.subscribe(
        lambda event: seen.lines.append(f"scheduler: {type(event).__name__}"),
        SchedulerStarted,
        SchedulerStopped,
    )

    # Per-job listeners get that job's events only.
    def on_ping(event: Event) -> None:
        if isinstance(event, JobSucceeded):
            seen.lines.append(f"ping returned {event.return_value!r}")

    def on_slow(event: Event) -> None:
        if isinstance(event, JobSkipped):
            seen.lines.append(f"slow skipped: {event.reason.value}")

    scheduler.add_job(ping, every(seconds=1), name="ping", listeners=[on_ping])
    scheduler.add_job(flaky, every(seconds=2), name="flaky")
    scheduler.add_job(
        slow, every(seconds=1), args=(scheduler.clock,), name="slow", listeners=[on_slow]
    )
    return scheduler, monitor, seen


async def main(seconds: float = 3.5) -> None:
    """Run the jobs for a few seconds and print what the events and the monitor saw."""
    scheduler, monitor, seen = build()
    async with scheduler:
        await asyncio.sleep(seconds)
    print("\n".join(seen.lines))
    print("events:", dict(sorted(seen.event_types.items())))
    for (job, status), n in sorted(monitor.outcomes.items()):
        print(f"monitor: {job:<6} {status:<9} x{n}")


if __name__ == "__main__":
    asyncio.run(main())
