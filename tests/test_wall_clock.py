"""Wall-clock steps (NTP step, suspend, manual change): forward is a misfire, back waits.

The SystemClock tests patch the wall clock with time-machine (which leaves
``time.monotonic`` alone, like a real step) and rely on the timer re-checking wall time
at least once a second; their timeouts are bounds, not synchronisation. The same
behaviour is checked on the VirtualClock with ``clock.step()``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine

from asyncron import (
    Clock,
    ConfigurationError,
    JobMissed,
    MissReason,
    RunContext,
    Scheduler,
    every,
    once,
)
from asyncron.testing import VirtualClock

MINUTE = timedelta(minutes=1)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Runs:
    """A job function recording the tick and wall time of each run."""

    def __init__(self, now: Any) -> None:
        self.now = now
        self.ticks: list[datetime] = []
        self.walls: list[datetime] = []
        self.ran = asyncio.Event()

    async def __call__(self, ctx: RunContext) -> None:
        self.ticks.append(ctx.tick)
        self.walls.append(self.now())
        self.ran.set()


async def timer_asleep(scheduler: Scheduler) -> None:
    """Yield until the scheduler's timer is waiting, so a step happens mid-sleep."""
    for _ in range(1000):
        if scheduler._sleep_scope is not None or scheduler._sleep_future is not None:
            return
        await asyncio.sleep(0)
    raise AssertionError("the timer never went to sleep")


def subscribe_missed(scheduler: Scheduler) -> tuple[list[JobMissed], asyncio.Event]:
    missed: list[JobMissed] = []
    seen = asyncio.Event()

    def on_missed(event: JobMissed) -> None:
        missed.append(event)
        seen.set()

    scheduler.subscribe(on_missed, JobMissed)
    return missed, seen


class TestSystemClockSteps:
    async def test_step_forward_runs_a_coalesced_misfire_within_seconds(self) -> None:
        """A forward step runs the latest tick plus one JobMissed(coalesced) within ~1 s."""
        with time_machine.travel(T0 + timedelta(seconds=30), tick=True) as traveller:
            scheduler = Scheduler()
            runs = Runs(lambda: datetime.now(UTC))
            missed, _ = subscribe_missed(scheduler)
            scheduler.add_job(runs, every(minutes=1))
            async with scheduler:
                await timer_asleep(scheduler)
                traveller.shift(timedelta(minutes=5))
                begin = time.monotonic()
                await asyncio.wait_for(runs.ran.wait(), 5)
                elapsed = time.monotonic() - begin
        assert 0.0 < elapsed < 2.5
        assert runs.ticks == [T0 + 5 * MINUTE]
        assert len(missed) == 1
        event = missed[0]
        assert event.reason is MissReason.COALESCED
        assert (event.count, event.first_tick, event.last_tick) == (4, T0 + MINUTE, T0 + 4 * MINUTE)

    async def test_step_forward_beyond_the_grace_is_missed_late(self) -> None:
        """With a misfire_grace shorter than the step, the coalesced run is missed as late."""
        with time_machine.travel(T0 + timedelta(seconds=30), tick=True) as traveller:
            scheduler = Scheduler()
            runs = Runs(lambda: datetime.now(UTC))
            missed, seen = subscribe_missed(scheduler)
            scheduler.add_job(runs, every(minutes=1), misfire_grace=10)
            async with scheduler:
                await timer_asleep(scheduler)
                traveller.shift(timedelta(minutes=5))
                await asyncio.wait_for(seen.wait(), 5)
                while len(missed) < 2:
                    await asyncio.wait_for(seen.wait(), 5)
                    seen.clear()
        assert runs.ticks == []
        assert [e.reason for e in missed] == [MissReason.COALESCED, MissReason.LATE]
        assert missed[1].first_tick == T0 + 5 * MINUTE

    async def test_step_back_runs_nothing_early(self) -> None:
        """After a step back, the next tick waits for the wall clock to reach it."""
        with time_machine.travel(T0 + timedelta(seconds=58.5), tick=True) as traveller:
            scheduler = Scheduler()
            runs = Runs(lambda: datetime.now(UTC))
            missed, _ = subscribe_missed(scheduler)
            scheduler.add_job(runs, every(minutes=1))
            async with scheduler:
                await timer_asleep(scheduler)
                traveller.shift(-timedelta(hours=1))
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(runs.ran.wait()), 3)
                assert runs.ticks == []
                traveller.shift(timedelta(hours=1))
                await asyncio.wait_for(runs.ran.wait(), 5)
        assert runs.ticks == [T0 + MINUTE]
        assert runs.walls[0] >= T0 + MINUTE
        assert missed == []


class TestSystemClockWakeUps:
    @pytest.mark.parametrize("from_thread", [False, True], ids=["loop", "thread"])
    async def test_an_earlier_tick_wakes_the_sleeping_timer(self, from_thread: bool) -> None:
        """A job added while the timer sleeps (on the loop or from a worker thread) wakes
        it for its earlier tick: it runs long before the timer's next planned wake."""
        scheduler = Scheduler()
        ran = asyncio.Event()

        async def job() -> None:
            ran.set()

        async with scheduler:
            scheduler._recheck = 60.0  # so only the poke can wake the timer in time
            scheduler.add_job(job, once(datetime.now(UTC) + timedelta(hours=1)))
            await timer_asleep(scheduler)
            due = datetime.now(UTC) + timedelta(milliseconds=50)
            if from_thread:
                await asyncio.to_thread(scheduler.add_job, job, once(due))
            else:
                scheduler.add_job(job, once(due))
            await asyncio.wait_for(ran.wait(), 30)  # unwoken, the timer would sleep 60 s


