"""The run pipeline (design §1 "The job function", §3 and §5): calling job functions,
RunContext, events, run_now, the monitor, before_run, and coordination through the
in-process locker and elector — all on the virtual clock."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

import asyncron
from asyncron import (
    ConfigurationError,
    Event,
    JobAdded,
    JobFailed,
    JobMissed,
    JobRemoved,
    JobSkipped,
    JobStarted,
    JobSucceeded,
    LeadershipChanged,
    LockFailed,
    LockLost,
    LockLostError,
    MissReason,
    RunContext,
    RunEvent,
    RunKind,
    RunStatus,
    Scheduler,
    SchedulerStarted,
    SchedulerStopped,
    SkipReason,
    current_run,
    every,
    once,
)
from asyncron import _events as events_module
from asyncron._runner import RunEngine
from asyncron._time import to_us
from asyncron.distributed import MemoryElector, MemoryLocker
from asyncron.distributed.memory import MemoryLock
from asyncron.testing import VirtualClock
from tests._virtual import T0, Factory, Recorder, at, pause, shut_down


class Monitor:
    """A monitor that keeps its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None, float, float]] = []

    def record_run(
        self, job: str, status: str, reason: str | None, duration: float, lateness: float
    ) -> None:
        self.calls.append((job, status, reason, duration, lateness))


def noop() -> None:
    pass


def record_into(target: list[Any]) -> Callable[..., Awaitable[None]]:
    async def job(ctx: RunContext) -> None:
        target.append(ctx)

    return job


# --- job functions ------------------------------------------------------------


