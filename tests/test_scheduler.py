"""The Scheduler: lifecycle states, the job registry, the Job handle, validation of
options, graceful shutdown, registry events, scale, and coordinated-key rules."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

import asyncron
from asyncron import (
    NAMESPACE,
    ConfigurationError,
    ConflictingJobError,
    Event,
    InvalidJobError,
    Job,
    JobAdded,
    JobLookupError,
    JobRemoved,
    JobUpdated,
    RemovalReason,
    RunStatus,
    Scheduler,
    SchedulerStarted,
    SchedulerState,
    SchedulerStateError,
    SchedulerStopped,
    cron,
    daily,
    every,
    once,
    random_every,
)
from asyncron._runner import RunEngine
from asyncron.distributed import MemoryLocker
from asyncron.testing import VirtualClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def noop() -> None:
    """A job function that does nothing."""


def plain_noop() -> None:
    """A plain job function that does nothing."""


def takes_one(value: int) -> None:
    """A job function with one required argument."""


class Recorder:
    """Records the clock's time at each call."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.calls: list[datetime] = []

    async def __call__(self) -> None:
        self.calls.append(self.clock.now())


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def scheduler(clock: VirtualClock) -> Scheduler:
    """A scheduler on the virtual clock, not started."""
    return Scheduler(clock=clock)


@pytest_asyncio.fixture
async def running(scheduler: Scheduler, clock: VirtualClock) -> AsyncIterator[Scheduler]:
    """A started scheduler on the virtual clock, shut down after the test (moving the
    clock through stop_timeout, so a failed test cannot hang in teardown)."""
    async with scheduler:
        try:
            yield scheduler
        finally:
            stopping = asyncio.ensure_future(scheduler.shutdown())
            while not stopping.done():
                await clock.advance(1)


def collect(scheduler: Scheduler, *types: type[Event]) -> list[Any]:
    events: list[Any] = []
    scheduler.subscribe(events.append, *types)
    return events