class TestVirtualClockSteps:
    async def test_step_forward_runs_a_coalesced_misfire(
        self, asyncron_clock: VirtualClock
    ) -> None:
        """clock.step() forward: one run of the latest tick and one JobMissed(coalesced)."""
        clock = asyncron_clock
        scheduler = Scheduler(clock=clock)
        runs = Runs(clock.now)
        missed, _ = subscribe_missed(scheduler)
        scheduler.add_job(runs, every(minutes=1))
        async with scheduler:
            await clock.advance(seconds=30)
            clock.step(timedelta(minutes=5))
            await clock.advance(0)
            assert runs.ticks == [T0 + 5 * MINUTE]
            assert runs.walls == [T0 + timedelta(minutes=5, seconds=30)]
            await clock.advance(seconds=30)
            assert runs.ticks == [T0 + 5 * MINUTE, T0 + 6 * MINUTE]
        assert len(missed) == 1
        assert missed[0].reason is MissReason.COALESCED
        assert missed[0].count == 4

    async def test_step_back_runs_nothing_early(self, asyncron_clock: VirtualClock) -> None:
        """After a step back, the next tick waits for the wall clock to reach it."""
        clock = asyncron_clock
        scheduler = Scheduler(clock=clock)
        runs = Runs(clock.now)
        missed, _ = subscribe_missed(scheduler)
        job = scheduler.add_job(runs, every(minutes=1))
        async with scheduler:
            await clock.advance(seconds=58)
            clock.step(-timedelta(hours=1))
            await clock.advance(minutes=30)
            assert runs.ticks == []
            assert job.next_run == T0 + MINUTE
            await clock.advance(minutes=30, seconds=2)
            assert runs.ticks == [T0 + MINUTE]
            assert runs.walls == [T0 + MINUTE]
        assert missed == []

    async def test_step_while_idle_with_no_jobs(self, asyncron_clock: VirtualClock) -> None:
        """Steps with an empty heap are harmless; a job added later runs on time."""
        clock = asyncron_clock
        scheduler = Scheduler(clock=clock)
        runs = Runs(clock.now)
        async with scheduler:
            clock.step(timedelta(hours=2))
            clock.step(-timedelta(hours=3))
            await clock.advance(0)
            scheduler.add_job(runs, every(minutes=1))
            await clock.advance(minutes=1)
        assert runs.ticks == [T0 - timedelta(hours=1) + MINUTE]


class TestVirtualClock:
    def test_defaults_and_protocol(self) -> None:
        """A new clock starts at 2026-01-01T00:00Z, monotonic 0, and is a Clock."""
        clock = VirtualClock()
        assert clock.now() == T0
        assert clock.monotonic() == 0.0
        assert isinstance(clock, Clock)

    async def test_advance_moves_wall_and_monotonic_together(self) -> None:
        """advance() accepts a timedelta, seconds, or timedelta keywords."""
        clock = VirtualClock(T0)
        await clock.advance(timedelta(minutes=1))
        await clock.advance(30)
        await clock.advance(hours=1, seconds=30)
        assert clock.now() == T0 + timedelta(hours=1, minutes=2)
        assert clock.monotonic() == 3720.0

    async def test_step_moves_the_wall_clock_alone(self) -> None:
        """step() changes now() but not monotonic(), in both directions."""
        clock = VirtualClock(T0)
        clock.step(timedelta(hours=1))
        clock.step(-30)
        assert clock.now() == T0 + timedelta(minutes=59, seconds=30)
        assert clock.monotonic() == 0.0

    async def test_advance_to(self) -> None:
        """advance_to() moves to an aware instant, never backwards."""
        clock = VirtualClock(T0)
        await clock.advance_to(T0 + timedelta(days=1))
        assert clock.now() == T0 + timedelta(days=1)
        with pytest.raises(ConfigurationError, match="when"):
            await clock.advance_to(T0)
        with pytest.raises(ConfigurationError, match="when"):
            await clock.advance_to(datetime(2027, 1, 1))

    @pytest.mark.parametrize(
        ("args", "kwargs"),
        [
            ((-1,), {}),
            ((timedelta(seconds=-1),), {}),
            ((1,), {"hours": 1}),
            (("1",), {}),
            ((True,), {}),
            ((), {"fortnights": 1}),
        ],
    )
    async def test_bad_advance_raises(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Negative, mixed or non-numeric advances raise ConfigurationError."""
        clock = VirtualClock(T0)
        with pytest.raises(ConfigurationError):
            await clock.advance(*args, **kwargs)
        assert clock.now() == T0

    @pytest.mark.parametrize("start", [datetime(2026, 1, 1), "2026-01-01"])
    def test_start_must_be_aware(self, start: Any) -> None:
        """The start is an aware datetime."""
        with pytest.raises(ConfigurationError, match="start"):
            VirtualClock(start)

    async def test_sleepers_wake_in_deadline_order(self) -> None:
        """sleep_until() callers wake in deadline order, each at its own time."""
        clock = VirtualClock(T0)
        woke: list[tuple[str, float]] = []

        async def sleeper(name: str, deadline: float) -> None:
            await clock.sleep_until(deadline)
            woke.append((name, clock.monotonic()))

        tasks = [asyncio.create_task(sleeper(n, d)) for n, d in (("b", 20), ("a", 10), ("c", 30))]
        await clock.advance(25)
        assert woke == [("a", 10.0), ("b", 20.0)]
        await clock.advance(5)
        assert woke[-1] == ("c", 30.0)
        await asyncio.gather(*tasks)
