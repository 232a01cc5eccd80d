"""Job options (design §1 "Job options", §2 misfire/coalesce/jitter, §3 waits and limits),
each checked on the virtual clock."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from asyncron import (
    ConfigurationError,
    InvalidScheduleError,
    JobFailed,
    JobMissed,
    JobRemoved,
    JobSkipped,
    JobStarted,
    JobSucceeded,
    MissReason,
    RemovalReason,
    RunContext,
    RunKind,
    RunTimeout,
    Scheduler,
    SkipReason,
    cron,
    every,
    once,
)
from asyncron.testing import VirtualClock
from tests._virtual import T0, Factory, Recorder, at, pause, shut_down


class Runs:
    """A job function that records its runs and can be held open with a gate."""

    def __init__(self, clock: VirtualClock, *, seconds: float = 0, gated: bool = False) -> None:
        self.clock = clock
        self.seconds = seconds
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.started: list[tuple[datetime, datetime]] = []  # (tick, start)
        self.active = 0
        self.peak = 0

    async def __call__(self, ctx: RunContext) -> None:
        self.started.append((ctx.tick, self.clock.now()))
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.seconds:
                await pause(self.clock, self.seconds)
            await self.gate.wait()
        finally:
            self.active -= 1

    @property
    def ticks(self) -> list[datetime]:
        return [tick for tick, _ in self.started]


def noop() -> None:
    pass


# --- local overlap -------------------------------------------------------------------


class TestMaxInstances:
    async def test_two_instances_run_concurrently_and_a_third_is_skipped(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """max_instances=2 lets two runs overlap; the third tick is skipped as overlap."""
        runs = Runs(clock, gated=True)
        rec = Recorder()
        scheduler.subscribe(rec, JobSkipped)
        job = scheduler.add_job(runs, every(minutes=1), max_instances=2)
        await clock.advance(minutes=3)
        assert runs.ticks == [at(1), at(2)]
        assert runs.active == 2
        assert job.running == 2
        assert [(e.tick, e.reason) for e in rec.events] == [(at(3), SkipReason.OVERLAP)]  # type: ignore[attr-defined]
        runs.gate.set()
        await clock.advance(minutes=1)
        assert runs.ticks == [at(1), at(2), at(4)]
        assert runs.peak == 2


class TestOverlap:
    async def test_skip_drops_the_tick_while_a_run_is_in_progress(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """overlap="skip" (the default) skips ticks that fall due during a run."""
        runs = Runs(clock, seconds=150)
        rec = Recorder()
        scheduler.subscribe(rec, JobSkipped)
        scheduler.add_job(runs, every(minutes=1))
        await clock.advance(minutes=4)
        assert runs.ticks == [at(1), at(4)]
        assert [(e.tick, e.reason) for e in rec.events] == [  # type: ignore[attr-defined]
            (at(2), SkipReason.OVERLAP),
            (at(3), SkipReason.OVERLAP),
        ]

    async def test_wait_runs_the_waiting_tick_when_the_run_ends(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """overlap="wait" queues the tick; it runs, with its own tick, when the first ends."""
        runs = Runs(clock, seconds=90)
        rec = Recorder()
        scheduler.subscribe(rec, JobStarted)
        scheduler.add_job(runs, every(minutes=1), overlap="wait")
        await clock.advance(minutes=2, seconds=10)
        assert scheduler.waiting_runs == 1
        await clock.advance(seconds=30)
        assert runs.started == [(at(1), at(1)), (at(2), at(2, 30))]
        assert scheduler.waiting_runs == 0
        assert [e.lateness for e in rec.events] == [timedelta(0), timedelta(seconds=30)]  # type: ignore[attr-defined]

    async def test_wait_with_coalesce_keeps_one_waiting_tick(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """With coalesce=True a newer waiting tick replaces the older: JobMissed(coalesced)."""
        runs = Runs(clock, gated=True)
        rec = Recorder()
        scheduler.subscribe(rec, JobMissed)
        job = scheduler.add_job(runs, every(minutes=1), overlap="wait")
        await clock.advance(minutes=4)
        assert scheduler.waiting_runs == 1
        assert job.running == 1
        missed = rec.of(JobMissed)
        assert [(m.reason, m.first_tick, m.count) for m in missed] == [
            (MissReason.COALESCED, at(2), 1),
            (MissReason.COALESCED, at(3), 1),
        ]
        runs.gate.set()
        await clock.advance(seconds=1)
        assert runs.ticks == [at(1), at(4)]
        assert scheduler.waiting_runs == 0

    async def test_wait_without_coalesce_queues_up_to_a_hundred(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """With coalesce=False at most 100 ticks wait; then the oldest is dropped (queue_full)."""
        runs = Runs(clock, gated=True)
        rec = Recorder()
        scheduler.subscribe(rec, JobMissed)
        scheduler.add_job(runs, every(seconds=1), overlap="wait", coalesce=False)
        await clock.advance(seconds=100)
        assert scheduler.waiting_runs == 99
        assert rec.events == []
        await clock.advance(seconds=3)
        assert scheduler.waiting_runs == 100
        missed = rec.of(JobMissed)
        assert [(m.reason, m.first_tick) for m in missed] == [
            (MissReason.QUEUE_FULL, at(0, 2)),
            (MissReason.QUEUE_FULL, at(0, 3)),
        ]
        runs.gate.set()
        await clock.advance(seconds=0.5)
        assert runs.ticks == [at(0, 1), *(at(0, s) for s in range(4, 104))]
        assert scheduler.waiting_runs == 0


class TestGlobalLimit:
    async def test_wait_mode_queues_and_runs_later_with_lateness(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """At max_concurrent_jobs in "wait" mode a tick queues and starts when a slot frees."""
        scheduler = await start(max_concurrent_jobs=1)
        rec = Recorder()
        scheduler.subscribe(rec, JobStarted)
        first, second = Runs(clock, seconds=20), Runs(clock)
        scheduler.add_job(first, every(minutes=1), name="first")
        scheduler.add_job(second, every(minutes=1), name="second")
        await clock.advance(minutes=1, seconds=5)
        assert scheduler.waiting_runs == 1
        assert second.started == []
        await clock.advance(seconds=20)
        assert second.started == [(at(1), at(1, 20))]
        assert scheduler.waiting_runs == 0
        lateness = {e.job_name: e.lateness for e in rec.events}  # type: ignore[attr-defined]
        assert lateness == {"first": timedelta(0), "second": timedelta(seconds=20)}

    async def test_wait_mode_with_coalesce_keeps_one_waiting_tick_per_job(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """A tick queued for the global limit is the job's one waiting tick: newer replace it."""
        scheduler = await start(max_concurrent_jobs=1)
        rec = Recorder()
        scheduler.subscribe(rec, JobMissed)
        busy = Runs(clock, gated=True)
        scheduler.add_job(busy, every(minutes=1), name="busy", limit_runs=1)
        runs = Runs(clock)
        scheduler.add_job(runs, every(minutes=1), name="x", overlap="wait")
        await clock.advance(minutes=4)
        assert scheduler.waiting_runs == 1
        busy.gate.set()
        await clock.advance(seconds=1)
        assert runs.ticks == [at(4)]
        assert [(e.reason, e.first_tick) for e in rec.events] == [  # type: ignore[attr-defined]
            (MissReason.COALESCED, at(1)),
            (MissReason.COALESCED, at(2)),
            (MissReason.COALESCED, at(3)),
        ]

    async def test_skip_mode_skips_with_concurrency_limit(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """At max_concurrent_jobs in "skip" mode the tick is skipped as concurrency_limit."""
        scheduler = await start(max_concurrent_jobs=1, concurrency_mode="skip")
        rec = Recorder()
        scheduler.subscribe(rec, JobSkipped)
        first, second = Runs(clock, seconds=20), Runs(clock)
        scheduler.add_job(first, every(minutes=1), name="first")
        scheduler.add_job(second, every(minutes=1), name="second")
        await clock.advance(minutes=1, seconds=30)
        assert second.started == []
        assert scheduler.waiting_runs == 0
        assert [(e.job_name, e.reason) for e in rec.events] == [  # type: ignore[attr-defined]
            ("second", SkipReason.CONCURRENCY_LIMIT)
        ]

    def test_invalid_global_limit_options_raise(self, clock: VirtualClock) -> None:
        """max_concurrent_jobs and concurrency_mode are validated at construction."""
        with pytest.raises(ConfigurationError) as exc:
            Scheduler(clock=clock, max_concurrent_jobs=0)
        assert exc.value.field == "max_concurrent_jobs"
        with pytest.raises(ConfigurationError) as exc:
            Scheduler(clock=clock, concurrency_mode="queue")  # type: ignore[arg-type]
        assert exc.value.field == "concurrency_mode"


# --- how many runs, and when ------------------------------------------------------------


class TestLimitRuns:
    async def test_job_is_removed_after_n_runs(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """limit_runs=3 runs three ticks, then the job leaves with JobRemoved(limit_runs)."""
        runs = Runs(clock)
        rec = Recorder()
        scheduler.subscribe(rec, JobRemoved)
        job = scheduler.add_job(runs, every(minutes=1), limit_runs=3)
        await clock.advance(minutes=10)
        assert runs.ticks == [at(1), at(2), at(3)]
        assert job.removed
        assert job.next_run is None
        assert job.run_count == 3
        assert [e.reason for e in rec.events] == [RemovalReason.LIMIT_RUNS]  # type: ignore[attr-defined]
        assert scheduler.jobs == ()


class TestStartAt:
    async def test_future_start_at_is_the_first_tick_of_every(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """For every(), a future start_at is the first tick and anchors the following ones."""
        runs = Runs(clock)
        job = scheduler.add_job(runs, every(minutes=5), start_at=at(2, 30))
        assert job.next_run == at(2, 30)
        assert job.next_runs(3) == [at(2, 30), at(7, 30), at(12, 30)]
        await clock.advance(minutes=13)
        assert runs.ticks == [at(2, 30), at(7, 30), at(12, 30)]

    def test_naive_start_and_stop_are_wall_times_in_the_jobs_zone(
        self, clock: VirtualClock
    ) -> None:
        """Naive start_at/stop_at are read in the zone (Berlin is UTC+1 in January)."""
        scheduler = Scheduler(clock=clock, tz="Europe/Berlin")
        job = scheduler.add_job(
            noop,
            every(minutes=30),
            start_at=datetime(2026, 1, 1, 2, 15),
            stop_at=datetime(2026, 1, 1, 3, 15),
        )
        assert job.options.start_at == at(75)
        assert job.options.stop_at == at(135)
        assert job.next_runs(5) == [at(75), at(105), at(135)]

    async def test_past_start_at_anchors_but_fires_nothing_retroactively(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A past start_at only anchors the grid; nothing runs for ticks before activation."""
        runs = Runs(clock)
        await clock.advance(minutes=10)
        job = scheduler.add_job(runs, every(minutes=5), start_at=at(1, 30))
        assert job.next_run == at(11, 30)
        await clock.advance(minutes=2)
        assert runs.ticks == [at(11, 30)]

    async def test_start_at_now_runs_once_at_activation(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """start_at="now" runs once at activation as kind "start", for the latest tick."""
        kinds: list[tuple[datetime, RunKind, datetime]] = []

        async def job(ctx: RunContext) -> None:
            kinds.append((ctx.tick, ctx.kind, clock.now()))

        await clock.advance(minutes=3, seconds=20)
        handle = scheduler.add_job(job, every(minutes=5), start_at="now")
        assert handle.next_run == at(5)
        await clock.advance(minutes=2)
        assert kinds == [
            (at(0), RunKind.START, at(3, 20)),
            (at(5), RunKind.SCHEDULED, at(5)),
        ]

    async def test_start_at_now_runs_even_with_a_short_misfire_grace(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """The start run's tick is past by design; misfire_grace does not drop it."""
        kinds: list[RunKind] = []

        async def job(ctx: RunContext) -> None:
            kinds.append(ctx.kind)

        await clock.advance(minutes=30)
        scheduler.add_job(job, every(hours=1), start_at="now", misfire_grace=60)
        await clock.advance(minutes=31)
        assert kinds == [RunKind.START, RunKind.SCHEDULED]

    async def test_start_at_now_for_jobs_added_before_start(self, clock: VirtualClock) -> None:
        """A start_at="now" job added before start runs when the scheduler starts."""
        kinds: list[tuple[datetime, RunKind]] = []

        async def job(ctx: RunContext) -> None:
            kinds.append((ctx.tick, ctx.kind))

        scheduler = Scheduler(clock=clock)
        scheduler.add_job(job, cron("*/10 * * * *"), start_at="now")
        await clock.advance(minutes=25)
        await scheduler.start()
        try:
            await clock.advance(seconds=1)
            assert kinds == [(at(20), RunKind.START)]
        finally:
            await shut_down(scheduler, clock)

    async def test_start_at_now_does_not_run_again_after_stop_jobs(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """Resuming with start() after stop_jobs() is not a new activation run."""
        kinds: list[RunKind] = []

        async def job(ctx: RunContext) -> None:
            kinds.append(ctx.kind)

        await clock.advance(seconds=30)
        scheduler.add_job(job, every(hours=1), start_at="now")
        await clock.advance(seconds=1)
        await scheduler.stop_jobs()
        await scheduler.start()
        await clock.advance(minutes=10)
        assert kinds == [RunKind.START]


class TestStopAt:
    async def test_no_tick_after_stop_at_and_the_job_is_removed(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """Ticks stop at stop_at (inclusive); then the job leaves with JobRemoved(stop_at)."""
        runs = Runs(clock)
        rec = Recorder()
        scheduler.subscribe(rec, JobRemoved)
        job = scheduler.add_job(runs, every(minutes=1), stop_at=at(3, 30))
        assert job.next_runs(10) == [at(1), at(2), at(3)]
        await clock.advance(minutes=10)
        assert runs.ticks == [at(1), at(2), at(3)]
        assert job.removed
        assert [e.reason for e in rec.events] == [RemovalReason.STOP_AT]  # type: ignore[attr-defined]

    async def test_the_last_tick_waiting_for_its_slot_still_runs(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A final tick queued behind a run (overlap="wait") runs; then the job leaves."""
        runs = Runs(clock, seconds=90)
        rec = Recorder()
        scheduler.subscribe(rec, JobRemoved, JobSkipped, JobMissed)
        job = scheduler.add_job(runs, every(minutes=1), stop_at=at(2), overlap="wait")
        await clock.advance(minutes=5)
        assert runs.started == [(at(1), at(1)), (at(2), at(2, 30))]
        assert [type(e) for e in rec.events] == [JobRemoved]
        assert job.removed

    async def test_the_last_tick_waiting_for_the_global_limit_still_runs(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """A final tick queued for max_concurrent_jobs runs when a slot frees."""
        scheduler = await start(max_concurrent_jobs=1)
        scheduler.add_job(Runs(clock, seconds=30), every(minutes=1), name="busy", limit_runs=1)
        runs = Runs(clock)
        job = scheduler.add_job(runs, once(at(1)), name="last")
        await clock.advance(minutes=2)
        assert runs.started == [(at(1), at(1, 30))]
        assert job.removed

    async def test_start_at_now_with_no_tick_left_leaves_after_its_run(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """start_at="now" with stop_at before the next tick runs once, then is removed."""
        rec = Recorder()
        scheduler.subscribe(rec, JobRemoved)
        runs = Runs(clock)
        await clock.advance(minutes=30)
        job = scheduler.add_job(runs, every(hours=1), start_at="now", stop_at=at(40))
        await clock.advance(hours=2)
        assert runs.ticks == [at(0)]
        assert job.removed
        assert scheduler.jobs == ()
        assert [e.reason for e in rec.events] == [RemovalReason.STOP_AT]  # type: ignore[attr-defined]

    @pytest.mark.parametrize("offset", [timedelta(0), timedelta(minutes=-1)])
    def test_stop_at_not_after_start_at_raises(
        self, clock: VirtualClock, offset: timedelta
    ) -> None:
        """stop_at <= start_at is refused, naming stop_at."""
        scheduler = Scheduler(clock=clock)
        with pytest.raises(ConfigurationError) as exc:
            scheduler.add_job(noop, every(minutes=1), start_at=at(10), stop_at=at(10) + offset)
        assert exc.value.field == "stop_at"
        assert "stop_at=" in str(exc.value)

    def test_stop_at_in_the_past_raises(self, clock: VirtualClock) -> None:
        """A stop_at that leaves no tick is refused at add_job, naming stop_at."""
        scheduler = Scheduler(clock=clock)
        with pytest.raises(ConfigurationError) as exc:
            scheduler.add_job(noop, every(minutes=1), stop_at=at(-1))
        assert exc.value.field == "stop_at"


class TestFromCompletion:
    async def test_next_tick_is_counted_from_the_end_of_the_run(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """With from_completion the interval runs from the end of the previous run."""
        runs = Runs(clock, seconds=30)
        job = scheduler.add_job(runs, every(minutes=1), from_completion=True)
        await clock.advance(minutes=1, seconds=10)
        assert job.next_run is None  # decided when the run ends
        await clock.advance(minutes=4)
        assert runs.ticks == [at(1), at(2, 30), at(4)]
        assert job.next_run == at(5, 30)

    async def test_a_paused_tick_does_not_end_the_schedule(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A from_completion tick skipped while paused still sets the next tick."""
        runs = Runs(clock)
        job = scheduler.add_job(runs, every(minutes=1), from_completion=True)
        job.pause()
        await clock.advance(minutes=1, seconds=30)
        assert job.next_run == at(2)
        job.resume()
        await clock.advance(minutes=2)
        assert runs.ticks == [at(2), at(3)]

    async def test_a_tick_refused_by_the_global_limit_does_not_end_the_schedule(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """A from_completion tick skipped as concurrency_limit still sets the next tick."""
        scheduler = await start(max_concurrent_jobs=1, concurrency_mode="skip")
        scheduler.add_job(Runs(clock, seconds=10), every(minutes=1), name="busy", limit_runs=1)
        runs = Runs(clock)
        job = scheduler.add_job(runs, every(minutes=1), name="fc", from_completion=True)
        await clock.advance(minutes=1, seconds=30)
        assert runs.ticks == []
        assert job.next_run == at(2)
        await clock.advance(minutes=1)
        assert runs.ticks == [at(2)]


class TestMisfireGrace:
    async def test_a_run_later_than_the_grace_is_missed(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A waiting tick that would start later than misfire_grace is JobMissed(late)."""
        runs = Runs(clock, seconds=90)
        rec = Recorder()
        scheduler.subscribe(rec, JobMissed)
        scheduler.add_job(runs, every(minutes=1), overlap="wait", misfire_grace=20)
        await clock.advance(minutes=3, seconds=10)
        assert runs.ticks == [at(1), at(3)]
        assert [(e.reason, e.count, e.first_tick) for e in rec.events] == [  # type: ignore[attr-defined]
            (MissReason.LATE, 1, at(2))
        ]

    async def test_a_run_within_the_grace_starts(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A waiting tick that starts within misfire_grace runs, late."""
        runs = Runs(clock, seconds=70)
        scheduler.add_job(runs, every(minutes=1), overlap="wait", misfire_grace=20)
        await clock.advance(minutes=2, seconds=15)
        assert runs.started == [(at(1), at(1)), (at(2), at(2, 10))]

    async def test_zero_grace_runs_ticks_that_start_on_time(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """misfire_grace=0 still runs a tick that starts exactly on time."""
        runs = Runs(clock)
        scheduler.add_job(runs, every(minutes=1), misfire_grace=0)
        await clock.advance(minutes=2)
        assert runs.ticks == [at(1), at(2)]

    async def test_a_tick_started_late_by_the_global_limit_is_missed(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """Lateness counts the global-limit wait: past the grace the tick is JobMissed(late)."""
        scheduler = await start(max_concurrent_jobs=1)
        rec = Recorder()
        scheduler.subscribe(rec, JobMissed)
        slow, strict = Runs(clock, seconds=30), Runs(clock)
        scheduler.add_job(slow, every(minutes=1), name="slow")
        scheduler.add_job(strict, every(minutes=1), name="strict", misfire_grace=10)
        await clock.advance(minutes=1, seconds=40)
        assert strict.started == []
        (missed,) = rec.events
        assert (missed.job_name, missed.reason, missed.first_tick) == (  # type: ignore[attr-defined]
            "strict",
            MissReason.LATE,
            at(1),
        )


class TestWallClockSteps:
    async def test_forward_step_coalesces_into_one_run_and_one_missed_event(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """After a one-hour wall jump only the latest tick runs; one JobMissed counts the rest."""
        runs = Runs(clock)
        rec = Recorder()
        scheduler.subscribe(rec, JobMissed)
        scheduler.add_job(runs, every(minutes=1))
        await clock.advance(seconds=10)
        clock.step(timedelta(hours=1))
        await clock.advance(seconds=1)
        assert runs.ticks == [at(60)]
        (missed,) = rec.events
        assert (missed.reason, missed.count) == (MissReason.COALESCED, 59)  # type: ignore[attr-defined]
        assert (missed.first_tick, missed.last_tick) == (at(1), at(59))  # type: ignore[attr-defined]
        await clock.advance(minutes=1)
        assert runs.ticks == [at(60), at(61)]

    async def test_forward_step_without_coalesce_runs_missed_ticks_within_grace_in_order(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """coalesce=False runs each missed tick within the grace, in order; older are late."""
        runs = Runs(clock)
        rec = Recorder()
        scheduler.subscribe(rec, JobMissed)
        scheduler.add_job(
            runs,
            every(minutes=1),
            coalesce=False,
            misfire_grace=timedelta(minutes=5),
            overlap="wait",  # the ticks are due together; each passes the overlap rule
        )
        await clock.advance(seconds=10)
        clock.step(timedelta(hours=1))
        await clock.advance(seconds=1)
        assert runs.ticks == [at(56), at(57), at(58), at(59), at(60)]
        (missed,) = rec.events
        assert (missed.reason, missed.count) == (MissReason.LATE, 55)  # type: ignore[attr-defined]
        assert (missed.first_tick, missed.last_tick) == (at(1), at(55))  # type: ignore[attr-defined]

    async def test_forward_step_without_coalesce_keeps_the_newest_hundred_ticks(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """Past 100 missed ticks the oldest are dropped as queue_full; the newest 100 run."""
        runs = Runs(clock)
        rec = Recorder()
        scheduler.subscribe(rec, JobMissed)
        scheduler.add_job(runs, every(minutes=1), coalesce=False, overlap="wait")
        await clock.advance(seconds=10)
        clock.step(timedelta(hours=3))
        await clock.advance(seconds=1)
        assert runs.ticks == [at(m) for m in range(81, 181)]
        (missed,) = rec.events
        assert (missed.reason, missed.count) == (MissReason.QUEUE_FULL, 80)  # type: ignore[attr-defined]
        assert (missed.first_tick, missed.last_tick) == (at(1), at(80))  # type: ignore[attr-defined]

    async def test_backward_step_never_runs_early(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """After the wall clock steps back an hour, the next tick waits for its wall time."""
        runs = Runs(clock)
        scheduler.add_job(runs, every(minutes=1))
        await clock.advance(seconds=10)
        clock.step(timedelta(hours=-1))
        await clock.advance(minutes=60)
        assert runs.started == []
        await clock.advance(seconds=50)
        assert runs.started == [(at(1), at(1))]


class TestJitter:
    @staticmethod
    async def delays(seed: int) -> list[tuple[datetime, timedelta]]:
        clock = VirtualClock(T0)
        runs = Runs(clock)
        scheduler = Scheduler(clock=clock, random=random.Random(seed))
        scheduler.add_job(runs, every(minutes=1), jitter=30)
        await scheduler.start()
        try:
            await clock.advance(minutes=5, seconds=40)
        finally:
            await shut_down(scheduler, clock)
        return [(tick, start - tick) for tick, start in runs.started]

    async def test_start_is_delayed_within_jitter_and_the_tick_is_kept(self) -> None:
        """Each start is delayed by a draw in [0, jitter]; the tick stays the scheduled one."""
        delays = await self.delays(1)
        assert [tick for tick, _ in delays] == [at(m) for m in range(1, 6)]
        assert all(timedelta(0) <= d <= timedelta(seconds=30) for _, d in delays)
        assert len({d for _, d in delays}) > 1

    async def test_draws_are_reproducible_with_a_seeded_random(self) -> None:
        """Scheduler(random=Random(seed)) makes the jitter draws repeatable."""
        assert await self.delays(1) == await self.delays(1)
        assert await self.delays(1) != await self.delays(2)

    async def test_jitter_is_capped_before_the_next_tick(self, clock: VirtualClock) -> None:
        """A jitter longer than the interval never delays a start past the next tick."""
        runs = Runs(clock)
        scheduler = Scheduler(clock=clock, random=random.Random(5))
        scheduler.add_job(runs, every(minutes=1), jitter=timedelta(minutes=10))
        await scheduler.start()
        try:
            await clock.advance(minutes=10)
        finally:
            await shut_down(scheduler, clock)
        assert len(runs.started) >= 8
        assert all(
            timedelta(0) <= start - tick < timedelta(minutes=1) for tick, start in runs.started
        )

    async def test_lateness_is_measured_from_tick_plus_jitter(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """A jittered start is not late: lateness excludes the jitter delay."""
        scheduler = await start(random=random.Random(3))
        rec = Recorder()
        scheduler.subscribe(rec, JobStarted)
        scheduler.add_job(Runs(clock), every(minutes=1), jitter=timedelta(seconds=20))
        await clock.advance(minutes=3)
        assert [e.lateness for e in rec.events] == [timedelta(0)] * 2  # type: ignore[attr-defined]
        assert all(e.start > e.tick for e in rec.events)  # type: ignore[attr-defined]


class TestTimeout:
    async def test_async_run_is_cancelled_and_fails_with_run_timeout(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """An async run longer than timeout is cancelled and ends as JobFailed(RunTimeout)."""
        rec = Recorder()
        scheduler.subscribe(rec, JobFailed, JobSucceeded)
        seen: list[str] = []

        async def job(ctx: RunContext) -> None:
            try:
                await pause(clock, 60)
            except asyncio.CancelledError:
                seen.append(f"cancelled at {clock.now():%M:%S}, ctx.cancelled={ctx.cancelled}")
                raise

        scheduler.add_job(job, every(minutes=5), timeout=10)
        await clock.advance(minutes=5, seconds=30)
        assert seen == ["cancelled at 05:10, ctx.cancelled=True"]
        (failed,) = rec.events
        assert isinstance(failed, JobFailed)
        assert isinstance(failed.exception, RunTimeout)
        assert isinstance(failed.exception, TimeoutError)
        assert failed.end == at(5, 10)

    async def test_async_run_that_swallows_the_cancellation_still_times_out(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A run that catches the cancellation and returns still ends as RunTimeout."""
        rec = Recorder()
        scheduler.subscribe(rec, JobFailed, JobSucceeded)

        async def job() -> str:
            try:
                await pause(clock, 60)
            except asyncio.CancelledError:
                return "swallowed"
            return "finished"

        scheduler.add_job(job, every(minutes=5), timeout=10)
        await clock.advance(minutes=5, seconds=30)
        (event,) = rec.events
        assert isinstance(event, JobFailed)
        assert isinstance(event.exception, RunTimeout)

    async def test_fast_async_run_is_not_affected(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A run that ends within its timeout succeeds."""
        rec = Recorder()
        scheduler.subscribe(rec, JobFailed, JobSucceeded)
        scheduler.add_job(Runs(clock, seconds=9), every(minutes=5), timeout=10)
        await clock.advance(minutes=5, seconds=30)
        assert [type(e) for e in rec.events] == [JobSucceeded]

    async def test_plain_run_sees_cancelled_and_fails_after_it_returns(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A plain run past its timeout sees ctx.cancelled, keeps its slot, then fails."""
        rec = Recorder()
        scheduler.subscribe(rec, JobFailed, JobSucceeded)
        release = threading.Event()
        flags: list[bool] = []

        def job(ctx: RunContext) -> None:
            release.wait(timeout=10)
            flags.append(ctx.cancelled)

        clock.thread_wait = 0.05  # the thread waits for this test, not for the clock
        handle = scheduler.add_job(job, every(minutes=5), timeout=10)
        await clock.advance(minutes=5, seconds=30)
        assert rec.events == []
        assert handle.running == 1
        release.set()
        clock.thread_wait = 10  # now the thread finishes on its own: wait for it
        await clock.advance(seconds=1)
        assert flags == [True]
        (failed,) = rec.events
        assert isinstance(failed, JobFailed)
        assert isinstance(failed.exception, RunTimeout)
        assert handle.running == 0


# --- defaults and validation ---------------------------------------------------------------


class TestJobDefaults:
    def test_defaults_apply_and_add_job_overrides(self, clock: VirtualClock) -> None:
        """job_defaults fill options a job does not give; given options win."""
        scheduler = Scheduler(
            clock=clock, job_defaults={"max_instances": 3, "misfire_grace": 30, "coalesce": False}
        )
        plain = scheduler.add_job(noop, every(minutes=1))
        own = scheduler.add_job(noop, every(minutes=1), max_instances=1, misfire_grace=None)
        assert plain.options.max_instances == 3
        assert plain.options.misfire_grace == timedelta(seconds=30)
        assert plain.options.coalesce is False
        assert own.options.max_instances == 1
        assert own.options.misfire_grace is None
        assert own.options.coalesce is False

    def test_built_in_defaults(self, clock: VirtualClock) -> None:
        """Without job_defaults: one instance, skip, coalesce, no grace/jitter/timeout."""
        job = Scheduler(clock=clock).add_job(noop, every(minutes=1))
        opts = job.options
        assert (opts.max_instances, opts.overlap, opts.coalesce) == (1, "skip", True)
        assert opts.misfire_grace is opts.jitter is opts.timeout is opts.limit_runs is None
        assert (opts.distributed, opts.on_lock_lost, opts.from_completion) == (
            True,
            "cancel",
            False,
        )

    @pytest.mark.parametrize(
        ("defaults", "field"),
        [({"max_instances": 0}, "max_instances"), ({"colour": "red"}, "job_defaults")],
    )
    def test_invalid_defaults_fail_at_construction(
        self, clock: VirtualClock, defaults: dict[str, Any], field: str
    ) -> None:
        """Bad job_defaults raise when the scheduler is built, not at the first add_job."""
        with pytest.raises(ConfigurationError) as exc:
            Scheduler(clock=clock, job_defaults=defaults)
        assert exc.value.field == field


DURATIONS = ("misfire_grace", "jitter", "timeout")


class TestDurationOptions:
    @pytest.mark.parametrize("field", DURATIONS)
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (5, timedelta(seconds=5)),
            (2.5, timedelta(seconds=2.5)),
            (timedelta(minutes=1), timedelta(minutes=1)),
        ],
    )
    def test_seconds_or_timedelta_are_stored_as_timedelta(
        self, clock: VirtualClock, field: str, value: Any, expected: timedelta
    ) -> None:
        """Each duration option takes seconds or a timedelta and stores a timedelta."""
        job = Scheduler(clock=clock).add_job(noop, every(minutes=1), **{field: value})
        assert getattr(job.options, field) == expected

    @pytest.mark.parametrize("field", DURATIONS)
    @pytest.mark.parametrize("value", [True, False])
    def test_bool_is_rejected_naming_the_field(
        self, clock: VirtualClock, field: str, value: bool
    ) -> None:
        """A bool is not a duration: ConfigurationError naming the field."""
        with pytest.raises(ConfigurationError) as exc:
            Scheduler(clock=clock).add_job(noop, every(minutes=1), **{field: value})
        assert exc.value.field == field
        assert f"{field}={value!r}" in str(exc.value)

    @pytest.mark.parametrize("field", ["stop_timeout", "skew_threshold"])
    def test_scheduler_durations_take_seconds_and_reject_bool(
        self, clock: VirtualClock, field: str
    ) -> None:
        """Scheduler duration options follow the same rule."""
        Scheduler(clock=clock, **{field: 2})
        Scheduler(clock=clock, **{field: timedelta(seconds=2)})
        with pytest.raises(ConfigurationError) as exc:
            Scheduler(clock=clock, **{field: True})
        assert exc.value.field == field

    def test_timeout_must_be_positive(self, clock: VirtualClock) -> None:
        """timeout=0 would cancel every run at once and is refused."""
        with pytest.raises(ConfigurationError) as exc:
            Scheduler(clock=clock).add_job(noop, every(minutes=1), timeout=0)
        assert exc.value.field == "timeout"


class TestInvalidOptions:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("max_instances", 0),
            ("max_instances", 1.5),
            ("max_instances", True),
            ("overlap", "x"),
            ("limit_runs", 0),
            ("misfire_grace", -1),
            ("misfire_grace", "10s"),
            ("jitter", -0.5),
            ("coalesce", 1),
            ("from_completion", "yes"),
            ("on_lock_lost", "ignore"),
            ("start_at", "tomorrow"),
            ("stop_at", 12),
            ("before_run", 3),
            ("listeners", [1]),
            ("colour", "red"),
        ],
    )
    def test_invalid_value_raises_naming_field_and_value(
        self, clock: VirtualClock, field: str, value: Any
    ) -> None:
        """Each bad option value raises ConfigurationError naming the field and the value."""
        scheduler = Scheduler(clock=clock)
        with pytest.raises(ConfigurationError) as exc:
            scheduler.add_job(noop, every(minutes=1), **{field: value})
        assert exc.value.field == field
        assert exc.value.value == value
        assert f"{field}={value!r}" in str(exc.value)
        assert scheduler.jobs == ()

    def test_update_job_validates_options_too(self, clock: VirtualClock) -> None:
        """update_job refuses the same bad values and leaves the job unchanged."""
        scheduler = Scheduler(clock=clock)
        job = scheduler.add_job(noop, every(minutes=1), max_instances=2)
        with pytest.raises(ConfigurationError) as exc:
            scheduler.update_job(job, max_instances=0)
        assert exc.value.field == "max_instances"
        assert job.options.max_instances == 2


class TestOnce:
    async def test_once_now_runs_once_then_the_job_is_removed(self, clock: VirtualClock) -> None:
        """once("now") added before start runs at start, once, then the job is removed."""
        scheduler = Scheduler(clock=clock)
        rec = Recorder()
        scheduler.subscribe(rec, JobStarted, JobRemoved)
        runs = Runs(clock)
        job = scheduler.add_job(runs, once("now"))
        await clock.advance(minutes=1)
        await scheduler.start()
        try:
            await clock.advance(hours=1)
        finally:
            await shut_down(scheduler, clock)
        assert runs.ticks == [at(1)]
        assert job.removed
        assert job.run_count == 1
        assert [e.reason for e in rec.of(JobRemoved)] == [RemovalReason.EXHAUSTED]

    async def test_once_at_datetimes_runs_each_then_leaves(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """once(at=[...]) drops past times, runs the rest in order, then is removed."""
        runs = Runs(clock)
        job = scheduler.add_job(runs, once([at(-5), at(3), at(1)]))
        assert job.next_runs(5) == [at(1), at(3)]
        await clock.advance(minutes=5)
        assert runs.ticks == [at(1), at(3)]
        assert job.removed

    def test_once_with_only_past_times_raises_naming_at(self, clock: VirtualClock) -> None:
        """once() whose times are all past is refused at add_job, naming ``at``."""
        scheduler = Scheduler(clock=clock)
        with pytest.raises(InvalidScheduleError) as exc:
            scheduler.add_job(noop, once([at(-10), at(-1)]))
        assert exc.value.field == "at"
        assert scheduler.jobs == ()


class TestScale:
    async def test_a_week_of_minutely_runs_on_the_virtual_clock(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A week of every(minutes=1) runs 10,080 times on the virtual clock."""
        count = 0

        async def job() -> None:
            nonlocal count
            count += 1

        handle = scheduler.add_job(job, every(minutes=1))
        await clock.advance(days=7)
        assert count == 10_080
        assert handle.run_count == 10_080
        assert handle.last_run == T0 + timedelta(days=7)


class TestOptionsCache:
    """Jobs given equal options share one validated JobOptions; checks still apply."""

    def test_equal_options_share_one_instance(self) -> None:
        """Two jobs with the same options hold the same JobOptions object."""
        scheduler = Scheduler()
        first = scheduler.add_job(noop, every(minutes=1), max_instances=3, overlap="wait")
        second = scheduler.add_job(noop, every(minutes=1), max_instances=3, overlap="wait")
        assert first.options is second.options
        assert first.options.max_instances == 3

    def test_a_bool_never_passes_as_the_cached_number(self) -> None:
        """After max_instances=1 is cached, max_instances=True is still rejected."""
        scheduler = Scheduler()
        scheduler.add_job(noop, every(minutes=1), max_instances=1)
        with pytest.raises(ConfigurationError, match="max_instances=True"):
            scheduler.add_job(noop, every(minutes=1), max_instances=True)