class TestLifecycle:
    async def test_new_scheduler_is_created(self, scheduler: Scheduler) -> None:
        """A new scheduler is in the created state and touches no event loop."""
        assert scheduler.state is SchedulerState.CREATED

    async def test_async_with_runs_and_shuts_down(self, scheduler: Scheduler) -> None:
        """``async with`` starts the scheduler and shuts it down on exit."""
        async with scheduler as entered:
            assert entered is scheduler
            assert scheduler.state is SchedulerState.RUNNING
        assert scheduler.state is SchedulerState.SHUT_DOWN

    async def test_start_twice_raises_naming_the_state(self, running: Scheduler) -> None:
        """Starting a running scheduler raises SchedulerStateError naming "running"."""
        with pytest.raises(SchedulerStateError, match="running"):
            await running.start()

    async def test_shutdown_is_idempotent(self, scheduler: Scheduler) -> None:
        """A second shutdown is a no-op."""
        await scheduler.start()
        await scheduler.shutdown()
        await scheduler.shutdown()
        assert scheduler.state is SchedulerState.SHUT_DOWN

    async def test_shutdown_before_start_is_terminal(self, scheduler: Scheduler) -> None:
        """Shutting down a scheduler that never started makes it shut_down."""
        await scheduler.shutdown()
        assert scheduler.state is SchedulerState.SHUT_DOWN

    async def test_add_job_after_shutdown_raises(self, scheduler: Scheduler) -> None:
        """add_job on a shut-down scheduler raises SchedulerStateError naming shut_down."""
        await scheduler.start()
        await scheduler.shutdown()
        with pytest.raises(SchedulerStateError, match="shut_down"):
            scheduler.add_job(noop, every(minutes=1))

    async def test_start_after_shutdown_raises(self, scheduler: Scheduler) -> None:
        """start on a shut-down scheduler raises SchedulerStateError naming shut_down."""
        await scheduler.start()
        await scheduler.shutdown()
        with pytest.raises(SchedulerStateError, match="shut_down") as info:
            await scheduler.start()
        assert info.value.state is SchedulerState.SHUT_DOWN

    async def test_stop_jobs_requires_running(self, scheduler: Scheduler) -> None:
        """stop_jobs on a scheduler that is not running raises naming its state."""
        with pytest.raises(SchedulerStateError, match="created"):
            await scheduler.stop_jobs()

    async def test_stop_jobs_then_start_resumes_without_catch_up(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """After stop_jobs nothing runs; start resumes from the next tick, no catch-up."""
        rec = Recorder(clock)
        job = scheduler.add_job(rec, every(minutes=1))
        async with scheduler:
            await clock.advance(minutes=1)
            assert rec.calls == [T0 + timedelta(minutes=1)]
            await scheduler.stop_jobs()
            assert scheduler.state is SchedulerState.STOPPED
            assert scheduler.jobs == (job,)
            await clock.advance(minutes=10)
            assert len(rec.calls) == 1
            await scheduler.start()
            assert scheduler.state is SchedulerState.RUNNING
            await clock.advance(minutes=1)
        assert rec.calls == [T0 + timedelta(minutes=1), T0 + timedelta(minutes=12)]

    async def test_stop_jobs_with_a_waiting_tick_keeps_the_overlap_rule(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """stop_jobs drops an overlap-queued tick and max_instances still holds after restart."""
        release = asyncio.Event()

        async def slow() -> None:
            await release.wait()

        job = scheduler.add_job(slow, every(minutes=1), overlap="wait")
        await scheduler.start()
        await clock.advance(minutes=2)
        assert (job.running, scheduler.waiting_runs) == (1, 1)
        stopping = asyncio.create_task(scheduler.stop_jobs())
        await clock.advance(0)
        release.set()
        await asyncio.wait_for(stopping, 5)
        assert job.running == 0
        release.clear()
        await scheduler.start()
        await clock.advance(minutes=2)
        assert job.running == 1
        release.set()
        await scheduler.shutdown()

    async def test_jobs_added_while_stopped_start_like_new_ones(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """Jobs added while stopped get their once("now")/start_at="now" run at start."""
        rec = Recorder(clock)
        await scheduler.start()
        await scheduler.stop_jobs()
        once_now = scheduler.add_job(rec, once("now"))
        scheduler.add_job(rec, every(hours=1), start_at="now")
        await clock.advance(minutes=1)
        await scheduler.start()
        await clock.advance(0)
        await scheduler.shutdown()
        assert rec.calls == [T0 + timedelta(minutes=1)] * 2
        assert once_now.removed

    async def test_shutdown_during_stop_jobs_stays_terminal(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A shutdown() racing a draining stop_jobs() leaves the scheduler shut_down."""

        async def work() -> None:
            await clock.sleep_until(clock.monotonic() + 5)

        scheduler.add_job(work, every(minutes=1))
        await scheduler.start()
        await clock.advance(minutes=1)
        stopping = asyncio.create_task(scheduler.stop_jobs())
        shutting = asyncio.create_task(scheduler.shutdown())
        await clock.advance(seconds=5)
        await asyncio.wait_for(asyncio.gather(stopping, shutting), 5)
        assert scheduler.state is SchedulerState.SHUT_DOWN
        with pytest.raises(SchedulerStateError, match="shut_down"):
            await scheduler.start()

    async def test_shutdown_while_starting_wins(self, clock: VirtualClock) -> None:
        """shutdown() during start() wins: start raises and closes the backends it opened."""
        gate = asyncio.Event()

        class SlowLocker(MemoryLocker):
            async def __aenter__(self) -> SlowLocker:
                await gate.wait()
                await super().__aenter__()
                return self

        locker = SlowLocker()
        scheduler = Scheduler(clock=clock, locker=locker)
        starting = asyncio.create_task(scheduler.start())
        await asyncio.sleep(0)
        await scheduler.shutdown()
        gate.set()
        with pytest.raises(SchedulerStateError, match="shut_down"):
            await asyncio.wait_for(starting, 5)
        assert scheduler.state is SchedulerState.SHUT_DOWN
        assert locker._entries == 0

    async def test_jobs_added_before_start_run_after_start(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """Jobs added before start preview their ticks from the clock and run once started."""
        rec = Recorder(clock)
        job = scheduler.add_job(rec, every(minutes=5))
        assert job.next_run == T0 + timedelta(minutes=5)
        assert job.next_runs(3) == [T0 + timedelta(minutes=m) for m in (5, 10, 15)]
        await clock.advance(minutes=5)
        assert rec.calls == []
        async with scheduler:
            await clock.advance(minutes=5)
        assert rec.calls == [T0 + timedelta(minutes=10)]

    async def test_lifespan_runs_the_scheduler(self, scheduler: Scheduler) -> None:
        """lifespan(app) is an async context manager that starts and shuts down."""
        async with scheduler.lifespan(object()):
            assert scheduler.state is SchedulerState.RUNNING
        assert scheduler.state is SchedulerState.SHUT_DOWN

    async def test_run_forever_returns_after_shutdown(self, scheduler: Scheduler) -> None:
        """run_forever runs until shutdown() is called, then returns."""
        started = asyncio.Event()
        scheduler.subscribe(lambda _: started.set(), SchedulerStarted)
        task = asyncio.create_task(scheduler.run_forever())
        await asyncio.wait_for(started.wait(), 5)
        assert scheduler.state is SchedulerState.RUNNING
        await scheduler.shutdown()
        await asyncio.wait_for(task, 5)
        assert scheduler.state is SchedulerState.SHUT_DOWN

    @pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
    async def test_run_forever_shuts_down_on_signal(
        self, scheduler: Scheduler, sig: signal.Signals
    ) -> None:
        """In the main thread, SIGINT and SIGTERM make run_forever shut down gracefully."""
        started = asyncio.Event()
        scheduler.subscribe(lambda _: started.set(), SchedulerStarted)
        task = asyncio.create_task(scheduler.run_forever())
        await asyncio.wait_for(started.wait(), 5)
        loop = asyncio.get_running_loop()
        handlers = getattr(loop, "_signal_handlers", {})
        if sig not in handlers:  # never send a signal nobody handles: it would end pytest
            task.cancel()
            pytest.fail(f"run_forever installed no {sig.name} handler")
        os.kill(os.getpid(), sig)
        await asyncio.wait_for(task, 5)
        assert scheduler.state is SchedulerState.SHUT_DOWN
        assert sig not in getattr(loop, "_signal_handlers", {})

    async def test_run_now_needs_a_running_scheduler(self, scheduler: Scheduler) -> None:
        """run_now before start raises SchedulerStateError naming the state."""
        job = scheduler.add_job(noop, every(minutes=1))
        with pytest.raises(SchedulerStateError, match="created"):
            await job.run_now()

    async def test_lifecycle_events(self, scheduler: Scheduler) -> None:
        """start and shutdown emit SchedulerStarted and SchedulerStopped."""
        events = collect(scheduler, SchedulerStarted, SchedulerStopped)
        async with scheduler:
            pass
        assert [type(e) for e in events] == [SchedulerStarted, SchedulerStopped]


class TestRegistry:
    def test_add_job_returns_a_handle(self, scheduler: Scheduler) -> None:
        """add_job returns a Job handle listed in ``jobs``."""
        job = scheduler.add_job(noop, every(minutes=1))
        assert isinstance(job, Job)
        assert scheduler.jobs == (job,)

    def test_decorator_returns_the_function_unchanged(self, scheduler: Scheduler) -> None:
        """@scheduler.job adds a job and returns the function itself."""

        @scheduler.job(every(minutes=1), name="decorated")
        async def decorated() -> None:
            pass

        assert inspect.iscoroutinefunction(decorated)
        assert scheduler.get_job("decorated").func is decorated

    def test_get_job_by_uuid_string_and_name(self, scheduler: Scheduler) -> None:
        """get_job finds a job by its UUID, its UUID string, or its name."""
        job = scheduler.add_job(noop, every(minutes=1), name="finder")
        assert scheduler.get_job(job.id) is job
        assert scheduler.get_job(str(job.id)) is job
        assert scheduler.get_job("finder") is job

    def test_unknown_job_raises_lookup_error(self, scheduler: Scheduler) -> None:
        """An unknown id or name raises JobLookupError (a LookupError)."""
        missing = uuid.uuid4()
        with pytest.raises(JobLookupError, match=str(missing)):
            scheduler.get_job(missing)
        with pytest.raises(JobLookupError, match="nobody"):
            scheduler.get_job("nobody")
        with pytest.raises(LookupError):
            scheduler.remove_job(str(missing))
        with pytest.raises(JobLookupError):
            scheduler.pause_job("nobody")
        with pytest.raises(JobLookupError):
            scheduler.update_job("nobody", every(minutes=1))

    def test_remove_job_by_id_name_and_handle(self, scheduler: Scheduler) -> None:
        """remove_job takes an id, a name or a handle and empties the registry."""
        a = scheduler.add_job(noop, every(minutes=1), name="a")
        b = scheduler.add_job(noop, every(minutes=1), name="b")
        c = scheduler.add_job(noop, every(minutes=1))
        scheduler.remove_job("a")
        scheduler.remove_job(b.id)
        scheduler.remove_job(c)
        assert scheduler.jobs == ()
        assert a.removed and b.removed and c.removed
        with pytest.raises(JobLookupError):
            scheduler.get_job("a")

    def test_removed_name_can_be_reused(self, scheduler: Scheduler) -> None:
        """After removal, the name (and its derived id) is free again."""
        first = scheduler.add_job(noop, every(minutes=1), name="reused")
        first.remove()
        second = scheduler.add_job(noop, every(minutes=1), name="reused")
        assert second.id == first.id
        assert scheduler.get_job("reused") is second

    def test_remove_by_tags_match_any(self, scheduler: Scheduler) -> None:
        """remove_by_tags removes jobs having any of the tags and returns the count."""
        scheduler.add_job(noop, every(minutes=1), tags={"a"})
        scheduler.add_job(noop, every(minutes=1), tags={"b"})
        keep = scheduler.add_job(noop, every(minutes=1), tags={"c"})
        assert scheduler.remove_by_tags("a", "b") == 2
        assert scheduler.jobs == (keep,)

    def test_remove_by_tags_match_all(self, scheduler: Scheduler) -> None:
        """With match="all" only jobs having every tag are removed."""
        both = scheduler.add_job(noop, every(minutes=1), tags={"a", "b"})
        only_a = scheduler.add_job(noop, every(minutes=1), tags="a")
        assert scheduler.remove_by_tags("a", "b", match="all") == 1
        assert both.removed
        assert scheduler.jobs == (only_a,)
        assert scheduler.remove_by_tags("zzz") == 0

    def test_remove_by_tags_needs_a_tag(self, scheduler: Scheduler) -> None:
        """Without tags, remove_by_tags raises instead of matching every job."""
        scheduler.add_job(noop, every(minutes=1), tags="a")
        for match in ("any", "all"):
            with pytest.raises(ConfigurationError, match="tags"):
                scheduler.remove_by_tags(match=match)  # type: ignore[arg-type]
        assert len(scheduler.jobs) == 1

    def test_remove_by_tags_rejects_unknown_match(self, scheduler: Scheduler) -> None:
        """match must be "any" or "all"."""
        with pytest.raises(ConfigurationError, match="match"):
            scheduler.remove_by_tags("a", match="some")  # type: ignore[arg-type]

    def test_jobs_is_a_snapshot_tuple(self, scheduler: Scheduler) -> None:
        """``jobs`` is a tuple in insertion order that later changes do not alter."""
        a = scheduler.add_job(noop, every(minutes=1))
        snapshot = scheduler.jobs
        b = scheduler.add_job(noop, every(minutes=1))
        assert isinstance(snapshot, tuple)
        assert snapshot == (a,)
        assert scheduler.jobs == (a, b)

    async def test_pause_and_resume(self, running: Scheduler, clock: VirtualClock) -> None:
        """A paused job skips its ticks; resumed, it runs from the next tick."""
        rec = Recorder(clock)
        job = running.add_job(rec, every(minutes=1), name="p")
        running.pause_job("p")
        assert job.paused
        await clock.advance(minutes=2)
        assert rec.calls == []
        running.resume_job(job.id)
        await clock.advance(minutes=1)
        assert rec.calls == [T0 + timedelta(minutes=3)]

    async def test_add_job_from_a_worker_thread(
        self, running: Scheduler, clock: VirtualClock
    ) -> None:
        """A plain job (in a worker thread) may add a job; it is activated on the loop."""
        rec = Recorder(clock)
        added: list[Job] = []

        def spawner() -> None:
            added.append(running.add_job(rec, every(minutes=1), name="spawned"))

        running.add_job(spawner, once(T0 + timedelta(minutes=1)))
        await clock.advance(minutes=1)
        assert [job.name for job in added] == ["spawned"]
        assert added[0].next_run == T0 + timedelta(minutes=2)
        await clock.advance(minutes=1)
        assert rec.calls == [T0 + timedelta(minutes=2)]

    async def test_add_job_from_a_worker_thread_emits_thread_safely(
        self, running: Scheduler, clock: VirtualClock
    ) -> None:
        """add_job from a worker thread hands JobAdded to the loop safely (asyncio debug mode)."""
        loop = asyncio.get_running_loop()
        events = collect(running, JobAdded)
        errors: list[BaseException] = []

        def spawner() -> None:
            try:
                running.add_job(noop, every(minutes=1), name="spawned")
            except BaseException as exc:
                errors.append(exc)

        loop.set_debug(True)
        try:
            running.add_job(spawner, once(T0 + timedelta(minutes=1)))
            await clock.advance(minutes=1)
            running.add_job(noop, every(minutes=1), name="later")
            await clock.advance(0)
        finally:
            loop.set_debug(False)
        assert errors == []
        assert [e.job_name for e in events] == [None, "spawned", "later"]

    async def test_waiting_runs_counts_queued_ticks(
        self, running: Scheduler, clock: VirtualClock
    ) -> None:
        """A tick waiting for its overlap slot is counted by waiting_runs."""
        release = asyncio.Event()

        async def slow() -> None:
            await release.wait()

        running.add_job(slow, every(minutes=1), overlap="wait")
        assert running.waiting_runs == 0
        await clock.advance(minutes=2)
        assert running.waiting_runs == 1
        release.set()
        await clock.advance(0)
        assert running.waiting_runs == 0


class TestUpdateJob:
    async def test_update_keeps_identity_and_counters(
        self, running: Scheduler, clock: VirtualClock
    ) -> None:
        """update_job keeps id, run_count and last_run."""
        job = running.add_job(noop, every(hours=1), name="u")
        await clock.advance(hours=1)
        assert job.run_count == 1
        updated = running.update_job(job, tags={"new"}, max_instances=2)
        assert updated is job
        assert job.id == uuid.uuid5(NAMESPACE, "u")
        assert job.run_count == 1
        assert job.last_run == T0 + timedelta(hours=1)
        assert job.tags == frozenset({"new"})
        assert job.options.max_instances == 2

    async def test_new_schedule_recomputes_from_now_without_catch_up(
        self, running: Scheduler, clock: VirtualClock
    ) -> None:
        """A new schedule takes its next tick after now; past ticks of it do not run."""
        rec = Recorder(clock)
        job = running.add_job(rec, every(hours=1))
        await clock.advance(minutes=90)
        assert rec.calls == [T0 + timedelta(hours=1)]
        running.update_job(job, every(minutes=20))
        assert job.next_run == T0 + timedelta(minutes=100)
        await clock.advance(minutes=10)
        assert rec.calls == [T0 + timedelta(hours=1), T0 + timedelta(minutes=100)]
        assert job.run_count == 2

    async def test_update_to_a_schedule_without_ticks_raises(
        self, running: Scheduler, clock: VirtualClock
    ) -> None:
        """A new schedule with no tick left raises like add_job and changes nothing."""
        job = running.add_job(noop, every(hours=1))
        with pytest.raises(ConfigurationError, match="at"):
            running.update_job(job, once(T0 - timedelta(hours=1)))
        with pytest.raises(ConfigurationError, match="stop_at"):
            running.update_job(job, stop_at=T0 + timedelta(minutes=30))
        assert job.schedule == every(hours=1)
        assert job.options.stop_at is None
        assert job.next_run == T0 + timedelta(hours=1)
        await clock.advance(hours=1)
        assert job.run_count == 1

    def test_update_before_start_previews_new_schedule(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """Updating the schedule before start changes the preview."""
        job = scheduler.add_job(noop, every(hours=1))
        scheduler.update_job(job.id, every(minutes=15))
        assert job.next_run == T0 + timedelta(minutes=15)

    def test_update_rename(self, scheduler: Scheduler) -> None:
        """Renaming a job frees the old name and keeps the id."""
        job = scheduler.add_job(noop, every(hours=1), name="old")
        scheduler.update_job("old", name="new")
        assert scheduler.get_job("new") is job
        assert job.id == uuid.uuid5(NAMESPACE, "old")
        with pytest.raises(JobLookupError):
            scheduler.get_job("old")

    def test_update_with_bad_arguments_raises(self, scheduler: Scheduler) -> None:
        """Arguments that no longer fit the signature raise InvalidJobError."""
        job = scheduler.add_job(takes_one, every(hours=1), args=(1,))
        with pytest.raises(InvalidJobError):
            scheduler.update_job(job, args=(1, 2))
        assert job._args == (1,)


class TestJobHandle:
    def test_properties(self, clock: VirtualClock) -> None:
        """The handle exposes id, name, tags, schedule with its zone, tz and run data."""
        scheduler = Scheduler(clock=clock, tz="Europe/Berlin")
        job = scheduler.add_job(noop, daily(at="09:00"), name="report", tags=["ops", "daily"])
        assert job.id == uuid.uuid5(asyncron.NAMESPACE, "report")
        assert job.name == "report"
        assert job.tags == frozenset({"ops", "daily"})
        assert job.schedule == daily(at="09:00", tz="Europe/Berlin")
        assert job.tz == ZoneInfo("Europe/Berlin")
        # 09:00 in Berlin is 08:00 UTC in winter.
        assert job.next_run == datetime(2026, 1, 1, 8, tzinfo=UTC)
        assert job.next_runs(3) == [datetime(2026, 1, d, 8, tzinfo=UTC) for d in (1, 2, 3)]
        assert job.last_run is None
        assert job.run_count == 0

    def test_schedule_serialises_with_its_zone(self, clock: VirtualClock) -> None:
        """A schedule given no zone stores the scheduler's, so it round-trips with it."""
        scheduler = Scheduler(clock=clock, tz="America/New_York")
        job = scheduler.add_job(noop, cron("0 9 * * mon-fri"))
        dumped = job.schedule.model_dump_json()
        assert "America/New_York" in dumped
        assert asyncron.parse_schedule(dumped) == job.schedule

    def test_explicit_zone_wins(self, clock: VirtualClock) -> None:
        """A schedule's own zone is kept over the scheduler's."""
        scheduler = Scheduler(clock=clock, tz="Europe/Berlin")
        job = scheduler.add_job(noop, daily(at="09:00", tz="Asia/Tokyo"))
        assert job.tz == ZoneInfo("Asia/Tokyo")

    def test_unnamed_jobs_get_random_ids(self, scheduler: Scheduler) -> None:
        """Jobs without a name get distinct random ids."""
        a = scheduler.add_job(noop, every(minutes=1))
        b = scheduler.add_job(noop, every(minutes=1))
        assert a.name is None
        assert a.id != b.id

    def test_chosen_id(self, scheduler: Scheduler) -> None:
        """id= accepts a UUID or its string."""
        chosen = uuid.uuid4()
        a = scheduler.add_job(noop, every(minutes=1), id=chosen, name="chosen")
        b = scheduler.add_job(noop, every(minutes=1), id=str(uuid.UUID(int=7)))
        assert a.id == chosen
        assert b.id == uuid.UUID(int=7)
        with pytest.raises(ConflictingJobError):
            scheduler.add_job(noop, every(minutes=1), id=chosen)
        with pytest.raises(ConfigurationError, match="id"):
            scheduler.add_job(noop, every(minutes=1), id="not-a-uuid")

    async def test_run_count_and_last_run(self, running: Scheduler, clock: VirtualClock) -> None:
        """run_count counts scheduled runs and run_now; last_run is the latest tick."""
        job = running.add_job(noop, every(minutes=1))
        await clock.advance(minutes=2)
        assert job.run_count == 2
        assert job.last_run == T0 + timedelta(minutes=2)
        outcome = await job.run_now()
        assert outcome.status is RunStatus.SUCCEEDED
        assert job.run_count == 3
        assert job.next_run == T0 + timedelta(minutes=3)

    async def test_handle_methods(self, running: Scheduler, clock: VirtualClock) -> None:
        """pause/resume/remove on the handle act on the scheduler."""
        job = running.add_job(noop, every(minutes=1))
        job.pause()
        assert job.paused
        job.resume()
        assert not job.paused
        job.remove()
        assert job.removed
        assert running.jobs == ()

    async def test_removed_handle_keeps_properties(self, running: Scheduler) -> None:
        """A removed job's handle stays readable; its methods raise JobLookupError."""
        job = running.add_job(noop, every(minutes=1), name="gone", tags="t")
        schedule = job.schedule
        running.remove_job("gone")
        assert job.id == uuid.uuid5(NAMESPACE, "gone")
        assert job.name == "gone"
        assert job.tags == frozenset({"t"})
        assert job.schedule == schedule
        assert job.run_count == 0
        assert job.last_run is None
        assert job.next_run is None
        with pytest.raises(JobLookupError, match="gone"):
            await job.run_now()
        for method in (job.pause, job.resume, job.remove):
            with pytest.raises(JobLookupError):
                method()
        with pytest.raises(JobLookupError):
            running.update_job(job, every(minutes=2))

    async def test_next_runs_of_random_every_leaves_the_draws_alone(
        self, clock: VirtualClock
    ) -> None:
        """Previewing random_every ticks leaves a seeded scheduler's draws unchanged."""

        async def ticks_with(preview: bool) -> tuple[list[datetime], list[datetime]]:
            own_clock = VirtualClock(T0)
            scheduler = Scheduler(clock=own_clock, random=random.Random(42))
            seen: list[datetime] = []

            async def job(ctx: asyncron.RunContext) -> None:
                seen.append(ctx.tick)

            handle = scheduler.add_job(job, random_every(10, 20))
            previewed: list[datetime] = []
            async with scheduler:
                await own_clock.advance(30)
                if preview:
                    previewed = handle.next_runs(3)
                await own_clock.advance(100)
            return seen, previewed

        plain, _ = await ticks_with(False)
        seen, previewed = await ticks_with(True)
        assert seen == plain
        assert previewed == [t for t in seen if t > T0 + timedelta(seconds=30)][:3]

    def test_next_runs_rejects_negative(self, scheduler: Scheduler) -> None:
        """next_runs(n) needs n >= 0."""
        job = scheduler.add_job(noop, every(minutes=1))
        assert job.next_runs(0) == []
        with pytest.raises(ConfigurationError, match="n"):
            job.next_runs(-1)

    def test_next_runs_of_once_stops(self, scheduler: Scheduler) -> None:
        """next_runs returns fewer ticks when the schedule ends."""
        at = T0 + timedelta(hours=1)
        job = scheduler.add_job(noop, once(at))
        assert job.next_runs(3) == [at]


class TestNamesAndValidation:
    def test_duplicate_name_raises(self, scheduler: Scheduler) -> None:
        """A name used by another job raises ConflictingJobError naming it."""
        scheduler.add_job(noop, every(minutes=1), name="dup")
        with pytest.raises(ConflictingJobError, match="dup"):
            scheduler.add_job(noop, every(minutes=2), name="dup")

    def test_name_that_parses_as_uuid_is_rejected(self, scheduler: Scheduler) -> None:
        """Names are never UUID strings, so get_job(str) is unambiguous."""
        with pytest.raises(ConfigurationError, match="name"):
            scheduler.add_job(noop, every(minutes=1), name=str(uuid.uuid4()))

    @pytest.mark.parametrize("name", ["", 42])
    def test_bad_name_type_rejected(self, scheduler: Scheduler, name: Any) -> None:
        """A name must be a non-empty string."""
        with pytest.raises(ConfigurationError, match="name"):
            scheduler.add_job(noop, every(minutes=1), name=name)

    def test_non_callable_raises_invalid_job(self, scheduler: Scheduler) -> None:
        """A non-callable job function raises InvalidJobError (a TypeError)."""
        with pytest.raises(InvalidJobError, match="not callable"):
            scheduler.add_job("noop", every(minutes=1))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            scheduler.add_job(42, every(minutes=1))  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("args", "kwargs"),
        [((), {}), ((1, 2), {}), ((), {"other": 1}), ((1,), {"value": 1})],
    )
    def test_arguments_not_fitting_raise(
        self, scheduler: Scheduler, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """args/kwargs that do not bind to the signature raise InvalidJobError."""
        with pytest.raises(InvalidJobError):
            scheduler.add_job(takes_one, every(minutes=1), args=args, kwargs=kwargs)

    def test_fitting_arguments_accepted(self, scheduler: Scheduler) -> None:
        """args or kwargs that bind are accepted."""
        scheduler.add_job(takes_one, every(minutes=1), args=(1,))
        scheduler.add_job(takes_one, every(minutes=1), kwargs={"value": 1})

    def test_not_a_schedule_raises(self, scheduler: Scheduler) -> None:
        """A schedule argument that is not a schedule raises ConfigurationError."""
        with pytest.raises(ConfigurationError, match="schedule"):
            scheduler.add_job(noop, "*/5 * * * *")  # type: ignore[arg-type]

    def test_unknown_option_raises(self, scheduler: Scheduler) -> None:
        """An unknown job option raises ConfigurationError naming it."""
        with pytest.raises(ConfigurationError, match="max_instance"):
            scheduler.add_job(noop, every(minutes=1), max_instance=2)

    def test_past_once_raises(self, scheduler: Scheduler) -> None:
        """once() with only past times leaves nothing to run and raises naming ``at``."""
        with pytest.raises(ConfigurationError, match="at"):
            scheduler.add_job(noop, once(T0 - timedelta(hours=1)))

    @pytest.mark.parametrize(
        ("options", "field", "value"),
        [
            ({"tz": "Nowhere/City"}, "tz", "Nowhere/City"),
            ({"tz": 5}, "tz", "5"),
            ({"max_threads": 0}, "max_threads", "0"),
            ({"max_concurrent_jobs": 0}, "max_concurrent_jobs", "0"),
            ({"concurrency_mode": "x"}, "concurrency_mode", "'x'"),
            ({"stop_timeout": -1}, "stop_timeout", "-1"),
            ({"stop_timeout": True}, "stop_timeout", "True"),
            ({"job_defaults": {"bogus": 1}}, "job_defaults", "bogus"),
            ({"job_defaults": {"max_instances": 0}}, "max_instances", "0"),
            ({"clock": object()}, "clock", "object"),
            ({"logger": "asyncron"}, "logger", "asyncron"),
        ],
    )
    def test_bad_scheduler_options_raise(
        self, options: dict[str, Any], field: str, value: str
    ) -> None:
        """Bad Scheduler options raise ConfigurationError naming the field and value."""
        with pytest.raises(ConfigurationError) as info:
            Scheduler(**options)
        assert info.value.field == field
        assert field in str(info.value)
        assert value in str(info.value)

    def test_fixed_offset_zone_rejected_with_hint(self) -> None:
        """A fixed-offset timezone is not a zone; the error suggests Etc/GMT-1."""
        with pytest.raises(ConfigurationError, match="Etc/GMT-1") as info:
            Scheduler(tz=timezone(timedelta(hours=1)))
        assert info.value.field == "tz"

    @pytest.mark.parametrize("tz", ["UTC", UTC, ZoneInfo("UTC"), "Europe/Berlin"])
    def test_good_zones_accepted(self, tz: Any) -> None:
        """IANA names, ZoneInfo and timezone.utc are zones."""
        assert isinstance(Scheduler(tz=tz).tz, ZoneInfo)


class TestShutdown:
    async def test_async_run_cancelled_after_stop_timeout(self, clock: VirtualClock) -> None:
        """An async run still going at stop_timeout is cancelled and shutdown returns."""
        scheduler = Scheduler(clock=clock, stop_timeout=5)
        started = asyncio.Event()
        cancelled = asyncio.Event()

        async def forever() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        await scheduler.start()
        scheduler.add_job(forever, every(minutes=1))
        await clock.advance(minutes=1)
        assert started.is_set()
        stopping = asyncio.create_task(scheduler.shutdown())
        await clock.advance(seconds=4)
        assert not stopping.done()
        assert not cancelled.is_set()
        await clock.advance(seconds=1)
        await asyncio.wait_for(stopping, 5)
        assert cancelled.is_set()
        assert scheduler.state is SchedulerState.SHUT_DOWN

    async def test_runs_finishing_within_stop_timeout_complete(self, clock: VirtualClock) -> None:
        """Shutdown waits for runs that end before stop_timeout."""
        scheduler = Scheduler(clock=clock, stop_timeout=60)
        done: list[bool] = []

        async def short() -> None:
            await clock.sleep_until(clock.monotonic() + 10)
            done.append(True)

        await scheduler.start()
        scheduler.add_job(short, every(minutes=1))
        await clock.advance(minutes=1)
        stopping = asyncio.create_task(scheduler.shutdown())
        await clock.advance(seconds=10)
        await asyncio.wait_for(stopping, 5)
        assert done == [True]

    async def test_a_job_may_shut_down_its_scheduler(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A job awaiting shutdown() is neither waited for nor cancelled by it."""
        after: list[SchedulerState] = []

        async def stopper() -> None:
            await scheduler.shutdown()
            after.append(scheduler.state)

        job = scheduler.add_job(stopper, once(T0 + timedelta(minutes=1)))
        await scheduler.start()
        await clock.advance(minutes=1)
        assert after == [SchedulerState.SHUT_DOWN]
        assert job.run_count == 1

    async def test_thread_abandoned_after_stop_timeout_is_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A thread still running at stop_timeout is logged as abandoned by job and tick."""
        # A blocked worker thread never lets the virtual clock settle, so this test
        # uses the real clock with a short stop_timeout (a bound, not a sleep).
        scheduler = Scheduler(stop_timeout=0.05)
        started = threading.Event()
        release = threading.Event()

        def blocking() -> None:
            started.set()
            release.wait(10)

        try:
            async with scheduler:
                at = datetime.now(UTC) + timedelta(milliseconds=50)
                scheduler.add_job(blocking, once(at), name="stuck")
                assert await asyncio.to_thread(started.wait, 5)
                caplog.set_level(logging.WARNING, logger="asyncron")
                begin = time.monotonic()
            assert time.monotonic() - begin < 5
        finally:
            release.set()
        messages = [r.getMessage() for r in caplog.records if "abandon" in r.getMessage()]
        assert len(messages) == 1
        assert "stuck" in messages[0]
        assert at.isoformat()[:19] in messages[0]

    async def test_removal_drops_a_tick_waiting_for_the_global_limit(
        self, clock: VirtualClock
    ) -> None:
        """A removed job's tick queued for the global limit is dropped, not run later."""
        scheduler = Scheduler(clock=clock, max_concurrent_jobs=1)
        release = asyncio.Event()
        ran: list[str] = []

        async def hog() -> None:
            await release.wait()

        async def queued() -> None:
            ran.append("queued")

        scheduler.add_job(hog, once(T0 + timedelta(minutes=1)))
        job = scheduler.add_job(queued, every(minutes=2))
        async with scheduler:
            try:
                await clock.advance(minutes=2)
                assert scheduler.waiting_runs == 1
                job.remove()
                waiting, running = scheduler.waiting_runs, job.running
            finally:
                release.set()
            await clock.advance(0)
        assert (waiting, running) == (0, 0)
        assert ran == []

    async def test_removal_never_cancels_a_running_run(
        self, running: Scheduler, clock: VirtualClock
    ) -> None:
        """Removing a job while it runs lets the run finish."""
        release = asyncio.Event()
        finished: list[bool] = []

        async def slow() -> None:
            await release.wait()
            finished.append(True)

        job = running.add_job(slow, every(minutes=1))
        await clock.advance(minutes=1)
        assert job.running == 1
        job.remove()
        await clock.advance(0)
        assert finished == []
        release.set()
        await clock.advance(0)
        assert finished == [True]
        assert job.run_count == 1


class TestRegistryEvents:
    async def test_added_updated_removed(self, scheduler: Scheduler, clock: VirtualClock) -> None:
        """add/update/remove emit JobAdded, JobUpdated and JobRemoved(explicit)."""
        events = collect(scheduler, JobAdded, JobUpdated, JobRemoved)
        async with scheduler:
            job = scheduler.add_job(noop, every(minutes=1), name="e")
            scheduler.update_job(job, every(minutes=2))
            scheduler.remove_job(job)
            await clock.advance(0)
        assert [type(e) for e in events] == [JobAdded, JobUpdated, JobRemoved]
        assert all(e.job_id == job.id and e.job_name == "e" for e in events)
        assert events[-1].reason is RemovalReason.EXPLICIT

    async def test_events_before_start_are_delivered_at_start(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A JobAdded emitted before start is delivered once the scheduler runs."""
        events = collect(scheduler, JobAdded)
        scheduler.add_job(noop, every(minutes=1))
        async with scheduler:
            await clock.advance(0)
            assert len(events) == 1

    async def test_shutdown_delivers_the_queue_in_order_one_callback_at_a_time(
        self, scheduler: Scheduler
    ) -> None:
        """Shutdown delivers queued events in order, one callback at a time, none cancelled."""
        gate = asyncio.Event()
        log: list[tuple[str, str]] = []

        async def slow(event: Event) -> None:
            name = type(event).__name__ + str(getattr(event, "job_name", "") or "")
            log.append(("start", name))
            try:
                if isinstance(event, SchedulerStarted):
                    await gate.wait()
                for _ in range(3):
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                log.append(("cancelled", name))
                raise
            log.append(("end", name))

        scheduler.subscribe(slow)
        await scheduler.start()
        for name in "ab":
            scheduler.add_job(noop, every(hours=1), name=name)
        for _ in range(5):
            await asyncio.sleep(0)
        stopping = asyncio.create_task(scheduler.shutdown())
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        await asyncio.wait_for(stopping, 5)
        names = ["SchedulerStarted", "JobAddeda", "JobAddedb", "SchedulerStopped"]
        assert log == [(step, name) for name in names for step in ("start", "end")]

    async def test_full_event_queue_drops_the_oldest_with_a_warning(
        self, scheduler: Scheduler, clock: VirtualClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Beyond 10,000 queued events the oldest are dropped, with a warning."""
        events = collect(scheduler, JobAdded)
        jobs = [scheduler.add_job(noop, every(hours=1)) for _ in range(10_005)]
        assert any("dropped 1 oldest" in r.getMessage() for r in caplog.records)
        async with scheduler:
            await clock.advance(0)
        assert len(events) == 10_000
        assert [e.job_id for e in events[:2]] == [jobs[5].id, jobs[6].id]
        assert events[-1].job_id == jobs[-1].id

    async def test_exhausted_once_job_is_removed(
        self, running: Scheduler, clock: VirtualClock
    ) -> None:
        """A once() job is removed after its tick with JobRemoved(exhausted)."""
        events = collect(running, JobRemoved)
        job = running.add_job(noop, once(T0 + timedelta(minutes=1)))
        await clock.advance(minutes=1)
        assert job.removed
        assert job.run_count == 1
        assert [e.reason for e in events] == [RemovalReason.EXHAUSTED]


class TestScale:
    async def test_the_timer_does_not_wake_for_removed_or_rearmed_jobs(
        self, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An instant whose jobs were all removed or moved is dropped, not woken for."""
        wakes: list[datetime] = []
        original = RunEngine._dispatch_due

        def counting(self: RunEngine, now: datetime, now_ts: float) -> None:
            wakes.append(now)
            original(self, now, now_ts)

        monkeypatch.setattr(RunEngine, "_dispatch_due", counting)
        scheduler = Scheduler(clock=clock)
        removed = scheduler.add_job(noop, once(T0 + timedelta(minutes=1)))
        moved = scheduler.add_job(noop, once(T0 + timedelta(minutes=1)))
        kept = scheduler.add_job(noop, once(T0 + timedelta(minutes=10)))
        async with scheduler:
            scheduler.remove_job(removed)
            scheduler.update_job(moved, once(T0 + timedelta(minutes=10)))
            await clock.advance(minutes=5)
            assert wakes == []
            await clock.advance(minutes=5)
            assert wakes == [T0 + timedelta(minutes=10)]
            assert moved.run_count == 1
            assert kept.run_count == 1

    async def test_steady_ticking_never_compacts_the_heap(
        self, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A fired tick leaves no stale heap entry behind, so ticking jobs never make the
        heap rebuild itself; removing most jobs does (the control)."""
        compactions: list[int] = []
        original = RunEngine._compact

        def counting(self: RunEngine) -> None:
            compactions.append(self._entries)
            original(self)

        monkeypatch.setattr(RunEngine, "_compact", counting)
        scheduler = Scheduler(clock=clock)
        jobs = [scheduler.add_job(noop, every(seconds=1)) for _ in range(3_000)]
        async with scheduler:
            for _ in range(10):
                await clock.advance(seconds=1)
            assert all(job.run_count == 10 for job in jobs)
            assert compactions == []
            for job in jobs[1_000:]:
                scheduler.remove_job(job)
            await clock.advance(seconds=1)  # the next re-arm finds most entries stale
            assert compactions
            assert scheduler._entries == 1_000

    async def test_ten_thousand_jobs_added_listed_removed_by_tag(self, clock: VirtualClock) -> None:
        """10,000 jobs are added, listed and removed by tag quickly."""
        scheduler = Scheduler(clock=clock)
        begin = time.perf_counter()
        for i in range(10_000):
            scheduler.add_job(noop, every(hours=1), tags={"even" if i % 2 == 0 else "odd"})
        async with scheduler:
            assert len(scheduler.jobs) == 10_000
            assert sum(1 for j in scheduler.jobs if "even" in j.tags) == 5_000
            assert scheduler.remove_by_tags("even") == 5_000
            assert len(scheduler.jobs) == 5_000
            assert all("odd" in j.tags for j in scheduler.jobs)
            assert scheduler.remove_by_tags("odd", "even") == 5_000
            assert scheduler.jobs == ()
        assert time.perf_counter() - begin < 10

    async def test_idle_timer_does_no_per_job_work(
        self, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With 10,000 hourly jobs, 59 idle minutes compute no tick at all."""
        scheduler = Scheduler(clock=clock)
        for _ in range(10_000):
            scheduler.add_job(noop, every(hours=1))
        schedule_type = type(scheduler.jobs[0].schedule)
        calls = 0

        def counted(name: str) -> Any:
            original = getattr(schedule_type, name)

            def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                return original(self, *args, **kwargs)

            return counting

        async with scheduler:
            # Ticks are computed by next_fire, or by _following for the timer's step.
            for name in ("next_fire", "_following"):
                monkeypatch.setattr(schedule_type, name, counted(name))
            await clock.advance(minutes=59)
            assert calls == 0
            await clock.advance(minutes=1)
            assert calls >= 10_000
            assert all(j.run_count == 1 for j in scheduler.jobs)


class Service:
    """Has a bound method to schedule."""

    async def tick(self) -> None:
        """A bound method job."""


class TestCoordinatedKeys:
    @pytest.fixture
    def coordinated(self, clock: VirtualClock) -> Scheduler:
        return Scheduler(clock=clock, locker=MemoryLocker())

    @pytest.mark.parametrize(
        ("func", "why"),
        [
            (lambda: None, "lambda"),
            (functools.partial(takes_one, 1), "partial"),
            (Service().tick, "bound method"),
        ],
    )
    def test_unstable_default_key_asks_for_name(
        self, coordinated: Scheduler, func: Any, why: str
    ) -> None:
        """A lambda, partial or bound method without name= raises asking for name=."""
        with pytest.raises(ConfigurationError, match="name=") as info:
            coordinated.add_job(func, every(minutes=1))
        assert why in str(info.value)
        coordinated.add_job(func, every(minutes=1), name=f"named {why}")

    def test_nested_function_asks_for_name(self, coordinated: Scheduler) -> None:
        """A nested function's default key is not stable: name= is required."""

        async def nested() -> None:
            pass

        with pytest.raises(ConfigurationError, match="nested function"):
            coordinated.add_job(nested, every(minutes=1))

    def test_shared_default_key_asks_for_name(self, coordinated: Scheduler) -> None:
        """The same function added twice without names would share a key: raises."""
        coordinated.add_job(noop, every(minutes=1))
        with pytest.raises(ConfigurationError, match="already used"):
            coordinated.add_job(noop, every(minutes=2))
        coordinated.add_job(noop, every(minutes=2), name="second")

    def test_random_every_under_locker_raises(self, coordinated: Scheduler) -> None:
        """random_every ticks differ per instance, so a locker cannot dedupe them."""
        with pytest.raises(ConfigurationError, match="random_every"):
            coordinated.add_job(noop, random_every(10, 20), name="r")

    def test_from_completion_under_locker_raises(self, coordinated: Scheduler) -> None:
        """from_completion ticks differ per instance: raises under a locker."""
        with pytest.raises(ConfigurationError, match="from_completion"):
            coordinated.add_job(noop, every(minutes=1), name="fc", from_completion=True)

    def test_per_job_locker_applies_the_rules(self, scheduler: Scheduler) -> None:
        """A per-job locker triggers the same rules on a scheduler without one."""
        with pytest.raises(ConfigurationError, match="name="):
            scheduler.add_job(lambda: None, every(minutes=1), locker=MemoryLocker())

    def test_distributed_false_avoids_the_rules(self, coordinated: Scheduler) -> None:
        """distributed=False jobs are local: no name needed, any schedule allowed."""
        coordinated.add_job(lambda: None, every(minutes=1), distributed=False)
        coordinated.add_job(functools.partial(takes_one, 1), every(1), distributed=False)
        coordinated.add_job(noop, random_every(10, 20), distributed=False)
        coordinated.add_job(noop, every(minutes=1), from_completion=True, distributed=False)
        assert len(coordinated.jobs) == 4

    def test_locker_with_distributed_false_raises(self, scheduler: Scheduler) -> None:
        """locker= together with distributed=False is contradictory."""
        with pytest.raises(ConfigurationError, match="locker"):
            scheduler.add_job(noop, every(1), locker=MemoryLocker(), distributed=False)

    def test_without_coordination_no_name_needed(self, scheduler: Scheduler) -> None:
        """Without a locker or elector, lambdas need no name."""
        scheduler.add_job(lambda: None, every(minutes=1))
        scheduler.add_job(noop, random_every(10, 20))


class TestFromCompletionRegression:
    async def test_every_from_completion_counts_the_interval_from_the_end(
        self, running: Scheduler, clock: VirtualClock
    ) -> None:
        """With from_completion, every() counts its interval from the end of the last run."""
        starts: list[datetime] = []

        async def work() -> None:
            starts.append(clock.now())
            await clock.sleep_until(clock.monotonic() + 90)

        running.add_job(work, every(minutes=5), from_completion=True)
        await clock.advance(minutes=15)
        assert starts == [
            T0 + timedelta(minutes=5),
            T0 + timedelta(minutes=11, seconds=30),
        ]


class RaisingMonitor:
    """A monitor with a bug."""

    def __init__(self) -> None:
        self.calls = 0

    def record_run(
        self, job: str, status: str, reason: str | None, duration: float, lateness: float
    ) -> None:
        self.calls += 1
        raise ValueError("bad label")


class TestRobustness:
    async def test_a_raising_monitor_is_logged_and_never_stops_the_scheduler(
        self, clock: VirtualClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A raising monitor is logged and never stops dispatch or run_now."""
        monitor = RaisingMonitor()
        scheduler = Scheduler(clock=clock, monitor=monitor)
        rec = Recorder(clock)
        paused = scheduler.add_job(rec, every(minutes=1))
        paused.pause()
        job = scheduler.add_job(rec, every(minutes=1))
        async with scheduler:
            await clock.advance(minutes=2)
            assert rec.calls == [T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)]
            outcome = await asyncio.wait_for(job.run_now(), 5)
            assert outcome.status is RunStatus.SUCCEEDED
        assert monitor.calls == 5
        assert sum("bad label" in (r.exc_text or "") for r in caplog.records) == 5


class SlowToOpenLocker(MemoryLocker):
    """A MemoryLocker whose opening waits until the test lets it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __aenter__(self) -> SlowToOpenLocker:
        self.entered.set()
        await self.release.wait()
        await super().__aenter__()
        return self


class BrokenEvery(asyncron.EverySchedule):
    """An every() schedule whose tick computation fails after its first tick."""

    def next_fire(self, after: datetime, **options: Any) -> datetime | None:
        if after > T0:
            raise RuntimeError("schedule bug")
        return super().next_fire(after, **options)


class TestHardening:
    async def test_a_tick_queued_for_overlap_is_skipped_if_the_job_is_paused_meanwhile(
        self, running: Scheduler, clock: VirtualClock
    ) -> None:
        """Pausing a job skips its tick waiting for an overlap slot (reason paused)."""
        started: list[datetime] = []
        skipped = collect(running, asyncron.JobSkipped)

        async def slow(ctx: asyncron.RunContext) -> None:
            started.append(ctx.tick)
            await clock.sleep_until(clock.monotonic() + 90)

        job = running.add_job(slow, every(minutes=1), overlap="wait")
        await clock.advance(minutes=2)  # first run going, the second tick waits
        assert running.waiting_runs == 1
        job.pause()
        await clock.advance(seconds=31)  # the first run ends; the waiter is released
        assert started == [T0 + timedelta(minutes=1)]
        assert [(e.reason, e.tick) for e in skipped] == [
            (asyncron.SkipReason.PAUSED, T0 + timedelta(minutes=2))
        ]
        assert running.waiting_runs == 0

    async def test_removal_reason_is_exhausted_when_the_schedule_ends_before_stop_at(
        self, running: Scheduler, clock: VirtualClock
    ) -> None:
        """A one-off whose only time is before stop_at is removed as exhausted; an
        interval cut by stop_at is removed as stop_at."""
        removed = collect(running, JobRemoved)
        one_off = running.add_job(
            noop, once(T0 + timedelta(minutes=1)), stop_at=T0 + timedelta(hours=1)
        )
        cut = running.add_job(noop, every(minutes=1), stop_at=T0 + timedelta(minutes=2))
        await clock.advance(minutes=3)
        reasons = {e.job_id: e.reason for e in removed}
        assert reasons == {
            one_off.id: RemovalReason.EXHAUSTED,
            cut.id: RemovalReason.STOP_AT,
        }

    async def test_a_failing_dispatch_of_one_job_does_not_stop_the_others(
        self, running: Scheduler, clock: VirtualClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A job whose schedule raises is logged; every other job keeps running."""
        rec = Recorder(clock)
        running.add_job(noop, BrokenEvery(interval=timedelta(minutes=1)), name="broken")
        running.add_job(rec, every(minutes=1))
        await clock.advance(minutes=3)
        assert rec.calls == [T0 + timedelta(minutes=m) for m in (1, 2, 3)]
        assert any("dispatching broken failed" in r.getMessage() for r in caplog.records)

    async def test_a_second_start_while_the_first_opens_its_backends_is_refused(
        self, clock: VirtualClock
    ) -> None:
        """start() while another start() is opening backends raises SchedulerStateError."""
        locker = SlowToOpenLocker()
        scheduler = Scheduler(clock=clock, locker=locker)
        first = asyncio.ensure_future(scheduler.start())
        await locker.entered.wait()
        with pytest.raises(SchedulerStateError, match="another start"):
            await scheduler.start()
        locker.release.set()
        await first
        assert scheduler.state is SchedulerState.RUNNING
        await scheduler.shutdown()

    async def test_run_now_cancelled_by_shutdown_reports_the_cancellation(
        self, clock: VirtualClock
    ) -> None:
        """A run_now() cut off by shutdown after stop_timeout fails with CancelledError."""
        scheduler = Scheduler(clock=clock, stop_timeout=5)

        async def endless() -> None:
            await clock.sleep_until(clock.monotonic() + 3600)

        job = scheduler.add_job(endless, every(hours=2))
        await scheduler.start()
        outcome = asyncio.ensure_future(job.run_now())
        await clock.advance(seconds=1)
        stopping = asyncio.ensure_future(scheduler.shutdown())
        await clock.advance(seconds=6)
        await stopping
        result = await outcome
        assert result.status is RunStatus.FAILED
        assert isinstance(result.exception, asyncio.CancelledError)

    async def test_a_term_won_before_start_is_announced_at_start(self, clock: VirtualClock) -> None:
        """An elector already leading when the scheduler starts emits LeadershipChanged."""
        from asyncron import LeadershipChanged
        from asyncron.distributed import MemoryElector

        elector = MemoryElector(leader=True)
        scheduler = Scheduler(clock=clock, elector=elector)
        changes = collect(scheduler, LeadershipChanged)
        async with scheduler:
            await clock.advance(seconds=1)
        assert [(c.leader, c.epoch) for c in changes] == [(True, elector.leadership().epoch)]
