"""How to test your own schedules: ``asyncron.testing.VirtualClock`` and the pytest
fixtures ``asyncron_clock`` / ``asyncron_scheduler``.

A VirtualClock only moves when told to. ``await clock.advance(days=7)`` walks to every
due instant in order, lets the jobs that fall due run, and returns once they have
finished (or wait on something other than the clock): a week of schedule in
milliseconds, on the same code path as real time.

``python examples/testing_with_virtual_clock.py`` runs :func:`main`; the ``test_*``
functions below are what the same checks look like in your own pytest suite (the
fixtures are registered automatically when asyncron is installed).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from asyncron import JobMissed, MissReason, RunContext, Scheduler, every, weekly
from asyncron.testing import VirtualClock

MONDAY = datetime(2026, 3, 23, tzinfo=UTC)  # a Monday, the week before Berlin's DST change


class Reports:
    """The job under test: remembers the tick it ran for."""

    def __init__(self) -> None:
        self.ticks: list[datetime] = []

    async def __call__(self, ctx: RunContext) -> None:
        self.ticks.append(ctx.tick)


async def main() -> list[datetime]:
    """A weekday report at 09:00 Berlin time, checked over two weeks that span the
    switch to summer time (09:00 is 08:00 UTC before it and 07:00 UTC after it)."""
    clock = VirtualClock(MONDAY)
    scheduler = Scheduler(clock=clock, tz="Europe/Berlin")
    report = Reports()
    job = scheduler.add_job(report, weekly(on=["mon", "tue", "wed", "thu", "fri"], at="09:00"))
    async with scheduler:
        await clock.advance(weeks=2)
    assert len(report.ticks) == 10
    assert report.ticks[0] == datetime(2026, 3, 23, 8, tzinfo=UTC)  # CET, UTC+1
    assert report.ticks[5] == datetime(2026, 3, 30, 7, tzinfo=UTC)  # CEST, UTC+2
    assert job.run_count == 10
    for tick in report.ticks:
        print(f"report ran for {tick:%a %Y-%m-%d %H:%M} UTC")
    return report.ticks


# --- the same kind of checks as pytest tests ------------------------------------------
# In a conftest.py, override ``asyncron_clock_start`` to choose where the clock starts:
#
#     @pytest.fixture
#     def asyncron_clock_start() -> datetime:
#         return datetime(2026, 3, 23, tzinfo=UTC)


@pytest.mark.asyncio
async def test_every_five_minutes(
    asyncron_scheduler: Scheduler, asyncron_clock: VirtualClock
) -> None:
    """``asyncron_scheduler`` is already running on ``asyncron_clock``."""
    report = Reports()
    job = asyncron_scheduler.add_job(report, every(minutes=5))
    start = asyncron_clock.now()
    await asyncron_clock.advance(hours=1)
    assert len(report.ticks) == 12
    assert report.ticks[-1] == start + timedelta(hours=1)
    assert job.next_run == start + timedelta(hours=1, minutes=5)


@pytest.mark.asyncio
async def test_a_suspended_laptop_runs_the_latest_tick_once(
    asyncron_scheduler: Scheduler, asyncron_clock: VirtualClock
) -> None:
    """``clock.step()`` moves the wall clock alone, like a suspend or an NTP step: the
    ticks missed meanwhile are coalesced into one run plus one JobMissed event."""
    report = Reports()
    missed: list[JobMissed] = []
    asyncron_scheduler.subscribe(missed.append, JobMissed)
    asyncron_scheduler.add_job(report, every(minutes=10))
    asyncron_clock.step(timedelta(hours=1))
    await asyncron_clock.advance(0)  # let the scheduler notice
    assert len(report.ticks) == 1
    assert [(m.reason, m.count) for m in missed] == [(MissReason.COALESCED, 5)]


@pytest.mark.asyncio
async def test_a_job_that_waits_on_the_clock(
    asyncron_scheduler: Scheduler, asyncron_clock: VirtualClock
) -> None:
    """A job that sleeps should sleep on the scheduler's clock, so the test controls it."""
    clock = asyncron_clock
    finished: list[datetime] = []

    async def export() -> None:
        await clock.sleep_until(clock.monotonic() + 90)  # "takes" 90 seconds
        finished.append(clock.now())

    asyncron_scheduler.add_job(export, every(hours=1))
    await clock.advance(hours=1, seconds=89)
    assert finished == []
    await clock.advance(seconds=1)
    assert finished == [clock.now()]


if __name__ == "__main__":
    asyncio.run(main())