class TestJobFunctions:
    async def test_async_function_runs_on_each_tick(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """An async def job runs at each tick, on the event loop's thread."""
        seen: list[tuple[datetime, int]] = []

        async def job() -> None:
            seen.append((clock.now(), threading.get_ident()))

        scheduler.add_job(job, every(minutes=1))
        await clock.advance(minutes=3)
        assert [t for t, _ in seen] == [at(1), at(2), at(3)]
        assert {thread for _, thread in seen} == {threading.get_ident()}

    async def test_plain_function_runs_in_a_worker_thread(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A plain function runs in a worker thread, not on the loop's thread."""
        threads: list[int] = []
        scheduler.add_job(lambda: threads.append(threading.get_ident()), every(minutes=1))
        await clock.advance(minutes=2)
        assert len(threads) == 2
        assert threading.get_ident() not in threads

    async def test_partials_and_async_callable_instances_are_awaited(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A partial of an async def and an object with async __call__ run on the loop."""
        threads: list[tuple[str, int]] = []

        async def job(label: str) -> None:
            threads.append((label, threading.get_ident()))

        class Callable_:
            async def __call__(self) -> None:
                threads.append(("instance", threading.get_ident()))

        scheduler.add_job(functools.partial(job, "partial"), every(minutes=1))
        scheduler.add_job(Callable_(), every(minutes=1))
        await clock.advance(minutes=1)
        assert sorted(threads) == [
            ("instance", threading.get_ident()),
            ("partial", threading.get_ident()),
        ]

    async def test_plain_functions_use_the_schedulers_own_thread_limiter(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """Plain jobs run even while anyio's default thread limiter is exhausted."""
        default = anyio.to_thread.current_default_thread_limiter()
        default.total_tokens = 1
        hold = threading.Event()
        blocker = asyncio.create_task(anyio.to_thread.run_sync(hold.wait))
        try:
            await clock.advance(0)
            assert default.borrowed_tokens == 1
            ran: list[datetime] = []
            scheduler.add_job(lambda: ran.append(clock.now()), every(minutes=1))
            await clock.advance(minutes=1)
            assert ran == [at(1)]
        finally:
            hold.set()
            await blocker

    async def test_max_threads_bounds_concurrent_plain_runs(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """With max_threads=1 a second plain run waits for the first one's thread."""
        scheduler = await start(max_threads=1)
        clock.thread_wait = 0.05  # the threads wait for this test, not for the clock
        release = threading.Event()
        started: list[str] = []

        entered = threading.Event()

        def job(label: str) -> None:
            started.append(label)
            entered.set()
            release.wait(timeout=10)

        scheduler.add_job(job, every(minutes=1), args=("a",))
        scheduler.add_job(job, every(minutes=1), args=("b",))
        await clock.advance(minutes=1)
        assert entered.wait(timeout=10)
        assert len(started) == 1
        release.set()
        clock.thread_wait = 10  # now the threads finish on their own: wait for them
        await clock.advance(seconds=1)
        assert sorted(started) == ["a", "b"]

    async def test_args_and_kwargs_are_passed_to_async_and_plain_functions(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """args and kwargs reach both kinds of job function."""
        calls: list[tuple[str, int, int, str]] = []

        async def async_job(a: int, b: int, *, c: str) -> None:
            calls.append(("async", a, b, c))

        def plain_job(a: int, b: int, *, c: str) -> None:
            calls.append(("plain", a, b, c))

        scheduler.add_job(async_job, every(minutes=1), args=(1, 2), kwargs={"c": "x"})
        scheduler.add_job(plain_job, every(minutes=1), args=[3], kwargs={"b": 4, "c": "y"})
        await clock.advance(minutes=1)
        assert sorted(calls) == [("async", 1, 2, "x"), ("plain", 3, 4, "y")]

    async def test_run_context_is_injected_by_class_annotation(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A parameter annotated with the RunContext class itself receives the context."""
        got: list[Any] = []

        async def job(label, context):  # type: ignore[no-untyped-def]
            got.append((label, context))

        job.__annotations__ = {"label": str, "context": RunContext}
        scheduler.add_job(job, every(minutes=1), args=("a",))
        await clock.advance(minutes=1)
        assert len(got) == 1
        assert got[0][0] == "a"
        assert isinstance(got[0][1], RunContext)
        assert got[0][1].tick == at(1)

    async def test_run_context_is_injected_by_string_annotation(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """Under ``from __future__ import annotations`` the string "RunContext" is enough."""
        got: list[RunContext] = []

        async def job(ctx: RunContext) -> None:
            got.append(ctx)

        assert job.__annotations__["ctx"] == "RunContext"
        scheduler.add_job(job, every(minutes=1))
        await clock.advance(minutes=1)
        assert [c.tick for c in got] == [at(1)]

    async def test_run_context_is_injected_by_dotted_string_annotation(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """The string "asyncron.RunContext" works too, in a plain function as well."""
        got: list[RunContext] = []

        def job(number: int, ctx: asyncron.RunContext) -> None:
            got.append(ctx)

        assert job.__annotations__["ctx"] == "asyncron.RunContext"
        scheduler.add_job(job, every(minutes=1), args=(7,))
        await clock.advance(minutes=1)
        assert [c.tick for c in got] == [at(1)]

    async def test_run_context_describes_the_run(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """ctx carries the job, the tick, kind "scheduled", attempt 1, no fencing token."""
        got: list[RunContext] = []
        job = scheduler.add_job(record_into(got), every(minutes=5), name="ctx")
        await clock.advance(minutes=5)
        (ctx,) = got
        assert ctx.job is job
        assert ctx.tick == at(5)
        assert ctx.tick.tzinfo is not None
        assert ctx.tick.utcoffset() == timedelta(0)
        assert ctx.kind is RunKind.SCHEDULED
        assert ctx.attempt == 1
        assert ctx.fencing_token is None
        assert ctx.cancelled is False

    async def test_run_context_is_read_only(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A job cannot change its RunContext or add attributes to it."""
        errors: list[str] = []

        async def job(ctx: RunContext) -> None:
            for name, value in (("tick", T0), ("cancelled", True), ("extra", 1)):
                try:
                    setattr(ctx, name, value)
                except AttributeError:
                    errors.append(name)

        scheduler.add_job(job, every(minutes=1))
        await clock.advance(minutes=1)
        assert errors == ["tick", "cancelled", "extra"]

    async def test_cancellable_async_runs_expose_their_cancel_scope(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """ctx.cancel_scope is set when a timeout can cancel the run; else, and in threads, None."""
        scopes: dict[str, Any] = {}

        async def timed_job(ctx: RunContext) -> None:
            scopes["timed"] = ctx.cancel_scope

        async def plain_async_job(ctx: RunContext) -> None:
            scopes["untimed"] = ctx.cancel_scope

        def plain_job(ctx: RunContext) -> None:
            scopes["plain"] = ctx.cancel_scope

        scheduler.add_job(timed_job, every(minutes=1), timeout=30)
        scheduler.add_job(plain_async_job, every(minutes=1))
        scheduler.add_job(plain_job, every(minutes=1), timeout=30)
        await clock.advance(minutes=1)
        assert isinstance(scopes["timed"], anyio.CancelScope)
        assert scopes["untimed"] is None
        assert scopes["plain"] is None

    async def test_current_run_is_visible_in_async_jobs_and_worker_threads(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """current_run() returns the run's context inside async and plain jobs, None outside."""
        found: dict[str, RunContext | None] = {}

        async def async_job() -> None:
            found["async"] = current_run()

        def plain_job() -> None:
            found["plain"] = current_run()

        scheduler.add_job(async_job, every(minutes=1))
        scheduler.add_job(plain_job, every(minutes=1))
        await clock.advance(minutes=1)
        assert found["async"] is not None
        assert found["async"].tick == at(1)
        assert found["plain"] is not None
        assert found["plain"].tick == at(1)
        assert found["async"] is not found["plain"]
        assert current_run() is None

    async def test_plain_function_returning_a_coroutine_fails_the_run(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A plain function that returns a coroutine fails with a TypeError about async def."""
        rec = Recorder()
        scheduler.subscribe(rec, JobFailed, JobSucceeded)
        awaited: list[bool] = []

        async def inner() -> None:
            awaited.append(True)

        def job() -> Any:
            return inner()

        scheduler.add_job(job, every(minutes=1))
        await clock.advance(minutes=1)
        (failed,) = rec.of(JobFailed, JobSucceeded)
        assert isinstance(failed, JobFailed)
        assert isinstance(failed.exception, TypeError)
        assert "async def" in str(failed.exception)
        assert awaited == []

    async def test_a_cancelled_error_raised_by_the_job_is_a_failure(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A job whose awaited future was cancelled fails with JobFailed(CancelledError)."""
        rec = Recorder()
        scheduler.subscribe(rec, JobFailed, JobSucceeded)

        async def job() -> None:
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future

        handle = scheduler.add_job(job, every(minutes=1))
        await clock.advance(minutes=1)
        outcome = await handle.run_now()
        assert outcome.status is RunStatus.FAILED
        assert isinstance(outcome.exception, asyncio.CancelledError)
        await clock.advance(seconds=1)
        assert [type(e) for e in rec.events] == [JobFailed, JobFailed]
        assert isinstance(rec.events[0].exception, asyncio.CancelledError)  # type: ignore[attr-defined]

    async def test_shutdown_still_cancels_runs_after_stop_timeout(
        self, clock: VirtualClock
    ) -> None:
        """A run still going at the end of stop_timeout is cancelled by shutdown."""
        scheduler = Scheduler(clock=clock, stop_timeout=5)
        cancelled: list[datetime] = []

        async def job() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(clock.now())
                raise

        scheduler.add_job(job, every(minutes=1))
        await scheduler.start()
        await clock.advance(minutes=1)
        stopping = asyncio.create_task(scheduler.shutdown())
        await clock.advance(seconds=6)
        await stopping
        assert cancelled == [at(1, 5)]
        assert scheduler.state == "shut_down"

    async def test_raising_job_fails_and_the_scheduler_keeps_running(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A job that raises emits JobFailed; it and other jobs keep running."""
        rec = Recorder()
        scheduler.subscribe(rec, JobFailed)
        other: list[datetime] = []

        async def broken() -> None:
            raise RuntimeError("boom")

        async def fine() -> None:
            other.append(clock.now())

        bad = scheduler.add_job(broken, every(minutes=1))
        scheduler.add_job(fine, every(minutes=1))
        await clock.advance(minutes=3)
        assert other == [at(1), at(2), at(3)]
        failures = rec.of(JobFailed)
        assert [e.tick for e in failures] == [at(1), at(2), at(3)]
        assert all(isinstance(e.exception, RuntimeError) for e in failures)
        assert bad.run_count == 3
        assert scheduler.state == "running"


# --- events ---------------------------------------------------------------------


class TestRunEvents:
    async def test_started_and_succeeded_carry_tick_kind_times(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """JobStarted and JobSucceeded carry the tick, kind, start/end, lateness, result."""
        rec = Recorder()
        scheduler.subscribe(rec, JobStarted, JobSucceeded)

        async def job() -> int:
            await pause(clock, 7)
            return 42

        handle = scheduler.add_job(job, every(minutes=1), name="timed")
        await clock.advance(minutes=1, seconds=10)
        started, succeeded = rec.events
        assert isinstance(started, JobStarted)
        assert (started.job_id, started.job_name) == (handle.id, "timed")
        assert (started.tick, started.kind) == (at(1), RunKind.SCHEDULED)
        assert started.start == at(1)
        assert started.lateness == timedelta(0)
        assert isinstance(succeeded, JobSucceeded)
        assert (succeeded.tick, succeeded.kind) == (at(1), RunKind.SCHEDULED)
        assert (succeeded.start, succeeded.end) == (at(1), at(1, 7))
        assert succeeded.return_value == 42

    async def test_failed_carries_the_exception(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """JobFailed carries the tick, kind and the exception raised."""
        rec = Recorder()
        scheduler.subscribe(rec, JobFailed)
        error = ValueError("bad")

        async def job() -> None:
            raise error

        scheduler.add_job(job, every(minutes=1))
        await clock.advance(minutes=1)
        (failed,) = rec.events
        assert (failed.tick, failed.kind) == (at(1), RunKind.SCHEDULED)
        assert failed.exception is error
        assert failed.start == failed.end == at(1)

    async def test_skipped_and_missed_carry_their_reasons(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """JobSkipped carries tick, kind and reason; JobMissed its reason, count and ticks."""
        rec = Recorder()
        scheduler.subscribe(rec, JobSkipped, JobMissed)

        async def slow() -> None:
            await pause(clock, 90)

        scheduler.add_job(slow, every(minutes=1), name="skip")
        scheduler.add_job(slow, every(minutes=1), name="late", overlap="wait", misfire_grace=20)
        await clock.advance(minutes=2, seconds=40)
        skipped, missed = rec.events
        assert isinstance(skipped, JobSkipped)
        assert skipped.job_name == "skip"
        assert (skipped.tick, skipped.kind, skipped.reason) == (
            at(2),
            RunKind.SCHEDULED,
            SkipReason.OVERLAP,
        )
        assert isinstance(missed, JobMissed)
        assert missed.job_name == "late"
        assert (missed.reason, missed.count) == (MissReason.LATE, 1)
        assert missed.first_tick == missed.last_tick == at(2)

    def test_events_are_frozen_and_slotted(self) -> None:
        """Events cannot be changed after they are built and carry no __dict__."""
        event = SchedulerStarted(timestamp=T0)
        with pytest.raises(AttributeError):
            event.timestamp = T0  # type: ignore[misc]
        assert not hasattr(event, "__dict__")
        assert SchedulerStopped(timestamp=T0) != event

    async def test_per_job_listeners_receive_only_that_jobs_events(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A job's listeners get its own events (added, runs, removal) and no one else's."""
        mine, theirs = Recorder(), Recorder()

        async def job() -> None:
            pass

        first = scheduler.add_job(job, every(minutes=1), name="a", listeners=[mine])
        second = scheduler.add_job(job, every(minutes=1), name="b", listeners=theirs)
        await clock.advance(minutes=1)
        first.remove()
        await clock.advance(minutes=1)
        assert {e.job_id for e in mine.events} == {first.id}  # type: ignore[attr-defined]
        assert {e.job_id for e in theirs.events} == {second.id}  # type: ignore[attr-defined]
        assert [type(e) for e in mine.events] == [JobAdded, JobStarted, JobSucceeded, JobRemoved]
        assert [type(e) for e in theirs.events] == [
            JobAdded,
            JobStarted,
            JobSucceeded,
            JobStarted,
            JobSucceeded,
        ]

    async def test_listener_given_at_add_job_sees_job_added(self, clock: VirtualClock) -> None:
        """A per-job listener also receives the JobAdded of its own job."""
        rec = Recorder()
        async with Scheduler(clock=clock) as scheduler:
            job = scheduler.add_job(lambda: None, every(minutes=1), listeners=[rec])
            await clock.advance(seconds=1)
        assert [type(e) for e in rec.events] == [JobAdded]
        assert rec.events[0].job_id == job.id  # type: ignore[attr-defined]


class TestSubscriptions:
    async def test_subscribe_with_types_matches_by_isinstance(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """Types filter by isinstance: RunEvent covers started and succeeded runs."""
        runs, everything = Recorder(), Recorder()
        scheduler.subscribe(runs, RunEvent)
        scheduler.subscribe(everything)
        scheduler.add_job(lambda: None, every(minutes=1))
        await clock.advance(minutes=1)
        assert [type(e) for e in runs.events] == [JobStarted, JobSucceeded]
        assert [type(e) for e in everything.events] == [JobAdded, JobStarted, JobSucceeded]

    async def test_unsubscribe_stops_delivery(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """After unsubscribe() a callback receives nothing more; a second call is harmless."""
        rec = Recorder()
        sub = scheduler.subscribe(rec, JobStarted)
        scheduler.add_job(lambda: None, every(minutes=1))
        await clock.advance(minutes=1)
        sub.unsubscribe()
        sub.unsubscribe()
        await clock.advance(minutes=2)
        assert [e.tick for e in rec.events] == [at(1)]  # type: ignore[attr-defined]

    async def test_unsubscribe_drops_events_already_queued(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A callback that unsubscribes gets none of the events queued before that."""
        got: list[Event] = []

        def once_only(event: Event) -> None:
            got.append(event)
            sub.unsubscribe()

        sub = scheduler.subscribe(once_only, JobStarted)
        scheduler.add_job(noop, every(minutes=1))
        scheduler.add_job(noop, every(minutes=1))
        await clock.advance(minutes=2)
        assert len(got) == 1

    async def test_subscription_is_a_context_manager(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """Leaving ``with scheduler.subscribe(...)`` unsubscribes."""
        rec = Recorder()
        scheduler.add_job(lambda: None, every(minutes=1))
        with scheduler.subscribe(rec, JobStarted):
            await clock.advance(minutes=1)
        await clock.advance(minutes=1)
        assert [e.tick for e in rec.events] == [at(1)]  # type: ignore[attr-defined]

    async def test_raising_callbacks_are_logged_not_fatal(
        self, scheduler: Scheduler, clock: VirtualClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Sync and async callbacks that raise are logged; delivery and runs go on."""
        rec = Recorder()

        def sync_bad(event: Event) -> None:
            raise RuntimeError("sync callback")

        async def async_bad(event: Event) -> None:
            raise RuntimeError("async callback")

        scheduler.subscribe(sync_bad, JobStarted)
        scheduler.subscribe(async_bad, JobStarted)
        scheduler.subscribe(rec, JobStarted)
        ran: list[datetime] = []

        async def job() -> None:
            ran.append(clock.now())

        scheduler.add_job(job, every(minutes=1))
        with caplog.at_level(logging.ERROR, logger="asyncron"):
            await clock.advance(minutes=2)
        assert ran == [at(1), at(2)]
        assert len(rec.events) == 2
        messages = [r.getMessage() for r in caplog.records if r.exc_info]
        assert sum("<locals>.sync_bad" in m for m in messages) == 2
        assert sum("<locals>.async_bad" in m for m in messages) == 2

    async def test_async_callbacks_are_awaited_in_order(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """An async callback is awaited; events reach it in the order they were emitted."""
        order: list[str] = []

        async def callback(event: Event) -> None:
            await asyncio.sleep(0)
            order.append(type(event).__name__)

        scheduler.subscribe(callback, RunEvent)
        scheduler.add_job(lambda: None, every(minutes=1))
        await clock.advance(minutes=2)
        assert order == ["JobStarted", "JobSucceeded"] * 2


class TestDelivery:
    async def test_a_slow_callback_never_delays_runs(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """Delivery is outside the run pipeline: a blocked async callback holds no run back."""
        gate = asyncio.Event()
        delivered: list[datetime] = []

        async def slow(event: JobStarted) -> None:
            await gate.wait()
            delivered.append(event.tick)

        scheduler.subscribe(slow, JobStarted)
        ran: list[RunContext] = []
        scheduler.add_job(record_into(ran), every(minutes=1))
        await clock.advance(minutes=3)
        assert [c.tick for c in ran] == [at(1), at(2), at(3)]
        assert delivered == []
        gate.set()
        await clock.advance(seconds=1)
        assert delivered == [at(1), at(2), at(3)]

    async def test_callbacks_run_outside_the_run(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """Callbacks are not called inside a run: current_run() is None there."""
        seen: list[RunContext | None] = []
        scheduler.subscribe(lambda e: seen.append(current_run()), JobStarted, JobSucceeded)
        scheduler.add_job(lambda: None, every(minutes=1))
        await clock.advance(minutes=1)
        assert seen == [None, None]

    async def test_a_full_queue_drops_the_oldest_events_with_a_warning(
        self, clock: VirtualClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Past 10,000 queued events the oldest are dropped and the drop is logged."""
        scheduler = Scheduler(clock=clock)
        rec = Recorder()
        scheduler.subscribe(rec, JobAdded)
        jobs = [scheduler.add_job(noop, every(hours=1)) for _ in range(10_005)]
        with caplog.at_level(logging.WARNING, logger="asyncron"):
            await scheduler.start()
            try:
                await clock.advance(0)
            finally:
                await shut_down(scheduler, clock)
        assert len(rec.events) == 10_000
        assert [e.job_id for e in rec.events] == [j.id for j in jobs[5:]]  # type: ignore[attr-defined]
        assert any("dropped" in r.getMessage() for r in caplog.records)


class TestEventCost:
    EVENT_TYPES = (
        events_module.JobAdded,
        events_module.JobRemoved,
        events_module.JobStarted,
        events_module.JobSucceeded,
        events_module.JobFailed,
        events_module.JobSkipped,
        events_module.JobMissed,
        events_module.SchedulerStarted,
        events_module.SchedulerStopped,
    )

    @pytest.fixture
    def built(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """Count the construction of every event type the scheduler emits here."""
        made: list[str] = []
        for cls in self.EVENT_TYPES:
            original = cls.__init__

            def counting(self: Any, *args: Any, __o: Any = original, **kw: Any) -> None:
                made.append(type(self).__name__)
                __o(self, *args, **kw)

            monkeypatch.setattr(cls, "__init__", counting)
        return made

    async def exercise(self, scheduler: Scheduler, clock: VirtualClock) -> None:
        gate = asyncio.Event()

        async def slow() -> None:
            await gate.wait()

        async def broken() -> None:
            raise RuntimeError("x")

        scheduler.add_job(slow, every(minutes=1))
        scheduler.add_job(broken, every(minutes=1))
        scheduler.add_job(lambda: None, every(minutes=1), limit_runs=1)
        async with scheduler:
            await clock.advance(minutes=3)
            gate.set()
            clock.step(timedelta(minutes=10))
            await clock.advance(seconds=1)

    async def test_no_event_objects_are_built_when_nobody_listens(
        self, built: list[str], clock: VirtualClock
    ) -> None:
        """Without subscribers or listeners the scheduler builds no event objects."""
        await self.exercise(Scheduler(clock=clock), clock)
        assert built == []

    async def test_only_subscribed_types_are_built(
        self, built: list[str], clock: VirtualClock
    ) -> None:
        """A subscriber of JobFailed causes only JobFailed objects to be built."""
        scheduler = Scheduler(clock=clock)
        rec = Recorder()
        scheduler.subscribe(rec, JobFailed)
        await self.exercise(scheduler, clock)
        assert built
        assert set(built) == {"JobFailed"}
        assert len(rec.events) == len(built)

    async def test_the_counting_hook_sees_every_event_type_when_listened_to(
        self, built: list[str], clock: VirtualClock
    ) -> None:
        """Control: with a catch-all subscriber each event type above is built."""
        scheduler = Scheduler(clock=clock)
        scheduler.subscribe(Recorder())
        await self.exercise(scheduler, clock)
        assert set(built) == {cls.__name__ for cls in self.EVENT_TYPES}


def _runs_through(monkeypatch: pytest.MonkeyPatch, method: str) -> list[str]:
    """The names of the jobs whose runs go through ``RunEngine.<method>`` from now on."""
    names: list[str] = []
    original = getattr(RunEngine, method)

    async def counting(self: RunEngine, job: Any, *args: Any) -> Any:
        names.append(job.name)
        return await original(self, job, *args)

    monkeypatch.setattr(RunEngine, method, counting)
    return names


class TestShortPath:
    """A run nobody listens to, with nothing around its call, takes a shorter path
    through the runner (``RunEngine._run_bare``); it must behave as the full one."""

    @pytest.fixture
    def full_calls(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """The names of the jobs whose runs went through the full path (``_call``)."""
        return _runs_through(monkeypatch, "_call")

    @pytest.mark.parametrize("listened", [False, True], ids=["short", "full"])
    async def test_both_paths_give_the_same_runs(
        self,
        listened: bool,
        full_calls: list[str],
        clock: VirtualClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Ticks, run_count, last_run, current_run(), failures (logged, the job goes on),
        from_completion and one-off jobs come out the same on either path."""
        scheduler = Scheduler(clock=clock)
        rec = Recorder()
        if listened:
            scheduler.subscribe(rec, JobStarted)
        seen: list[datetime] = []

        async def noting(label: str) -> None:
            ctx = current_run()
            assert ctx is not None
            seen.append(ctx.tick)

        async def broken() -> None:
            raise RuntimeError("boom")

        async def slow() -> None:
            await pause(clock, 30)

        regular = scheduler.add_job(noting, every(minutes=1), name="regular", args=("r",))
        failing = scheduler.add_job(broken, every(minutes=1), name="failing")
        chained = scheduler.add_job(slow, every(minutes=1), name="chained", from_completion=True)
        single = scheduler.add_job(noting, once(at(2)), name="single", kwargs={"label": "s"})
        with caplog.at_level(logging.INFO, logger="asyncron"):
            async with scheduler:
                await clock.advance(minutes=3)
        assert seen == [at(1), at(2), at(2), at(3)]
        assert (regular.run_count, regular.last_run) == (3, at(3))
        assert (failing.run_count, failing.last_run) == (3, at(3))
        # from_completion: each run takes 30 s, the next tick is a minute after its end.
        assert (chained.run_count, chained.last_run) == (2, at(2, 30))
        assert single.run_count == 1
        assert single not in scheduler.jobs
        failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
        assert len(failures) == 3
        assert all("failing" in m and "boom" in m for m in failures)
        if listened:
            assert len(rec.of(JobStarted)) == 9
            assert sorted(set(full_calls)) == ["chained", "failing", "regular", "single"]
        else:
            assert full_calls == []

    @pytest.mark.parametrize("listened", [False, True], ids=["short", "full"])
    async def test_a_loop_task_factory_makes_every_runs_task(
        self, listened: bool, clock: VirtualClock
    ) -> None:
        """Runs start as Task(...) directly, except on a loop with a task factory, which
        then creates each run's task (on either path)."""
        loop = asyncio.get_running_loop()
        made: list[str] = []

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
            made.append(coro.__qualname__)
            return asyncio.Task(coro, loop=loop, **kwargs)

        async def tick() -> None:
            pass

        scheduler = Scheduler(clock=clock)
        if listened:
            scheduler.subscribe(Recorder(), JobStarted)
        scheduler.add_job(tick, every(minutes=1))
        loop.set_task_factory(factory)
        try:
            async with scheduler:
                await clock.advance(minutes=2)
        finally:
            loop.set_task_factory(None)
        runs = [name for name in made if name.startswith("RunEngine._run")]
        assert len(runs) == 2

    async def test_a_subscriber_added_between_runs_hears_the_next_one(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """The choice of path is made per run: subscribing turns the events on at once."""

        async def tick() -> None:
            pass

        job = scheduler.add_job(tick, every(minutes=1))
        await clock.advance(minutes=1)
        rec = Recorder()
        scheduler.subscribe(rec, JobStarted)
        await clock.advance(minutes=1)
        assert [e.tick for e in rec.of(JobStarted)] == [at(2)]
        assert job.run_count == 2


class TestLockedShortPath:
    """A run whose lock came from a batch and that is otherwise bare takes the runner's
    short locked path (``RunEngine._run_locked``): one frame, the lock released in the
    background, the run's slot freed once the release is done. It must behave as the
    full path."""

    @pytest.mark.parametrize("listened", [False, True], ids=["short", "full"])
    async def test_both_paths_give_the_same_runs(
        self,
        listened: bool,
        clock: VirtualClock,
        caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Ticks, fencing tokens, current_run(), failures, locks freed after each run,
        and a lost lock cancelling its run, on either path."""
        short_runs = _runs_through(monkeypatch, "_run_locked")
        locker = MemoryLocker()
        scheduler = Scheduler(clock=clock, locker=locker)
        if listened:
            scheduler.subscribe(Recorder(), JobStarted)
        seen: list[tuple[str, datetime, int | None]] = []
        cancelled: list[datetime] = []

        async def noting(label: str) -> None:
            ctx = current_run()
            # Only a lost lock (or shutdown) can cancel these runs: their task is
            # cancelled, no scope is made.
            assert ctx is not None and ctx.cancel_scope is None
            seen.append((label, ctx.tick, ctx.fencing_token))

        async def broken() -> None:
            raise RuntimeError("boom")

        async def slow() -> None:  # until its lock is lost once
            if cancelled:
                return
            try:
                await pause(clock, 30)
            except asyncio.CancelledError:
                cancelled.append(clock.now())
                raise

        regular = scheduler.add_job(noting, every(minutes=1), name="regular", args=("r",))
        failing = scheduler.add_job(broken, every(minutes=1), name="failing")
        chained = scheduler.add_job(slow, every(minutes=1), name="chained")
        with caplog.at_level(logging.INFO, logger="asyncron"):
            async with scheduler:
                await clock.advance(minutes=1, seconds=10)
                assert set(locker.holders) == {"chained"}  # the others released theirs
                assert chained.run_count == 1
                locker.lose("chained")  # the run is cancelled, its failure logged
                await clock.advance(seconds=1)
                assert cancelled == [at(1, 10)]
                assert dict(locker.holders) == {}
                await clock.advance(minutes=1, seconds=49)  # to 3:00, the 2:00 run ended
        assert [(label, tick) for label, tick, _ in seen] == [
            ("r", at(1)),
            ("r", at(2)),
            ("r", at(3)),
        ]
        tokens = [token for _, _, token in seen]
        assert None not in tokens and tokens == sorted(tokens)
        assert (regular.run_count, regular.last_run) == (3, at(3))
        assert (failing.run_count, failing.last_run) == (3, at(3))
        assert (chained.run_count, chained.last_run) == (3, at(3))
        failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
        assert sum("boom" in m for m in failures) == 3
        assert sum("chained" in m and "LockLostError" in m for m in failures) == 1
        if listened:
            assert short_runs == []
        else:
            assert sorted(set(short_runs)) == ["chained", "failing", "regular"]

    @pytest.mark.parametrize("listened", [False, True], ids=["short", "full"])
    async def test_a_lost_lock_cancels_its_run_once_and_shutdown_still_can(
        self,
        listened: bool,
        clock: VirtualClock,
        caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A lost lock cancels its run's task once: a job that catches it can await its
        cleanup (not cancelled again), the run fails with LockLostError, and shutdown's
        own cancellation after stop_timeout still reaches it."""
        short_runs = _runs_through(monkeypatch, "_run_locked")
        locker = MemoryLocker()
        scheduler = Scheduler(clock=clock, locker=locker, stop_timeout=5)
        if listened:
            scheduler.subscribe(Recorder(), JobStarted)
        steps: list[tuple[str, datetime]] = []

        async def stubborn() -> None:
            try:
                await pause(clock, 30)
            except asyncio.CancelledError:
                steps.append(("lost", clock.now()))
            await pause(clock, 5)  # its cleanup
            steps.append(("cleaned up", clock.now()))
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                steps.append(("shut down", clock.now()))
                raise

        scheduler.add_job(stubborn, every(hours=1), name="stubborn")
        with caplog.at_level(logging.INFO, logger="asyncron"):
            await scheduler.start()
            await clock.advance(hours=1, seconds=10)
            locker.lose("stubborn")
            await clock.advance(seconds=10)
            assert steps == [("lost", at(60, 10)), ("cleaned up", at(60, 15))]
            stopping = asyncio.create_task(scheduler.shutdown())
            await clock.advance(seconds=6)
            await stopping
        assert steps[2:] == [("shut down", at(60, 25))]
        assert scheduler.state == "shut_down"
        assert short_runs == ([] if listened else ["stubborn"])
        messages = [r.getMessage() for r in caplog.records]
        assert sum(m.startswith("lost the lock of stubborn") for m in messages) == 1
        # Shutdown's cancellation wins: the run is cancelled, not reported failed.
        assert not [m for m in messages if m.startswith("run of stubborn")]


# --- run_now ----------------------------------------------------------------------


class TestRunNow:
    async def test_returns_a_succeeded_outcome(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """run_now runs the job at once, kind run_now, tick = now, and returns its result."""
        got: list[RunContext] = []

        async def job(ctx: RunContext) -> str:
            got.append(ctx)
            await pause(clock, 2)
            return "done"

        handle = scheduler.add_job(job, every(hours=1))
        await clock.advance(seconds=30)
        task = asyncio.create_task(handle.run_now())
        await clock.advance(seconds=5)
        outcome = await task
        assert outcome.status is RunStatus.SUCCEEDED
        assert outcome.tick == at(0, 30)
        assert (outcome.start, outcome.end) == (at(0, 30), at(0, 32))
        assert outcome.return_value == "done"
        assert outcome.exception is None
        assert got[0].kind is RunKind.RUN_NOW
        assert got[0].tick == at(0, 30)

    async def test_returns_a_failed_outcome_and_never_raises(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """A raising job gives a failed outcome carrying the exception; run_now returns."""
        error = KeyError("k")

        def job() -> None:
            raise error

        handle = scheduler.add_job(job, every(hours=1))
        outcome = await handle.run_now()
        assert outcome.status is RunStatus.FAILED
        assert outcome.exception is error
        assert outcome.reason is None

    async def test_is_skipped_for_overlap_while_a_run_is_in_progress(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """With overlap="skip" and a run in progress, run_now is refused with reason overlap."""
        gate = asyncio.Event()
        rec = Recorder()
        scheduler.subscribe(rec, JobSkipped)

        async def job() -> None:
            await gate.wait()

        handle = scheduler.add_job(job, every(minutes=1))
        await clock.advance(minutes=1)
        outcome = await handle.run_now()
        assert outcome.status is RunStatus.SKIPPED
        assert outcome.reason is SkipReason.OVERLAP
        gate.set()
        await clock.advance(seconds=1)
        (skipped,) = rec.events
        assert skipped.kind is RunKind.RUN_NOW  # type: ignore[attr-defined]

    async def test_waits_its_turn_with_overlap_wait(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """With overlap="wait" run_now queues behind the run in progress, then runs."""
        gate = asyncio.Event()
        kinds: list[RunKind] = []

        async def job(ctx: RunContext) -> None:
            kinds.append(ctx.kind)
            await gate.wait()

        handle = scheduler.add_job(job, every(hours=1), overlap="wait")
        await clock.advance(hours=1)
        task = asyncio.create_task(handle.run_now())
        await clock.advance(seconds=1)
        assert scheduler.waiting_runs == 1
        assert not task.done()
        gate.set()
        await clock.advance(seconds=1)
        assert (await task).status is RunStatus.SUCCEEDED
        assert kinds == [RunKind.SCHEDULED, RunKind.RUN_NOW]

    async def test_obeys_the_global_limit(self, start: Factory, clock: VirtualClock) -> None:
        """At max_concurrent_jobs in skip mode run_now is refused as concurrency_limit."""
        scheduler = await start(max_concurrent_jobs=1, concurrency_mode="skip")
        gate = asyncio.Event()

        async def busy() -> None:
            await gate.wait()

        scheduler.add_job(busy, every(minutes=1), name="busy")
        other = scheduler.add_job(noop, every(hours=1), name="other")
        await clock.advance(minutes=1)
        outcome = await other.run_now()
        gate.set()
        assert (outcome.status, outcome.reason) == (
            RunStatus.SKIPPED,
            SkipReason.CONCURRENCY_LIMIT,
        )

    async def test_keeps_next_run_and_limit_runs_but_counts_the_run(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """run_now increments run_count, leaves next_run alone, does not use up limit_runs."""
        ticks: list[datetime] = []

        async def job(ctx: RunContext) -> None:
            ticks.append(ctx.tick)

        handle = scheduler.add_job(job, every(minutes=1), limit_runs=2)
        next_run = handle.next_run
        for _ in range(3):
            assert (await handle.run_now()).status is RunStatus.SUCCEEDED
        assert handle.run_count == 3
        assert handle.next_run == next_run == at(1)
        assert handle.last_run == at(0)
        await clock.advance(minutes=5)
        assert ticks[3:] == [at(1), at(2)]
        assert handle.run_count == 5
        assert handle.removed

    async def test_before_start_raises_scheduler_state_error(self, clock: VirtualClock) -> None:
        """run_now needs a running scheduler and says which state it found."""
        scheduler = Scheduler(clock=clock)
        job = scheduler.add_job(lambda: None, every(minutes=1))
        with pytest.raises(asyncron.SchedulerStateError, match="created"):
            await job.run_now()


# --- the monitor --------------------------------------------------------------------


class TestMonitor:
    async def test_record_run_gets_status_duration_and_lateness(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """The monitor sees each run's status, duration and lateness in seconds."""
        monitor = Monitor()
        scheduler = await start(monitor=monitor)

        async def job() -> None:
            await pause(clock, 90)

        scheduler.add_job(job, every(minutes=1), name="m", overlap="wait")
        await clock.advance(minutes=4, seconds=10)
        assert monitor.calls[:2] == [
            ("m", "succeeded", None, 90.0, 0.0),
            ("m", "succeeded", None, 90.0, 30.0),
        ]

    async def test_record_run_gets_failures_and_skips(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """Failed runs report "failed"; refused ones "skipped" with the reason."""
        monitor = Monitor()
        scheduler = await start(monitor=monitor)
        gate = asyncio.Event()

        async def job() -> None:
            await gate.wait()
            raise RuntimeError

        job_handle = scheduler.add_job(job, every(minutes=1))
        await clock.advance(minutes=2)
        gate.set()
        await clock.advance(seconds=1)
        name = str(job_handle.id)
        assert [c[:3] for c in monitor.calls] == [
            (name, "skipped", "overlap"),
            (name, "failed", None),
        ]


# --- before_run ---------------------------------------------------------------------


class TestBeforeRun:
    @pytest.mark.parametrize("kind", ["false", "raise", "async_false", "async_raise"])
    async def test_veto_skips_the_run_and_consumes_the_tick(
        self, scheduler: Scheduler, clock: VirtualClock, kind: str
    ) -> None:
        """False, raising, or an async hook saying False skip the run as vetoed, for good."""
        veto = {"on": True}
        seen: list[datetime] = []

        def sync_hook(ctx: RunContext) -> bool:
            seen.append(ctx.tick)
            if veto["on"] and kind == "raise":
                raise RuntimeError("hook")
            return not veto["on"]

        async def async_hook(ctx: RunContext) -> bool:
            return sync_hook(ctx)

        ran: list[datetime] = []

        async def job(ctx: RunContext) -> None:
            ran.append(ctx.tick)

        rec = Recorder()
        scheduler.subscribe(rec, JobSkipped)
        hook = async_hook if kind.startswith("async") else sync_hook
        if kind == "async_raise":
            kind = "raise"
        scheduler.add_job(job, every(minutes=1), before_run=hook)
        await clock.advance(minutes=1)
        veto["on"] = False
        await clock.advance(minutes=1)
        assert seen == [at(1), at(2)]
        assert ran == [at(2)]
        (skipped,) = rec.events
        assert (skipped.tick, skipped.reason) == (at(1), SkipReason.VETOED)  # type: ignore[attr-defined]

    async def test_vetoed_run_now_is_a_skipped_outcome(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """run_now under a vetoing hook returns skipped with reason vetoed."""
        job = scheduler.add_job(lambda: None, every(hours=1), before_run=lambda ctx: False)
        outcome = await job.run_now()
        assert (outcome.status, outcome.reason) == (RunStatus.SKIPPED, SkipReason.VETOED)
        assert job.run_count == 0

    async def test_scheduler_level_hook_applies_and_job_hook_wins(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """Scheduler(before_run=...) guards every job; a job's own before_run replaces it."""
        asked: list[str] = []

        def deny(ctx: RunContext) -> bool:
            asked.append(ctx.job.name or "")
            return False

        scheduler = await start(before_run=deny)
        ran: list[str] = []

        async def job(label: str) -> None:
            ran.append(label)

        scheduler.add_job(job, every(minutes=1), args=("plain",), name="plain")
        scheduler.add_job(
            job, every(minutes=1), args=("own",), name="own", before_run=lambda c: True
        )
        await clock.advance(minutes=1)
        assert asked == ["plain"]
        assert ran == ["own"]


# --- coordination: locker -----------------------------------------------------------


class CountingLocker(MemoryLocker):
    """A MemoryLocker that counts lock() calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def lock(self, key: str, tick: datetime | None) -> Any:
        self.calls += 1
        return await super().lock(key, tick)


class TestLocker:
    async def test_a_foreign_locks_unlock_is_shielded_from_cancellation(self) -> None:
        """The scheduler shields unlock() of a lock that does not say it survives a
        cancel (the built-in backends' locks do, and are awaited as they are)."""
        gate, released = asyncio.Event(), asyncio.Event()

        class ForeignLock:
            fencing_token = 1

            def on_lost(self, callback: Callable[[BaseException], None]) -> None:
                pass

            async def unlock(self) -> None:
                await gate.wait()
                released.set()

        scheduler = Scheduler()
        job = scheduler.add_job(noop, every(minutes=1))
        unlocking = asyncio.create_task(scheduler._unlock(job, ForeignLock()))
        await asyncio.sleep(0)
        unlocking.cancel()  # shutdown cancelling the run while it unlocks
        await asyncio.sleep(0)
        gate.set()
        with contextlib.suppress(asyncio.CancelledError):
            await unlocking
        await asyncio.wait_for(released.wait(), 5)  # the release went on regardless
        assert not getattr(ForeignLock, "unlock_survives_cancel", False)
        assert MemoryLock.unlock_survives_cancel

    async def test_fencing_token_is_the_locks_token(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """ctx.fencing_token is the token of the lock held by the run."""
        locker = MemoryLocker()
        scheduler = await start(locker=locker)
        seen: list[tuple[int | None, int]] = []

        async def job(ctx: RunContext) -> None:
            seen.append((ctx.fencing_token, locker.holders["fenced"].fencing_token))

        scheduler.add_job(job, every(minutes=1), name="fenced")
        await clock.advance(minutes=3)
        assert seen == [(1, 1), (2, 2), (3, 3)]
        assert dict(locker.holders) == {}

    async def test_two_schedulers_run_each_tick_once(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """Schedulers sharing a locker run each tick once; the other skips as tick_claimed."""
        locker = MemoryLocker()
        ran: list[tuple[int, datetime]] = []
        skips = Recorder()
        for instance in (1, 2):
            scheduler = await start(locker=locker)
            scheduler.subscribe(skips, JobSkipped)

            async def job(ctx: RunContext, instance: int = instance) -> None:
                ran.append((instance, ctx.tick))

            scheduler.add_job(job, every(minutes=1), name="shared")
        await clock.advance(minutes=5)
        assert sorted(t for _, t in ran) == [at(m) for m in range(1, 6)]
        assert [e.reason for e in skips.events] == [SkipReason.TICK_CLAIMED] * 5  # type: ignore[attr-defined]
        assert sorted(e.tick for e in skips.events) == [at(m) for m in range(1, 6)]  # type: ignore[attr-defined]

    async def test_held_lock_skips_as_lock_held(self, start: Factory, clock: VirtualClock) -> None:
        """When another holder has the run lock the tick is skipped as lock_held."""
        locker = MemoryLocker()
        scheduler = await start(locker=locker)
        rec = Recorder()
        scheduler.subscribe(rec, JobSkipped)
        ran: list[datetime] = []
        other = await locker.lock("held", None)
        scheduler.add_job(record_into(ran), every(minutes=1), name="held")
        await clock.advance(minutes=1)
        await other.unlock()
        await clock.advance(minutes=1)
        assert [c.tick for c in ran] == [at(2)]  # type: ignore[attr-defined]
        assert [(e.tick, e.reason) for e in rec.events] == [(at(1), SkipReason.LOCK_HELD)]  # type: ignore[attr-defined]

    async def test_backend_failure_defers_then_reports_backend_unavailable(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """An outage emits LockFailed once, retries while within grace, then JobMissed."""
        locker = CountingLocker()
        scheduler = await start(locker=locker)
        rec = Recorder()
        scheduler.subscribe(rec, LockFailed, JobMissed, JobStarted)
        ran: list[RunContext] = []
        scheduler.add_job(record_into(ran), every(minutes=1), name="flaky", misfire_grace=5)
        locker.fail_with(ConnectionError("down"))
        await clock.advance(minutes=1, seconds=30)
        assert ran == []
        assert locker.calls >= 3
        failed = rec.of(LockFailed)
        assert len(failed) == 1
        assert failed[0].tick == at(1)
        assert isinstance(failed[0].exception, ConnectionError)
        (missed,) = rec.of(JobMissed)
        assert missed.reason is MissReason.BACKEND_UNAVAILABLE
        assert missed.first_tick == missed.last_tick == at(1)
        locker.fail_with(None)
        await clock.advance(minutes=1)
        assert [c.tick for c in ran] == [at(2)]

    async def test_tick_deferred_by_an_outage_runs_when_the_backend_recovers(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """A tick whose claim failed runs, late, once the backend answers within grace."""
        locker = MemoryLocker()
        scheduler = await start(locker=locker)
        rec = Recorder()
        scheduler.subscribe(rec, LockFailed, JobStarted, JobMissed)
        ran: list[RunContext] = []
        scheduler.add_job(record_into(ran), every(minutes=1), name="flaky", misfire_grace=30)
        locker.fail_with(ConnectionError("down"))
        await clock.advance(minutes=1, seconds=1)
        assert ran == []
        locker.fail_with(None)
        await clock.advance(seconds=5)
        (ctx,) = ran
        assert (ctx.tick, ctx.kind) == (at(1), RunKind.SCHEDULED)
        (started,) = rec.of(JobStarted)
        assert timedelta(seconds=1) <= started.lateness <= timedelta(seconds=5)
        assert len(rec.of(LockFailed)) == 1
        assert rec.of(JobMissed) == []

    async def test_losing_the_lock_cancels_an_async_run(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """lose(key) during an async run cancels it: LockLost and JobFailed(LockLostError)."""
        locker = MemoryLocker()
        scheduler = await start(locker=locker)
        rec = Recorder()
        scheduler.subscribe(rec, LockLost, JobFailed, JobSucceeded)
        cancelled: list[bool] = []

        async def job() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(current_run().cancelled)  # type: ignore[union-attr]
                raise

        scheduler.add_job(job, every(minutes=1), name="fragile")
        await clock.advance(minutes=1)
        assert locker.lose("fragile")
        await clock.advance(seconds=1)
        assert cancelled == [True]
        lost, failed = rec.events
        assert isinstance(lost, LockLost)
        assert lost.tick == at(1)
        assert isinstance(failed, JobFailed)
        assert isinstance(failed.exception, LockLostError)
        assert failed.tick == at(1)

    async def test_on_lock_lost_continue_lets_the_run_finish(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """With on_lock_lost="continue" the run goes on and succeeds; LockLost is emitted."""
        locker = MemoryLocker()
        scheduler = await start(locker=locker)
        rec = Recorder()
        scheduler.subscribe(rec, LockLost, JobFailed, JobSucceeded)
        gate = asyncio.Event()
        flags: list[bool] = []

        async def job(ctx: RunContext) -> None:
            await gate.wait()
            flags.append(ctx.cancelled)

        scheduler.add_job(job, every(minutes=1), name="stubborn", on_lock_lost="continue")
        await clock.advance(minutes=1)
        locker.lose("stubborn")
        await clock.advance(seconds=1)
        gate.set()
        await clock.advance(seconds=1)
        assert [type(e) for e in rec.events] == [LockLost, JobSucceeded]
        assert flags == [True]

    async def test_run_now_takes_the_run_lock_without_claiming(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """run_now locks the key (a fencing token) but claims no tick."""
        locker = MemoryLocker()
        scheduler = await start(locker=locker)
        ran: list[RunContext] = []
        job = scheduler.add_job(record_into(ran), every(hours=1), name="manual")
        outcome = await job.run_now()
        assert outcome.status is RunStatus.SUCCEEDED
        assert [(c.kind, c.fencing_token) for c in ran] == [(RunKind.RUN_NOW, 1)]
        assert "manual" not in locker.claimed
        assert dict(locker.holders) == {}

    async def test_run_now_during_an_outage_is_skipped_as_lock_error(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """run_now does not retry a failing backend: skipped(lock_error) and LockFailed."""
        locker = MemoryLocker()
        scheduler = await start(locker=locker)
        rec = Recorder()
        scheduler.subscribe(rec, LockFailed)
        job = scheduler.add_job(lambda: None, every(hours=1), name="manual")
        locker.fail_with(ConnectionError("down"))
        outcome = await job.run_now()
        assert (outcome.status, outcome.reason) == (RunStatus.SKIPPED, SkipReason.LOCK_ERROR)
        await clock.advance(seconds=1)
        assert len(rec.events) == 1

    async def test_limit_runs_counts_ticks_run_elsewhere(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """With a shared locker, limit_runs=n means n runs across the cluster."""
        locker = MemoryLocker()
        ran: list[datetime] = []
        jobs = []
        for _ in range(2):
            scheduler = await start(locker=locker)

            async def job(ctx: RunContext) -> None:
                ran.append(ctx.tick)

            jobs.append(scheduler.add_job(job, every(minutes=1), name="limited", limit_runs=3))
        await clock.advance(minutes=6)
        assert sorted(ran) == [at(1), at(2), at(3)]
        assert all(j.removed for j in jobs)

    async def test_before_run_sees_the_lock_held_and_a_veto_releases_it(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """before_run is called with the lock taken; a veto unlocks and keeps the claim."""
        locker = MemoryLocker()
        scheduler = await start(locker=locker)
        held: list[bool] = []

        def hook(ctx: RunContext) -> bool:
            held.append("vetoed" in locker.holders)
            return False

        scheduler.add_job(lambda: None, every(minutes=1), name="vetoed", before_run=hook)
        await clock.advance(minutes=1)
        assert held == [True]
        assert dict(locker.holders) == {}
        assert locker.claimed["vetoed"] == at(1)

    async def test_losing_the_lock_in_a_plain_run_sets_cancelled_then_fails(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """A plain run that loses its lock sees ctx.cancelled, then fails with LockLostError."""
        clock.thread_wait = 0.05  # the thread waits for this test, not for the clock
        locker = MemoryLocker()
        scheduler = await start(locker=locker)
        rec = Recorder()
        scheduler.subscribe(rec, LockLost, JobFailed, JobSucceeded)
        release = threading.Event()
        flags: list[bool] = []

        def job(ctx: RunContext) -> None:
            release.wait(timeout=10)
            flags.append(ctx.cancelled)

        handle = scheduler.add_job(job, every(minutes=1), name="plain")
        await clock.advance(minutes=1)
        locker.lose("plain")
        await clock.advance(seconds=1)
        assert [type(e) for e in rec.events] == [LockLost]
        assert handle.running == 1
        release.set()
        clock.thread_wait = 10  # now the thread finishes on its own: wait for it
        await clock.advance(seconds=1)
        assert flags == [True]
        assert [type(e) for e in rec.events] == [LockLost, JobFailed]
        assert isinstance(rec.events[1].exception, LockLostError)  # type: ignore[attr-defined]

    async def test_max_instances_above_one_locks_each_tick_separately(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """Under a locker, max_instances=2 still lets two runs of one job overlap."""
        locker = MemoryLocker()
        scheduler = await start(locker=locker)
        gate = asyncio.Event()
        ran: list[datetime] = []

        async def job(ctx: RunContext) -> None:
            ran.append(ctx.tick)
            await gate.wait()

        scheduler.add_job(job, every(minutes=1), name="pair", max_instances=2)
        try:
            await clock.advance(minutes=2)
            assert ran == [at(1), at(2)]
            assert sorted(locker.holders) == [f"pair@{to_us(at(1))}", f"pair@{to_us(at(2))}"]
            assert locker.claimed["pair"] == at(2)
        finally:
            gate.set()

    async def test_without_grace_a_deferred_tick_gives_way_to_the_next(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """Without grace, an outage-deferred tick is missed once the next is due (coalesce)."""
        locker = MemoryLocker()
        scheduler = await start(locker=locker)
        rec = Recorder()
        scheduler.subscribe(rec, JobMissed)
        ran: list[RunContext] = []
        scheduler.add_job(record_into(ran), every(minutes=1), name="flaky")
        locker.fail_with(ConnectionError("down"))
        await clock.advance(minutes=1, seconds=59.5)  # retries every 2 s by now
        assert [(e.reason, e.first_tick) for e in rec.events] == [  # type: ignore[attr-defined]
            (MissReason.BACKEND_UNAVAILABLE, at(1))
        ]
        locker.fail_with(None)
        await clock.advance(seconds=0.5)
        assert [c.tick for c in ran] == [at(2)]

    async def test_jittered_tick_is_claimed_after_the_delay(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """With jitter the claim is taken when the delay ends, not at the tick."""
        locker = MemoryLocker()
        scheduler = await start(locker=locker, random=random.Random(1))
        ran: list[datetime] = []

        async def job(ctx: RunContext) -> None:
            ran.append(clock.now())

        scheduler.add_job(job, every(minutes=1), name="spread", jitter=30)
        await clock.advance(minutes=1)
        assert ran == []
        assert "spread" not in locker.claimed
        await clock.advance(seconds=30)
        assert len(ran) == 1
        assert at(1) < ran[0] <= at(1, 30)
        assert locker.claimed["spread"] == at(1)

    async def test_catch_up_at_start_runs_the_latest_missed_tick(self, clock: VirtualClock) -> None:
        """At start, ticks since the ledger's mark within grace coalesce into one catch-up."""
        locker = MemoryLocker()
        await (await locker.lock("cu", at(1))).unlock()
        await clock.advance(minutes=10)
        scheduler = Scheduler(clock=clock, locker=locker)
        rec = Recorder()
        scheduler.subscribe(rec, JobMissed)
        ran: list[RunContext] = []
        scheduler.add_job(record_into(ran), every(minutes=1), name="cu", misfire_grace=300)
        await scheduler.start()
        try:
            await clock.advance(seconds=1)
        finally:
            await shut_down(scheduler, clock)
        assert [(c.tick, c.kind) for c in ran] == [(at(10), RunKind.CATCH_UP)]
        (missed,) = rec.events
        assert (missed.reason, missed.count) == (MissReason.COALESCED, 4)  # type: ignore[attr-defined]
        assert (missed.first_tick, missed.last_tick) == (at(6), at(9))  # type: ignore[attr-defined]

    async def test_catch_up_without_coalesce_runs_the_newest_hundred(
        self, clock: VirtualClock
    ) -> None:
        """coalesce=False catch-up runs the newest 100 ticks; older ones are queue_full."""
        locker = MemoryLocker()
        await (await locker.lock("cu", at(1))).unlock()
        await clock.advance(hours=3)
        scheduler = Scheduler(clock=clock, locker=locker)
        rec = Recorder()
        scheduler.subscribe(rec, JobMissed)
        ran: list[RunContext] = []
        scheduler.add_job(
            record_into(ran),
            every(minutes=1),
            name="cu",
            misfire_grace=timedelta(days=1),
            coalesce=False,
            overlap="wait",
        )
        await scheduler.start()
        try:
            await clock.advance(seconds=1)
        finally:
            await shut_down(scheduler, clock)
        assert [c.tick for c in ran] == [at(m) for m in range(81, 181)]
        (missed,) = rec.events
        assert (missed.reason, missed.count) == (MissReason.QUEUE_FULL, 79)  # type: ignore[attr-defined]
        assert (missed.first_tick, missed.last_tick) == (at(2), at(80))  # type: ignore[attr-defined]
        assert locker.claimed["cu"] == at(180)

    async def test_distributed_false_ignores_the_locker(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """A distributed=False job runs without the scheduler's (failing) locker."""
        locker = CountingLocker()
        locker.fail_with(ConnectionError("down"))
        scheduler = await start(locker=locker)
        rec = Recorder()
        scheduler.subscribe(rec, LockFailed)
        ran: list[RunContext] = []
        scheduler.add_job(record_into(ran), every(minutes=1), distributed=False)
        await clock.advance(minutes=2)
        assert [(c.tick, c.fencing_token) for c in ran] == [(at(1), None), (at(2), None)]
        assert locker.calls == 0
        assert rec.events == []

    def test_locker_with_distributed_false_raises(self, clock: VirtualClock) -> None:
        """Passing locker= together with distributed=False is a configuration error."""
        scheduler = Scheduler(clock=clock)
        with pytest.raises(ConfigurationError) as exc:
            scheduler.add_job(
                lambda: None, every(minutes=1), locker=MemoryLocker(), distributed=False
            )
        assert exc.value.field == "locker"


class SlowLocker(MemoryLocker):
    """A MemoryLocker whose lock_many takes ``delay`` virtual seconds (a round trip) and
    notes when it was called, with which keys."""

    def __init__(self, clock: VirtualClock, delay: float = 0.0) -> None:
        super().__init__()
        self.clock, self.delay = clock, delay
        self.batches: list[tuple[datetime, list[str]]] = []

    async def lock_many(self, requests: Any) -> Any:
        self.batches.append((self.clock.now(), [key for key, _ in requests]))
        if self.delay:
            await self.clock.sleep_until(self.clock.monotonic() + self.delay)
        return await super().lock_many(requests)


_LEAD = timedelta(milliseconds=50)


class TestClaimAhead:
    """A batch locker is asked for a tick's locks ``claim_ahead`` before the tick, so the
    runs start on time rather than a round trip late (design §4 "Batching")."""

    @pytest.mark.parametrize(
        ("options", "asked", "started"),
        [
            ({}, -_LEAD, timedelta(0)),
            ({"claim_ahead": 0}, timedelta(0), timedelta(milliseconds=30)),
            ({"claim_ahead": 0.02}, -timedelta(milliseconds=20), timedelta(milliseconds=10)),
            ({"max_concurrent_jobs": 5}, timedelta(0), timedelta(milliseconds=30)),
        ],
        ids=["default", "at-the-tick", "short", "global-limit"],
    )
    async def test_locks_are_asked_ahead_and_runs_start_on_time(
        self,
        options: dict[str, Any],
        asked: timedelta,
        started: timedelta,
        start: Factory,
        clock: VirtualClock,
    ) -> None:
        """With a 30 ms round trip: asked 50 ms ahead (the default), the runs start at
        their tick; asked at the tick (claim_ahead=0, or under a global limit, where
        admission cannot be foreseen), 30 ms late."""
        locker = SlowLocker(clock, delay=0.03)
        scheduler = await start(locker=locker, **options)
        starts: list[tuple[str, datetime, datetime]] = []

        async def job(ctx: RunContext, label: str) -> None:
            starts.append((label, ctx.tick, clock.now()))

        for label in ("a", "b"):
            scheduler.add_job(job, every(minutes=1), name=label, kwargs={"label": label})
        await clock.advance(minutes=2, seconds=1)
        assert locker.batches == [(at(m) + asked, ["a", "b"]) for m in (1, 2)]
        assert sorted(starts) == [
            (label, at(m), at(m) + started) for label in ("a", "b") for m in (1, 2)
        ]
        assert dict(locker.holders) == {}

    async def test_a_run_lock_held_when_asked_is_asked_again_at_the_tick(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """The claim asked ahead is this instance's even if the run lock was held then
        (a run of an earlier tick elsewhere): at the tick the run lock alone is asked
        again, and the tick runs if it is free by then."""
        locker = SlowLocker(clock)
        scheduler = await start(locker=locker)
        skips = Recorder()
        scheduler.subscribe(skips, JobSkipped)
        ran: list[RunContext] = []
        other = await locker.lock("held", None)  # another instance's run of 0:00
        scheduler.add_job(record_into(ran), every(minutes=1), name="held")
        await clock.advance(seconds=59.98)
        assert locker.batches == [(at(1) - _LEAD, ["held"])]
        assert locker.claimed["held"] == at(1)  # claimed here, the run lock refused
        await other.unlock()
        await clock.advance(seconds=1)
        assert [(c.tick, c.fencing_token) for c in ran] == [(at(1), 2)]
        assert skips.events == []
        # Still held at the tick: skipped as lock_held, as without claim_ahead.
        other = await locker.lock("held", None)
        await clock.advance(minutes=1)
        await other.unlock()
        assert [c.tick for c in ran] == [at(1)]
        assert [(e.tick, e.reason) for e in skips.events] == [(at(2), SkipReason.LOCK_HELD)]  # type: ignore[attr-defined]

    @pytest.mark.parametrize("change", ["pause", "remove"])
    async def test_a_lock_asked_for_a_tick_that_does_not_run_here_is_released(
        self, change: str, start: Factory, clock: VirtualClock
    ) -> None:
        """Paused or removed between the request and the tick: the tick does not run
        here, its lock is released, and its claim stays spent (another instance is
        refused it, so it runs nowhere: the documented cost of changing a job within
        claim_ahead of its tick)."""
        locker = SlowLocker(clock)
        scheduler = await start(locker=locker)
        peer = await start(locker=locker, claim_ahead=0)
        skips = Recorder()
        scheduler.subscribe(skips, JobSkipped)
        peer.subscribe(skips, JobSkipped)
        ran: list[tuple[str, datetime]] = []

        async def job(ctx: RunContext, where: str) -> None:
            ran.append((where, ctx.tick))

        here = scheduler.add_job(job, every(minutes=1), name="j", kwargs={"where": "here"})
        peer.add_job(job, every(minutes=1), name="j", kwargs={"where": "peer"})
        await clock.advance(seconds=59.98)
        assert set(locker.holders) == {"j"}  # asked ahead, held
        if change == "pause":
            here.pause()
        else:
            here.remove()
        await clock.advance(seconds=1)
        assert ran == []  # the 1:00 tick ran nowhere
        assert dict(locker.holders) == {}
        assert locker.claimed["j"] == at(1)
        reasons = sorted(e.reason for e in skips.events)  # type: ignore[attr-defined]
        assert reasons == sorted(
            [SkipReason.TICK_CLAIMED, *([SkipReason.PAUSED] if change == "pause" else [])]
        )
        await clock.advance(minutes=1)  # the next tick runs on one of them
        assert [tick for _, tick in ran] == [at(2)]

    async def test_run_now_within_claim_ahead_of_a_tick_finds_the_run_lock_held(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """The run lock is held from the request on: a run_now in those 50 ms is
        refused as lock_held, and the tick runs."""
        locker = SlowLocker(clock)
        scheduler = await start(locker=locker)
        ran: list[RunContext] = []
        job = scheduler.add_job(record_into(ran), every(minutes=1), name="j")
        await clock.advance(seconds=59.98)
        outcome = await job.run_now()
        assert (outcome.status, outcome.reason) == (RunStatus.SKIPPED, SkipReason.LOCK_HELD)
        await clock.advance(seconds=1)
        assert [(c.tick, c.kind) for c in ran] == [(at(1), RunKind.SCHEDULED)]

    async def test_shutdown_between_request_and_tick_releases_the_locks(
        self, clock: VirtualClock
    ) -> None:
        """Stopped after the locks were asked for and before the tick: they are released."""
        locker = SlowLocker(clock)
        scheduler = Scheduler(clock=clock, locker=locker)
        ran: list[RunContext] = []
        scheduler.add_job(record_into(ran), every(minutes=1), name="j")
        await scheduler.start()
        await clock.advance(seconds=59.98)
        assert set(locker.holders) == {"j"}
        await scheduler.stop_jobs()
        assert dict(locker.holders) == {}
        skips = Recorder()
        scheduler.subscribe(skips, JobSkipped)
        await scheduler.start()  # resumed: the next ticks are asked ahead again
        await clock.advance(minutes=1, seconds=1)
        # 1:00 was claimed before the stop: spent, like a tick whose run was cancelled.
        assert [(e.tick, e.reason) for e in skips.events] == [(at(1), SkipReason.TICK_CLAIMED)]  # type: ignore[attr-defined]
        assert [c.tick for c in ran] == [at(2)]
        assert locker.batches[-1] == (at(2) - _LEAD, ["j"])
        await shut_down(scheduler, clock)
        assert dict(locker.holders) == {}

    async def test_a_lock_many_that_returns_a_future_or_fails_is_asked_ahead_too(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """A custom BatchLocker whose lock_many is a plain method returning a future works
        ahead of the tick as at it; one that raises makes each run take its lock on its
        own at the tick (and the tick runs)."""

        class FutureLocker(MemoryLocker):
            failing = False

            def lock_many(self, requests: Any) -> Any:  # type: ignore[override]
                if self.failing:
                    raise ConnectionError("batch refused")
                return asyncio.ensure_future(MemoryLocker.lock_many(self, requests))

        locker = FutureLocker()
        scheduler = await start(locker=locker)
        ran: list[RunContext] = []
        scheduler.add_job(record_into(ran), every(minutes=1), name="f")
        await clock.advance(minutes=1, seconds=1)
        locker.failing = True
        await clock.advance(minutes=1)
        assert [(c.tick, c.fencing_token) for c in ran] == [(at(1), 1), (at(2), 2)]
        assert dict(locker.holders) == {}

    @pytest.mark.parametrize("value", [-0.01, 1.5, timedelta(seconds=2), "0.05", True])
    def test_bad_claim_ahead_names_the_field_and_the_value(self, value: Any) -> None:
        with pytest.raises(ConfigurationError) as exc:
            Scheduler(claim_ahead=value)
        assert exc.value.field == "claim_ahead" and exc.value.value == value


# --- coordination: elector ------------------------------------------------------------


class TestElector:
    async def test_follower_skips_as_not_leader(self, start: Factory, clock: VirtualClock) -> None:
        """A coordinated job on a follower is skipped as not_leader; local jobs still run."""
        elector = MemoryElector(leader=False)
        scheduler = await start(elector=elector)
        rec = Recorder()
        scheduler.subscribe(rec, JobSkipped)
        coordinated: list[RunContext] = []
        local: list[RunContext] = []
        scheduler.add_job(record_into(coordinated), every(minutes=1), name="c")
        scheduler.add_job(record_into(local), every(minutes=1), name="l", distributed=False)
        await clock.advance(minutes=2)
        assert coordinated == []
        assert [c.tick for c in local] == [at(1), at(2)]
        assert [(e.tick, e.reason) for e in rec.events] == [  # type: ignore[attr-defined]
            (at(1), SkipReason.NOT_LEADER),
            (at(2), SkipReason.NOT_LEADER),
        ]

    async def test_fencing_token_is_the_leadership_epoch(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """Under an elector alone, ctx.fencing_token is the epoch of the current term."""
        elector = MemoryElector(leader=True)
        scheduler = await start(elector=elector)
        ran: list[RunContext] = []
        scheduler.add_job(record_into(ran), every(minutes=1), name="e")
        await clock.advance(minutes=1)
        elector.set_leader(False)
        elector.set_leader(True)
        await clock.advance(minutes=1)
        assert [c.fencing_token for c in ran] == [1, 2]

    async def test_a_follower_that_becomes_leader_runs_the_next_ticks(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """Gaining leadership lets coordinated ticks run from then on."""
        elector = MemoryElector(leader=False)
        scheduler = await start(elector=elector)
        ran: list[RunContext] = []
        scheduler.add_job(record_into(ran), every(minutes=1), name="c")
        await clock.advance(minutes=1)
        elector.set_leader(True)
        await clock.advance(minutes=1)
        assert [(c.tick, c.fencing_token) for c in ran] == [(at(2), 1)]

    async def test_leadership_lost_before_the_call_skips_the_run(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """Leadership lost while before_run is awaited: the run is skipped as not_leader."""
        elector = MemoryElector(leader=True)
        scheduler = await start(elector=elector)
        rec = Recorder()
        scheduler.subscribe(rec, JobStarted, JobSkipped)

        async def hook(ctx: RunContext) -> bool:
            elector.set_leader(False)
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            loop.call_soon(done.set_result, None)  # after the elector's callbacks
            await done
            return True

        scheduler.add_job(noop, every(minutes=1), name="c", before_run=hook)
        await clock.advance(minutes=1)
        assert [(type(e), e.reason) for e in rec.events] == [  # type: ignore[attr-defined]
            (JobSkipped, SkipReason.NOT_LEADER)
        ]

    async def test_run_now_on_a_follower_is_skipped_as_not_leader(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """run_now obeys the elector: on a follower it returns skipped(not_leader)."""
        scheduler = await start(elector=MemoryElector(leader=False))
        job = scheduler.add_job(lambda: None, every(hours=1), name="c")
        outcome = await job.run_now()
        assert (outcome.status, outcome.reason) == (RunStatus.SKIPPED, SkipReason.NOT_LEADER)

    async def test_with_a_locker_too_the_fencing_token_is_the_locks(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """Under an elector and a locker, the run needs both; its token is the lock's."""
        elector, locker = MemoryElector(leader=True), MemoryLocker()
        elector.set_leader(False)
        elector.set_leader(True)  # epoch 2
        scheduler = await start(elector=elector, locker=locker)
        ran: list[RunContext] = []
        scheduler.add_job(record_into(ran), every(minutes=1), name="both")
        await clock.advance(minutes=1)
        assert [c.fencing_token for c in ran] == [1]
        assert locker.claimed["both"] == at(1)

    async def test_losing_leadership_cancels_a_running_coordinated_run(
        self, start: Factory, clock: VirtualClock
    ) -> None:
        """When leadership ends, a coordinated async run is cancelled with LockLostError."""
        elector = MemoryElector(leader=True)
        scheduler = await start(elector=elector)
        rec = Recorder()
        scheduler.subscribe(rec, LockLost, JobFailed, LeadershipChanged)
        gate = asyncio.Event()

        async def job() -> None:
            await gate.wait()

        scheduler.add_job(job, every(minutes=1), name="led")
        local = scheduler.add_job(job, every(minutes=1), name="local", distributed=False)
        await clock.advance(minutes=1)
        elector.set_leader(False)
        await clock.advance(seconds=1)
        failed = rec.of(JobFailed)
        assert len(failed) == 1
        assert failed[0].job_name == "led"
        assert isinstance(failed[0].exception, LockLostError)
        assert len(rec.of(LockLost)) == 1
        assert [e.leader for e in rec.of(LeadershipChanged)] == [False]
        assert local.running == 1
        gate.set()


# --- once -----------------------------------------------------------------------------


class TestOnceNow:
    async def test_once_now_added_to_a_running_scheduler_runs_at_once(
        self, scheduler: Scheduler, clock: VirtualClock
    ) -> None:
        """once("now") runs immediately when added to a running scheduler, then leaves."""
        rec = Recorder()
        scheduler.subscribe(rec, JobStarted, JobRemoved)
        await clock.advance(seconds=42)
        job = scheduler.add_job(lambda: None, once("now"))
        await clock.advance(seconds=1)
        (started,) = rec.of(JobStarted)
        (removed,) = rec.of(JobRemoved)
        assert started.tick == at(0, 42)  # type: ignore[attr-defined]
        assert removed.reason is asyncron.RemovalReason.EXHAUSTED  # type: ignore[attr-defined]
        assert job.removed
        assert job.run_count == 1
