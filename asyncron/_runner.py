"""The run engine: one timer over a heap of (next tick, job), dispatch of due ticks, and
the pipeline of one run (design §3). :class:`~asyncron.Scheduler` builds on it."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import random
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, Any, Literal

import anyio

from ._clock import Clock, SystemClock, resolve_none
from ._context import RunContext, _current
from ._events import (
    EventDispatcher,
    JobFailed,
    JobMissed,
    JobSkipped,
    JobStarted,
    JobSucceeded,
    LockFailed,
    LockLost,
    MissReason,
    Monitor,
    RemovalReason,
    RunKind,
    RunOutcome,
    RunStatus,
    SkipReason,
)
from ._time import to_us
from .errors import LockHeld, LockLostError, LockNotAcquired, RunTimeout, TickClaimed

if TYPE_CHECKING:
    from ._job import BeforeRun, Job
    from .distributed.protocols import Elector, Lock, Locker

__all__ = ("RunEngine",)

_US = timedelta(microseconds=1)
_QUEUE_LIMIT = 100
_COUNT_LIMIT = 10_000
_SCHEDULED, _CATCH_UP, _START, _RUN_NOW = (
    RunKind.SCHEDULED,
    RunKind.CATCH_UP,
    RunKind.START,
    RunKind.RUN_NOW,
)

#: Worker-thread calls in flight in this process (the virtual clock waits for them).
threads_in_flight = 0


_Run = RunContext  # a run's context doubles as the scheduler's record of it


class _Retake:
    """A lock result standing for "the tick is claimed here, take the run lock alone":
    a claim made ahead of its tick found the run lock held (see RunEngine._lock_ahead)."""

    __slots__ = ()


_RETAKE = _Retake()


class _Backoff:
    """The retry state of one run whose claim the backend failed."""

    __slots__ = ("delay", "reported")

    def __init__(self) -> None:
        self.delay = 0.1  # seconds, doubling to 2
        self.reported = False


_Entry = tuple["Job", datetime, RunKind, "asyncio.Future[RunOutcome] | None"]


def _uncancel(run: RunContext) -> None:
    """Take back the cancellation a lost lock put on ``run``'s task (see RunEngine._lost),
    so only a cancellation from elsewhere (shutdown) still counts."""
    if run._task is not None:
        run._task.uncancel()


def _cancelled_from_outside() -> bool:
    """Whether the CancelledError being handled was aimed at this task (shutdown
    cancelling a run), not at something the job awaited."""
    current = asyncio.current_task()
    return current is None or current.cancelling() > 0


class RunEngine:
    """Timer, dispatch and run pipeline. Attributes are set by the Scheduler."""

    _clock: Clock
    _random: random.Random
    _logger: logging.Logger
    _events: EventDispatcher
    _monitor: Monitor | None
    _locker: Locker | None
    _elector: Elector | None
    _before_run: BeforeRun | None
    _max_concurrent: int | None
    _concurrency_mode: Literal["wait", "skip"]
    _claim_ahead: float

    def _init_engine(self) -> None:
        # The timer's queue: a heap of the distinct instants jobs are due at, and per
        # instant the jobs armed for it, as a flat [job, version, job, version, ...] in
        # arming order. Jobs share instants (every minute, at :00): one heap entry per
        # instant and no tuple per arming make both arming and dispatch cheaper.
        self._heap: list[float] = []
        self._due: dict[float, list[Any]] = {}
        self._entries = 0  # (job, version) pairs in _due, stale ones included
        self._stale = 0
        self._global_active = 0
        self._global_waiting: deque[_Entry] = deque()
        self._waiting_count = 0
        # Every run's task (and batch lock task), keyed by itself or, for a bare run, by
        # its RunContext: the run then finds its own entry without current_task().
        self._tasks: dict[object, asyncio.Future[Any]] = {}
        self._elector_runs: set[_Run] = set()
        self._thread_runs: set[_Run] = set()
        self._sleep_scope: anyio.CancelScope | None = None
        self._sleep_future: asyncio.Future[None] | None = None
        self._sleep_ts = math.inf
        self._batch: dict[Any, list[_Entry]] | None = None
        # Locks requested ahead of their tick (claim_ahead): per job, its tick, the tick's
        # timestamp, the lock_many task and the job's index in its reply; the latest
        # instant requested ahead; and, during a dispatch, the runs that found theirs.
        self._ahead: dict[Job, tuple[datetime, float, asyncio.Task[Any], int]] = {}
        self._ahead_ts = -math.inf
        self._hits: dict[asyncio.Task[Any], tuple[list[_Entry], list[int]]] = {}
        # Whether any job's ticks go through a batch locker (see _note_batching).
        self._batching = False
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Starts a run's task on the loop (set at start, see Scheduler._start).
        self._new_task: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]
        #: A done future standing in _tasks for a run whose task ended (set at start).
        self._ended: asyncio.Future[None]
        #: The running anyio backend's CancelScope class (set at start).
        self._scope_type: type[anyio.CancelScope] = anyio.CancelScope
        self._loop_thread: int | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._dispatching = False
        self._idle: asyncio.Event | None = None
        self._recheck: float | None = getattr(self._clock, "wall_recheck_interval", 1.0)
        # No scheduler-wide hook or monitor wraps a run (see _run_bare).
        self._bare_runs = self._before_run is None and self._monitor is None
        self._system_clock = type(self._clock) is SystemClock
        # Jobs whose catch-up is reading the ledger → their regular ticks held back meanwhile.
        self._held_back: dict[Job, list[datetime]] = {}

    # --- ticks ----------------------------------------------------------------
    def _after(self, job: Job, after: datetime) -> datetime | None:
        """The job's first tick strictly after ``after``, within start_at/stop_at."""
        opts = job._opts
        start_at = opts.start_at if isinstance(opts.start_at, datetime) else None
        if start_at is not None and after < start_at:
            tick = job._schedule._first_from(start_at, self._random)
        else:
            tick = job._schedule.next_fire(after, start_at=start_at, rng=self._random)
        if tick is None or (opts.stop_at is not None and tick > opts.stop_at):
            return None
        return tick

    def _following(self, job: Job, tick: datetime) -> datetime | None:
        """The job's tick after its tick ``tick``: :meth:`_after`, by the schedule's step."""
        opts = job._opts
        if opts.from_completion:  # ticks counted from a run's end are off the grid
            return self._after(job, tick)
        start_at = opts.start_at if isinstance(opts.start_at, datetime) else None
        nxt = job._schedule._following(tick, start_at, self._random)
        if nxt is None or (opts.stop_at is not None and nxt > opts.stop_at):
            return None
        return nxt

    def _latest(self, job: Job, at: datetime) -> datetime | None:
        """The job's latest tick at or before ``at``, within start_at/stop_at."""
        opts = job._opts
        start_at = opts.start_at if isinstance(opts.start_at, datetime) else None
        if opts.stop_at is not None and at > opts.stop_at:
            at = opts.stop_at
        tick = job._schedule.last_fire(at, start_at=start_at)
        if tick is None or (start_at is not None and tick < start_at):
            return None
        return tick

    def _count_ticks(self, job: Job, first: datetime, last: datetime) -> int | None:
        """How many ticks lie in [first, last]; None when that would mean a long walk."""
        interval = getattr(job._schedule, "interval", None)
        if isinstance(interval, timedelta):
            return (last - first) // interval + 1
        n, tick = 1, first
        while n <= _COUNT_LIMIT:
            nxt = self._after(job, tick)
            if nxt is None or nxt > last:
                return n
            n, tick = n + 1, nxt
        return None

    def _set_next(self, job: Job, tick: datetime | None) -> None:
        """Make ``tick`` the job's next tick and (if running) put it on the timer heap."""
        job._version += 1
        if job._next_tick is not None and self._loop is not None:
            self._stale += 1
        job._next_tick = tick
        if tick is None or self._loop is None:
            return
        ts = tick.timestamp()
        bucket = self._due.get(ts)
        if bucket is None:
            self._due[ts] = [job, job._version]
            heappush(self._heap, ts)
            if ts < self._sleep_ts and not self._dispatching:
                self._poke()
        else:
            bucket.append(job)
            bucket.append(job._version)
        self._entries += 1
        if self._stale > 1024 and self._stale > self._entries // 2:
            self._compact()

    def _compact(self) -> None:
        """Drop the stale entries (re-armed or removed jobs) from the timer's queue."""
        due: dict[float, list[Any]] = {}
        for ts, bucket in self._due.items():
            live: list[Any] = []
            pairs = iter(bucket)
            for job, version in zip(pairs, pairs, strict=True):
                if version == job._version and not job._removed:
                    live.append(job)
                    live.append(version)
            if live:
                due[ts] = live
        # In place: a dispatch in progress holds these two.
        self._due.clear()
        self._due.update(due)
        self._heap[:] = due
        heapify(self._heap)
        self._entries = sum(len(bucket) for bucket in due.values()) // 2
        self._stale = 0

    def _clear_queue(self) -> None:
        self._heap.clear()
        self._due.clear()
        self._entries = self._stale = 0
        self._ahead_ts = -math.inf

    def _drop_stale_head(self) -> None:
        """Pop the earliest instants whose jobs were all re-armed or removed, so the
        timer does not wake for them (it stops at the first live entry it meets)."""
        heap, due = self._heap, self._due
        while heap:
            ts = heap[0]
            bucket = due[ts]
            for i in range(0, len(bucket), 2):
                job = bucket[i]
                if bucket[i + 1] == job._version and not job._removed:
                    return
            heappop(heap)
            del due[ts]
            n = len(bucket) // 2
            self._entries -= n
            self._stale = max(0, self._stale - n)
            if self._ahead:  # its jobs were asked ahead, then removed or re-armed
                self._sweep_ahead(ts)

    def _poke(self) -> None:
        """Wake the timer so it looks at the heap again (a no-op unless it sleeps)."""
        wake: Callable[[], Any] | None = None
        if self._sleep_future is not None:
            wake = functools.partial(resolve_none, self._sleep_future)
        elif self._sleep_scope is not None:
            wake = self._sleep_scope.cancel
        if wake is None:
            return
        if self._loop_thread == threading.get_ident():
            wake()
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(wake)

    # --- the timer ------------------------------------------------------------
    async def _timer_loop(self) -> None:
        clock = self._clock
        while True:
            self._drop_stale_head()
            heap = self._heap
            now = clock.now()
            now_ts = now.timestamp()
            if heap and heap[0] <= now_ts:
                self._dispatch_due(now, now_ts)
                continue
            delay: float | None = heap[0] - now_ts if heap else None
            if self._batching and heap and heap[0] > self._ahead_ts:
                # Wake claim_ahead before the instant and send its lock requests then.
                assert delay is not None
                delay -= self._claim_ahead
                if delay <= 0:
                    self._lock_ahead(heap[0])
                    continue
            if self._recheck is not None:
                delay = self._recheck if delay is None else min(delay, self._recheck)
            if self._system_clock and delay is not None:
                self._sleep_ts = heap[0] if heap else math.inf
                await self._sleep_on_loop(delay)
                continue
            with anyio.CancelScope() as scope:
                self._sleep_scope = scope
                self._sleep_ts = heap[0] if heap else math.inf
                try:
                    if delay is None:
                        await anyio.sleep_forever()
                    else:
                        await clock.sleep_until(clock.monotonic() + delay)
                finally:
                    self._sleep_scope = None
                    self._sleep_ts = math.inf

    async def _sleep_on_loop(self, delay: float) -> None:
        """The timer's sleep on the system clock: a future that the loop's timer or a
        poke resolves. It wakes once a second at least (the wall-clock re-check), so
        it costs no cancel scope and raises no exception per wake-up."""
        assert self._loop is not None
        future = self._sleep_future = self._loop.create_future()
        handle = self._loop.call_later(delay, resolve_none, future)
        try:
            await future
        finally:
            handle.cancel()
            self._sleep_future = None
            self._sleep_ts = math.inf

    def _dispatch_due(self, now: datetime, now_ts: float) -> None:
        heap, due = self._heap, self._due
        self._batch = {}
        self._dispatching = True
        try:
            while heap and heap[0] <= now_ts:
                bucket = due.pop(heappop(heap))
                self._entries -= len(bucket) // 2
                pairs = iter(bucket)
                for job, version in zip(pairs, pairs, strict=True):
                    if version != job._version or job._removed:
                        self._stale = max(0, self._stale - 1)
                        continue
                    try:
                        self._fire(job, now)
                    except Exception:
                        # One job's failure (a schedule bug, a raising hook) must not
                        # stop dispatch for every other job.
                        self._logger.exception("dispatching %s failed", job._name or job._key)
        finally:
            self._dispatching = False
            batch, self._batch = self._batch, None
            if self._hits:  # their locks are (nearly always) here already: first
                hits, self._hits = self._hits, {}
                for task, (entries, indices) in hits.items():
                    self._track(self._run_ahead(task, entries, indices))
            for locker, entries in batch.items():
                self._track(self._run_batch(locker, entries))
            if self._ahead:
                self._sweep_ahead(now_ts)

    def _sweep_ahead(self, upto: float) -> None:
        """Release the locks taken ahead for ticks at or before ``upto`` that did not run
        here (the job was paused, removed or re-armed meanwhile)."""
        for job, ahead in list(self._ahead.items()):
            if ahead[1] <= upto:
                del self._ahead[job]
                self._drop_ahead(job, ahead)

    def _note_batching(self, job: Job) -> None:
        """Note the batch locker of a job's ticks (``Job._batcher``), whenever its options
        or coordination are set, and whether any job asks ahead of its ticks."""
        job._batcher = self._batch_locker(job)
        if job._batcher is not None and self._claim_ahead > 0:
            self._batching = True

    def _batch_locker(self, job: Job) -> Any:
        """The batch locker (one with ``lock_many``) that takes the lock of this job's
        scheduled ticks, or None: the tick then takes its lock on its own."""
        opts = job._opts
        if (
            job._coordinated
            and opts.jitter is None
            and opts.max_instances == 1
            and self._elector is None
        ):
            locker = opts.locker or self._locker
            if locker is not None and hasattr(locker, "lock_many"):
                return locker
        return None

    def _lock_ahead(self, ts: float) -> None:
        """Send the lock requests of the jobs due at ``ts``, ``claim_ahead`` before it, so
        that their runs start on time rather than a round trip after it. Only ticks that
        will reach the batch are requested: a job that is paused, running (its tick
        would wait or be skipped for overlap) or held back by a catch-up is left to the
        regular batch at its tick, and so is every job under a global limit."""
        self._ahead_ts = ts
        if self._max_concurrent is not None:
            return
        groups: dict[Any, list[Job]] = {}
        group: list[Job] = []
        last: Any = None
        held, ahead = self._held_back, self._ahead
        bucket = self._due[ts]
        for i in range(0, len(bucket), 2):
            job = bucket[i]
            locker = job._batcher
            if (
                locker is None
                or bucket[i + 1] != job._version
                or job._removed
                or job._paused
                or job._active
                or job in ahead
                or (held and job in held)
            ):
                continue
            if locker is not last:
                group = groups.setdefault(locker, [])
                last = locker
            group.append(job)
        for locker, jobs in groups.items():
            requests = [(job._key, job._next_tick) for job in jobs]
            task = self._track(self._ask(locker, requests))
            for i, job in enumerate(jobs):
                tick = job._next_tick
                assert tick is not None
                ahead[job] = (tick, ts, task, i)

    @staticmethod
    async def _ask(locker: Any, requests: list[tuple[str, datetime | None]]) -> list[Any]:
        """``locker.lock_many(requests)`` in a task of its own: any awaitable it returns
        (not only a coroutine) is awaited there, and whatever it raises reaches the runs."""
        return list(await locker.lock_many(requests))

    def _drop_ahead(self, job: Job, ahead: tuple[datetime, float, asyncio.Task[Any], int]) -> None:
        """Release a lock taken ahead for a tick that does not run here. Its claim stays
        spent: no instance runs that tick (a pause, removal or overlap within
        ``claim_ahead`` of a tick skips it cluster-wide)."""
        self._track(self._release_ahead(job, ahead[0], ahead[2], ahead[3]))

    async def _release_ahead(
        self, job: Job, tick: datetime, task: asyncio.Task[Any], index: int
    ) -> None:
        try:
            result = (await asyncio.shield(task))[index]
        except Exception:
            return  # no lock was taken (or its TTL frees it)
        if not isinstance(result, LockNotAcquired):
            if self._logger.isEnabledFor(logging.DEBUG):
                self._logger.debug("released the lock of %s taken ahead for %s", job._key, tick)
            await self._unlock(job, result)

    def _drop_all_ahead(self) -> None:
        """Release every lock taken ahead (the timer stopped)."""
        ahead, self._ahead = self._ahead, {}
        for job, entry in ahead.items():
            self._drop_ahead(job, entry)

    def _fire(self, job: Job, now: datetime) -> None:
        """Dispatch a job whose next tick is due: coalesce or walk missed ticks, schedule
        the following tick, then submit the runs."""
        tick = job._next_tick
        assert tick is not None
        # Its heap entry was just popped: nothing stale is left behind for _set_next to
        # count (counting it made the heap compact itself every half tick).
        job._next_tick = None
        opts = job._opts
        nxt = self._following(job, tick)
        behind: list[datetime] | None = None  # None: on time, the one due tick (no list)
        if nxt is not None and nxt <= now:
            behind, nxt = self._catch_up_ticks(job, tick, now)
        if not opts.from_completion:
            self._set_next(job, nxt)
        else:
            job._version += 1
        if behind is None:
            self._submit(job, tick, _SCHEDULED, None)
        else:
            for t in behind:
                self._submit(job, t, _SCHEDULED, None)
        if nxt is None and not opts.from_completion:
            # Ticks still queued are within bounds and must run: _release retires it then.
            queued = self._global_waiting
            if not job._waiting and not (queued and any(e[0] is job for e in queued)):
                self._retire_exhausted(job)

    def _catch_up_ticks(
        self, job: Job, tick: datetime, now: datetime
    ) -> tuple[list[datetime], datetime | None]:
        """The ticks to run when the next one is due too (a late wake-up): the latest
        (coalesce) or every missed one (see _walk_missed); and the tick after them."""
        schedule = job._schedule
        if not job._opts.coalesce and schedule.is_pure:
            return self._walk_missed(job, tick, now)
        latest = self._latest(job, now) if schedule.is_pure else None
        if latest is not None and latest > tick:
            before = self._latest(job, latest - _US) or tick
            self._missed(job, MissReason.COALESCED, tick, before)
            return [latest], self._after(job, latest)
        return [tick], self._after(job, now)

    def _walk_missed(
        self, job: Job, tick: datetime, now: datetime
    ) -> tuple[list[datetime], datetime | None]:
        """coalesce=False: every missed tick within the grace, in order (bounded)."""
        grace = job._opts.misfire_grace
        if grace is not None and now - tick > grace:
            first = self._after(job, now - grace - _US)
            last_late = self._latest(job, now - grace - _US) or tick
            self._missed(job, MissReason.LATE, tick, last_late)
            if first is None or first > now:
                return [], first
            tick = first
        # The newest ticks are kept: a full queue drops its oldest (design §3).
        ticks: list[datetime] = []
        current = self._latest(job, now)
        while current is not None and current >= tick and len(ticks) < _QUEUE_LIMIT:
            ticks.append(current)
            current = self._latest(job, current - _US)
        ticks.reverse()
        if current is not None and current >= tick:
            self._missed(job, MissReason.QUEUE_FULL, tick, current)
        return ticks, self._after(job, ticks[-1] if ticks else now)

    def _retire_exhausted(self, job: Job) -> None:
        """Remove a job that has no tick left: because of stop_at, or its schedule ended."""
        stop_at, schedule = job._opts.stop_at, job._schedule
        # random_every never runs out; a pure schedule did if it has no tick past stop_at.
        cut = stop_at is not None and (
            not schedule.is_pure or schedule.next_fire(stop_at) is not None
        )
        self._retire(job, RemovalReason.STOP_AT if cut else RemovalReason.EXHAUSTED)

    def _retire(self, job: Job, reason: RemovalReason) -> None:
        raise NotImplementedError

    # --- admission (synchronous) --------------------------------------------------
    def _submit(
        self,
        job: Job,
        tick: datetime,
        kind: RunKind,
        future: asyncio.Future[RunOutcome] | None,
    ) -> None:
        """Local rules of a due run: paused, overlap (skip or wait), then the global limit."""
        if self._held_back and kind is _SCHEDULED:
            held = self._held_back.get(job)
            if held is not None:
                # A catch-up is reading the ledger for this job and will run this tick after
                # the older missed ones: claimed first, this tick would make them refused.
                held.append(tick)
                return
        if job._paused and kind is not _RUN_NOW:
            self._resolve(future, self._skip(job, tick, kind, SkipReason.PAUSED))
            self._refused_from_completion(job, kind)
            return
        opts = job._opts
        if job._active >= opts.max_instances:
            if opts.overlap == "skip":
                self._resolve(future, self._skip(job, tick, kind, SkipReason.OVERLAP))
                self._refused_from_completion(job, kind)
                return
            waiting = job._waiting
            if waiting is None:
                waiting = job._waiting = deque()
            if opts.coalesce and kind is not _RUN_NOW:
                queued = self._global_waiting
                for i, (old_job, old_tick, old_kind, old_future) in enumerate(queued):
                    if old_job is job and old_kind is not _RUN_NOW:
                        # Its tick waiting for the global limit is the one waiting tick.
                        queued[i] = (job, tick, kind, future)
                        self._missed(job, MissReason.COALESCED, old_tick, old_tick)
                        self._resolve(
                            old_future,
                            RunOutcome(RunStatus.SKIPPED, old_tick, MissReason.COALESCED),
                        )
                        return
                for i, (old_tick, old_kind, old_future) in enumerate(waiting):
                    if old_kind is not _RUN_NOW:
                        del waiting[i]
                        self._waiting_count -= 1
                        self._missed(job, MissReason.COALESCED, old_tick, old_tick)
                        self._resolve(
                            old_future,
                            RunOutcome(RunStatus.SKIPPED, old_tick, MissReason.COALESCED),
                        )
                        break
            elif len(waiting) >= _QUEUE_LIMIT:
                old_tick, _, old_future = waiting.popleft()
                self._waiting_count -= 1
                self._missed(job, MissReason.QUEUE_FULL, old_tick, old_tick)
                self._resolve(
                    old_future, RunOutcome(RunStatus.SKIPPED, old_tick, MissReason.QUEUE_FULL)
                )
            waiting.append((tick, kind, future))
            self._waiting_count += 1
            return
        job._active += 1
        if self._max_concurrent is None:  # no global limit: straight to the run
            self._global_active += 1
            self._spawn(job, tick, kind, future, None)
        else:
            self._admit(job, tick, kind, future)

    def _admit(
        self,
        job: Job,
        tick: datetime,
        kind: RunKind,
        future: asyncio.Future[RunOutcome] | None,
    ) -> None:
        limit = self._max_concurrent
        if limit is not None and self._global_active >= limit:
            if self._concurrency_mode == "skip":
                job._active -= 1
                self._resolve(future, self._skip(job, tick, kind, SkipReason.CONCURRENCY_LIMIT))
                self._refused_from_completion(job, kind)
                return
            self._global_waiting.append((job, tick, kind, future))
            self._waiting_count += 1
            return
        self._global_active += 1
        self._spawn(job, tick, kind, future, None)

    def _spawn(
        self,
        job: Job,
        tick: datetime,
        kind: RunKind,
        future: asyncio.Future[RunOutcome] | None,
        lock_result: Lock | LockNotAcquired | None,
    ) -> None:
        if job._bare and future is None and self._bare_runs and self._events.runs_unheard:
            assert self._loop is not None
            # No done callback: the run takes itself out of _tasks (see _run_bare).
            ctx = RunContext(job, tick, kind, None)
            self._tasks[ctx] = self._new_task(self._run_bare(job, tick, ctx))
            return
        batch = self._batch
        if batch is not None and kind is not _RUN_NOW:
            locker = job._batcher
            if locker is not None:
                ahead = self._ahead.pop(job, None) if self._ahead else None
                if ahead is not None:
                    if ahead[0] == tick:  # its lock was requested ahead (_lock_ahead)
                        found = self._hits.get(ahead[2])
                        if found is None:
                            found = self._hits[ahead[2]] = ([], [])
                        found[0].append((job, tick, kind, future))
                        found[1].append(ahead[3])
                        return
                    self._drop_ahead(job, ahead)
                batch.setdefault(locker, []).append((job, tick, kind, future))
                return
        self._track(self._run(job, tick, kind, future, lock_result))

    def _track(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` in a task that shutdown waits for (and, after stop_timeout, cancels)."""
        assert self._loop is not None
        task = self._new_task(coro)
        self._tasks[task] = task
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, key: object) -> None:
        """A run (or batch) is over: take its entry (its task, or its RunContext) out of
        _tasks, and tell a waiting shutdown once none is left."""
        self._tasks.pop(key, None)
        if not self._tasks and self._idle is not None:
            self._idle.set()

    def _release(self, job: Job) -> None:
        """A run ended (or was refused after admission): free its slots, admit waiters."""
        job._active -= 1
        self._global_active -= 1
        if not (
            self._global_waiting or job._waiting or (job._next_tick is None and not job._removed)
        ):
            return  # nothing waits and the job goes on: the common case, kept short
        if self._global_waiting and (
            self._max_concurrent is None or self._global_active < self._max_concurrent
        ):
            waiter, tick, kind, future = self._global_waiting.popleft()
            self._waiting_count -= 1
            if waiter._paused and kind is not _RUN_NOW:  # paused while it waited
                waiter._active -= 1
                self._resolve(future, self._skip(waiter, tick, kind, SkipReason.PAUSED))
            else:
                self._global_active += 1
                self._spawn(waiter, tick, kind, future, None)
        waiting = job._waiting
        if waiting and job._active < job._opts.max_instances and self._loop is not None:
            tick, kind, future = waiting.popleft()
            self._waiting_count -= 1
            if job._paused and kind is not _RUN_NOW:  # paused while it waited
                self._resolve(future, self._skip(job, tick, kind, SkipReason.PAUSED))
            else:
                job._active += 1
                self._admit(job, tick, kind, future)
        if (
            job._next_tick is None
            and not job._active
            and not job._waiting
            and not job._removed
            and not job._opts.from_completion
        ):
            self._retire_exhausted(job)  # its schedule ended while ticks were queued or running

    @staticmethod
    def _resolve(future: asyncio.Future[RunOutcome] | None, outcome: RunOutcome) -> None:
        if future is not None and not future.done():
            future.set_result(outcome)

    # --- events -----------------------------------------------------------------
    def _wants(self, event_type: type, job: Job) -> bool:
        return bool(job._opts.listeners) or self._events.wants(event_type)

    def _emit_job(self, job: Job, event_type: type, **fields: Any) -> None:
        event = event_type(timestamp=self._clock.now(), job_id=job.id, job_name=job._name, **fields)
        self._events.emit(event, job._opts.listeners)

    def _skip(self, job: Job, tick: datetime, kind: RunKind, reason: SkipReason) -> RunOutcome:
        self._skipped(job, tick, kind, reason)
        return RunOutcome(RunStatus.SKIPPED, tick, reason)

    def _skipped(self, job: Job, tick: datetime, kind: RunKind, reason: SkipReason) -> None:
        """Log, emit and record a skip: :meth:`_skip` without building its outcome."""
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug("skipped %s at %s: %s", job._name or job.id, tick, reason.value)
        if self._wants(JobSkipped, job):
            self._emit_job(job, JobSkipped, tick=tick, kind=kind, reason=reason)
        if self._monitor is not None:
            self._record(job, "skipped", reason.value, 0.0, 0.0)

    def _record(
        self, job: Job, status: str, reason: str | None, duration: float, lateness: float
    ) -> None:
        """Call the monitor; one that raises is logged, never fatal (it may be called in
        the timer, where an exception would stop every job)."""
        assert self._monitor is not None
        try:
            self._monitor.record_run(job._name or str(job.id), status, reason, duration, lateness)
        except Exception:
            self._logger.exception("monitor %r raised on a %s run", self._monitor, status)

    def _missed(self, job: Job, reason: MissReason, first: datetime, last: datetime) -> None:
        if self._logger.isEnabledFor(logging.DEBUG):
            self._logger.debug(
                "missed %s ticks %s..%s: %s", job._name or job.id, first, last, reason.value
            )
        if self._wants(JobMissed, job):
            n = 1 if first == last else self._count_ticks(job, first, last)
            self._emit_job(job, JobMissed, reason=reason, count=n, first_tick=first, last_tick=last)
        if self._monitor is not None:
            self._record(job, "missed", reason.value, 0.0, 0.0)

    # --- one run (asynchronous) ------------------------------------------------------
    async def _run_batch(self, locker: Any, entries: list[_Entry]) -> None:
        """Take the locks of every run due in one wake-up in one call, then start them."""
        try:
            results = await locker.lock_many([(job._key, tick) for job, tick, _, _ in entries])
        except Exception:
            # Fall back to one pipeline per run: each defers and retries on its own.
            results = [None] * len(entries)
        self._start_batch(entries, results)

    async def _run_ahead(
        self, task: asyncio.Task[Any], entries: list[_Entry], indices: list[int]
    ) -> None:
        """Start the runs whose locks were requested ahead of their tick, in ``task``."""
        try:
            replies = await asyncio.shield(task)  # shared with _release_ahead: never cancelled
        except Exception:
            self._start_batch(entries, [None] * len(entries))  # as in _run_batch
            return
        if indices != list(range(len(replies))):  # (else every request is here, in order)
            replies = [replies[i] for i in indices]
        self._start_batch(entries, replies, True)

    def _start_batch(self, entries: list[_Entry], results: list[Any], ahead: bool = False) -> None:
        """Start (or skip, if refused) the runs of a batch, given their lock results;
        ``ahead``: the batch was asked for ahead of its tick (see :meth:`_lock_ahead`)."""
        short = self._bare_runs and self._events.runs_unheard
        for (job, tick, kind, future), result in zip(entries, results, strict=True):
            if ahead and isinstance(result, LockHeld):
                # The claim is this instance's but the run lock was held when asked (a
                # run of an earlier tick, or a run_now, elsewhere): asked again at the tick.
                result = _RETAKE
            elif isinstance(result, LockNotAcquired) and not self._waits_for_lock(
                job, tick, kind, result
            ):
                # Refused (another instance claimed the tick, or holds the lock): a skip,
                # decided here rather than in a task of its own (with N instances, N - 1
                # of them are refused every tick; no outcome is built when none awaits it).
                try:
                    reason = self._refusal(job, tick, kind, result)
                finally:
                    self._run_ended(job, kind)
                if future is not None:
                    self._resolve(future, RunOutcome(RunStatus.SKIPPED, tick, reason))
                continue
            if (
                short
                and job._bare_locked
                and future is None
                and getattr(result, "_release_then", None) is not None
            ):
                ctx = RunContext(job, tick, kind, result.fencing_token)
                # The task a lost lock cancels (see _lost): no cancel scope per run.
                ctx._task = self._tasks[ctx] = self._new_task(
                    self._run_locked(job, tick, ctx, result)
                )
            else:
                self._track(self._run(job, tick, kind, future, result))

    async def _run(
        self,
        job: Job,
        tick: datetime,
        kind: RunKind,
        future: asyncio.Future[RunOutcome] | None,
        lock_result: Lock | LockNotAcquired | _Retake | None,
    ) -> None:
        try:
            need = future is not None
            if job._coordinated or job._opts.jitter is not None:
                outcome = await self._pipeline(job, tick, kind, lock_result, need)
            else:  # nothing to wait for before the call: one coroutine frame fewer
                outcome = await self._call(job, tick, kind, None, None, None, False, need)
        except asyncio.CancelledError as exc:
            # Only shutdown cancels a run's task (after stop_timeout): say so.
            self._resolve(future, RunOutcome(RunStatus.FAILED, tick, exception=exc))
            raise
        finally:
            self._run_ended(job, kind)
        if future is not None and outcome is not None:
            self._resolve(future, outcome)

    def _run_ended(self, job: Job, kind: RunKind) -> None:
        """Free the slots of a run that ended or was refused after admission."""
        self._release(job)
        if kind is not _RUN_NOW and job._opts.from_completion and not job._removed:
            self._reschedule_from_completion(job)

    async def _run_bare(self, job: Job, tick: datetime, ctx: RunContext) -> None:
        """The short path of :meth:`_run` + :meth:`_call` for a run that is just an awaited
        call: nobody awaits its outcome or listens to its events, and it has no lock,
        leadership, jitter, timeout, hook, limit or grace (``Job._bare``). A run's
        overhead is most of what a scheduler adds to a job, so it gets its own path."""
        job._run_count += 1
        job._last_run = tick  # never a run_now (those await an outcome): the latest tick
        _current.set(ctx)  # this task's own context: no reset needed
        try:
            kwargs = job._kwargs
            await (job._func(*job._args, **kwargs) if kwargs else job._func(*job._args))
        except asyncio.CancelledError as exc:
            if _cancelled_from_outside():
                raise  # shutdown cancels this run
            self._log_failure(job, tick, exc)  # the job's own: a failure
        except Exception as exc:
            self._log_failure(job, tick, exc)
        finally:
            # (ctx._done is not set: only timeouts and lock losses read it, and a bare
            # run has neither.)
            self._task_done(ctx)
            self._run_ended(job, ctx._kind)

    async def _run_locked(self, job: Job, tick: datetime, ctx: RunContext, lock: Any) -> None:
        """The short path of a run whose lock came from a batch (:meth:`_run_batch`) and
        that is otherwise bare (``Job._bare_locked``): one coroutine frame, and the lock
        released in the background, the run's slot and ``_tasks`` entry freed once the
        release is done (:meth:`_unlocked`). The run's own objects die when its call
        ends instead of living through the release round trip (a thousand runs a tick
        kept alive that long fed a full garbage collection every few seconds)."""
        job._run_count += 1
        job._last_run = tick  # scheduled or catch-up, never run_now (no batch for those)
        _current.set(ctx)  # this task's own context: no reset needed
        lock.on_lost(functools.partial(self._lost, ctx))
        error: BaseException | None = None
        try:
            try:
                kwargs = job._kwargs
                await (job._func(*job._args, **kwargs) if kwargs else job._func(*job._args))
            finally:
                if ctx._cause is not None:
                    _uncancel(ctx)
            error = ctx._cause  # lost, even if the job swallowed the cancellation
        except asyncio.CancelledError as exc:
            if _cancelled_from_outside():
                raise  # shutdown cancels this run (the lock is released below all the same)
            # Lost (the cancellation was ours), else the job's own (an awaited future was
            # cancelled): a failure either way.
            error = ctx._cause if ctx._cause is not None else exc
        except Exception as exc:
            error = exc
        finally:
            ctx._done = True
            ctx._task = None  # no cycle between the task's frame and its context
            # The task ends now: let it go (its coroutine, context) rather than keep it
            # until the release is done; the context alone stands for the run in _tasks.
            self._tasks[ctx] = self._ended
            lock._release_then(self._unlocked, ctx)
        if error is not None:
            self._log_failure(job, tick, error)

    def _unlocked(self, ctx: RunContext) -> None:
        """The lock of a run from :meth:`_run_locked` was released (or its release
        failed and the TTL frees it): the run is over."""
        self._task_done(ctx)
        self._run_ended(ctx._job, ctx._kind)

    def _log_failure(self, job: Job, tick: datetime, error: BaseException) -> None:
        if self._logger.isEnabledFor(logging.INFO):
            self._logger.info("run of %s at %s failed: %r", job._name or job._key, tick, error)

    def _refused_from_completion(self, job: Job, kind: RunKind) -> None:
        """A from_completion job's next tick is set when a run ends; a tick refused before
        any run started must set it too, or the job never runs again."""
        if kind is not _RUN_NOW and job._opts.from_completion and not job._removed:
            self._reschedule_from_completion(job)

    def _reschedule_from_completion(self, job: Job) -> None:
        now = self._clock.now()
        interval = getattr(job._schedule, "interval", None)
        if isinstance(interval, timedelta):  # every(): the interval counts from the end
            stop_at, candidate = job._opts.stop_at, now + interval
            nxt = None if stop_at is not None and candidate > stop_at else candidate
        else:
            nxt = self._after(job, now)
        self._set_next(job, nxt)
        if nxt is None:
            self._retire_exhausted(job)

    async def _acquire(
        self, job: Job, locker: Locker, tick: datetime | None, kind: RunKind, claim: bool = True
    ) -> Lock | RunOutcome:
        """Claim and lock (``claim=False``: the tick is claimed already, lock only),
        deferring on backend errors with backoff while the tick may still run; refusals
        become skips."""
        backoff = _Backoff()
        report_tick = tick if tick is not None else self._clock.now()
        while True:
            try:
                return await self._lock(locker, job, tick if claim else None, tick)
            except LockNotAcquired as exc:
                if self._waits_for_lock(job, tick, kind, exc):
                    assert tick is not None
                    return await self._wait_for_lock(job, locker, tick, kind)
                return self._refused(job, report_tick, kind, exc)
            except Exception as exc:
                self._backend_failed(job, "lock backend", tick, report_tick, exc, backoff)
                if tick is None:  # run_now: no tick to defer
                    return self._skip(job, report_tick, kind, SkipReason.LOCK_ERROR)
                if (outcome := await self._defer(job, tick, backoff)) is not None:
                    return outcome

    def _backend_failed(
        self,
        job: Job,
        what: str,
        tick: datetime | None,
        report_tick: datetime,
        exc: Exception,
        backoff: _Backoff,
    ) -> None:
        """Log and emit LockFailed once per deferred run."""
        if backoff.reported:
            return
        backoff.reported = True
        self._logger.warning("%s failed for %s at %s: %r", what, job._key, report_tick, exc)
        if self._wants(LockFailed, job):
            self._emit_job(job, LockFailed, tick=tick, exception=exc)

    async def _defer(self, job: Job, tick: datetime, backoff: _Backoff) -> RunOutcome | None:
        """Wait before retrying a claim the backend failed, while the tick may still run
        (within misfire_grace and, with coalesce, before the next tick); else report it
        missed as backend_unavailable and return that outcome (design §4)."""
        clock = self._clock
        retry_at = clock.now() + timedelta(seconds=backoff.delay)
        grace, nxt = job._opts.misfire_grace, job._next_tick
        if (grace is not None and retry_at - tick > grace) or (
            job._opts.coalesce and nxt is not None and nxt <= retry_at
        ):
            self._missed(job, MissReason.BACKEND_UNAVAILABLE, tick, tick)
            return RunOutcome(RunStatus.SKIPPED, tick, MissReason.BACKEND_UNAVAILABLE)
        await clock.sleep_until(clock.monotonic() + backoff.delay)
        backoff.delay = min(backoff.delay * 2, 2.0)
        return None

    async def _claim(
        self, job: Job, claim: Callable[..., Any], tick: datetime, kind: RunKind
    ) -> RunOutcome | None:
        """Claim ``tick`` in the elector's ledger; None once claimed by a leader still.

        Backend errors defer the tick like a locker's (design §4): LockFailed once, then
        retries with backoff while the tick is within misfire_grace (and, with coalesce,
        no later tick is due) and this instance still leads."""
        assert self._elector is not None
        backoff = _Backoff()
        while True:
            try:
                await claim(job._key, tick)
            except LockNotAcquired as exc:
                return self._refused(job, tick, kind, exc)
            except Exception as exc:
                self._backend_failed(job, "claim", tick, tick, exc, backoff)
                if (outcome := await self._defer(job, tick, backoff)) is not None:
                    return outcome
                if self._elector.leadership() is None:
                    return self._skip(job, tick, kind, SkipReason.NOT_LEADER)
                continue
            # Leadership may have ended while the claim was in flight (a paused process).
            if self._elector.leadership() is None:
                return self._skip(job, tick, kind, SkipReason.NOT_LEADER)
            return None

    @staticmethod
    def _waits_for_lock(
        job: Job, tick: datetime | None, kind: RunKind, exc: LockNotAcquired
    ) -> bool:
        """overlap="wait" also waits for a run lock held elsewhere, once the tick is claimed."""
        return (
            isinstance(exc, LockHeld)
            and tick is not None
            and kind is not _RUN_NOW
            and job._opts.overlap == "wait"
        )

    async def _wait_for_lock(
        self, job: Job, locker: Locker, tick: datetime, kind: RunKind
    ) -> Lock | RunOutcome:
        """This run claimed ``tick`` but another run (on another instance) holds the run
        lock: take the lock alone (the claim is ours already) once it is free, while the
        tick is within misfire_grace. Skipping instead would lose a claimed tick."""
        clock = self._clock
        grace = job._opts.misfire_grace
        delay = 0.05
        while True:
            if grace is not None and clock.now() + timedelta(seconds=delay) - tick > grace:
                return self._skip(job, tick, kind, SkipReason.LOCK_HELD)
            await clock.sleep_until(clock.monotonic() + delay)
            delay = min(delay * 2, 1.0)
            try:
                return await self._lock(locker, job, None, tick)
            except LockNotAcquired:
                continue
            except Exception as exc:
                self._logger.warning("lock backend failed for %s at %s: %r", job._key, tick, exc)
                if grace is None:
                    return self._skip(job, tick, kind, SkipReason.LOCK_ERROR)

    @staticmethod
    async def _lock(
        locker: Locker, job: Job, claim: datetime | None, run_tick: datetime | None
    ) -> Lock:
        """``lock(key, claim)``; with ``max_instances > 1`` the run lock of a ticked run
        is ``f"{key}@{tick_us}"`` (design §3), so concurrent runs do not refuse each other."""
        if job._opts.max_instances == 1 or run_tick is None:
            return await locker.lock(job._key, claim)
        return await locker.lock(job._key, claim, run_key=f"{job._key}@{to_us(run_tick)}")

    def _refused(self, job: Job, tick: datetime, kind: RunKind, exc: LockNotAcquired) -> RunOutcome:
        reason = self._refusal(job, tick, kind, exc)
        return RunOutcome(RunStatus.SKIPPED, tick, reason)

    def _refusal(self, job: Job, tick: datetime, kind: RunKind, exc: LockNotAcquired) -> SkipReason:
        """Skip a refused run (counting a claimed tick toward limit_runs); its reason."""
        reason = SkipReason.TICK_CLAIMED if isinstance(exc, TickClaimed) else SkipReason.LOCK_HELD
        if reason is SkipReason.TICK_CLAIMED and kind is not _RUN_NOW:
            self._count_toward_limit(job)
        self._skipped(job, tick, kind, reason)
        return reason

    def _count_toward_limit(self, job: Job) -> bool:
        """Count a scheduled tick toward limit_runs; False if the limit was already reached."""
        limit = job._opts.limit_runs
        if limit is None:
            return True
        if job._limit_count >= limit:
            return False
        job._limit_count += 1
        if job._limit_count >= limit and not job._removed:
            self._retire(job, RemovalReason.LIMIT_RUNS)
        return True

    async def _pipeline(
        self,
        job: Job,
        tick: datetime,
        kind: RunKind,
        lock_result: Lock | LockNotAcquired | _Retake | None,
        need_outcome: bool = True,
    ) -> RunOutcome | None:
        clock, opts = self._clock, job._opts
        jitter: timedelta | None = None
        if opts.jitter is not None and kind is not _RUN_NOW:
            seconds = self._random.uniform(0, opts.jitter.total_seconds())
            nxt = job._next_tick
            if nxt is not None:
                seconds = min(seconds, max(0.0, (nxt - tick).total_seconds() - 1e-3))
            jitter = timedelta(seconds=seconds)
            await clock.sleep_until(clock.monotonic() + seconds)
        token: int | None = None
        lock: Lock | None = None
        leader_run = False
        if job._coordinated:
            locker = opts.locker or self._locker
            if self._elector is not None:
                leadership = self._elector.leadership()
                if leadership is None:
                    return self._skip(job, tick, kind, SkipReason.NOT_LEADER)
                token = leadership.epoch
                leader_run = True
                claim = getattr(self._elector, "claim", None)
                if locker is None and claim is not None and kind is not _RUN_NOW:
                    refused = await self._claim(job, claim, tick, kind)
                    if refused is not None:
                        return refused
            if locker is not None:
                if lock_result is None or isinstance(lock_result, _Retake):
                    acquired = await self._acquire(
                        job, locker, None if kind is _RUN_NOW else tick, kind, lock_result is None
                    )
                elif isinstance(lock_result, LockNotAcquired):
                    if self._waits_for_lock(job, tick, kind, lock_result):
                        acquired = await self._wait_for_lock(job, locker, tick, kind)
                    else:
                        acquired = self._refused(job, tick, kind, lock_result)
                else:
                    acquired = lock_result
                if isinstance(acquired, RunOutcome):
                    return acquired
                lock = acquired
                token = lock.fencing_token
        try:
            return await self._call(job, tick, kind, lock, token, jitter, leader_run, need_outcome)
        except BaseException:
            if lock is not None:  # cancelled (shutdown): unlock is idempotent
                await self._unlock(job, lock)
            raise

    async def _unlock(self, job: Job, lock: Lock) -> None:
        try:
            if getattr(lock, "unlock_survives_cancel", False):
                await lock.unlock()  # the backend's own guarantee: no shield needed
            else:
                # Another backend's lock: its release goes on if shutdown cancels the run
                # meanwhile (asyncio.shield, as shutdown cancels run tasks natively).
                await asyncio.shield(lock.unlock())
        except Exception as exc:
            self._logger.warning("unlock failed for %s: %r", job._key, exc)

    async def _call(
        self,
        job: Job,
        tick: datetime,
        kind: RunKind,
        lock: Lock | None,
        token: int | None,
        jitter: timedelta | None,
        leader_run: bool,
        need_outcome: bool = True,
    ) -> RunOutcome | None:
        clock, opts = self._clock, job._opts
        # Start and end times feed only outcomes, events, the monitor and the misfire
        # check; reading the clock twice per run is a measurable share of its cost.
        heard = bool(opts.listeners) or not self._events.runs_unheard
        timed = heard or need_outcome or opts.misfire_grace is not None or self._monitor is not None
        start = clock.now() if timed else tick
        lateness = timedelta(0)
        if timed and kind is not _RUN_NOW:
            lateness = start - tick - jitter if jitter is not None else start - tick
            grace = opts.misfire_grace
            # start_at="now" runs at activation for a tick that is past by design.
            if grace is not None and lateness > grace and kind is not _START:
                if lock is not None:
                    await self._unlock(job, lock)
                self._missed(job, MissReason.LATE, tick, tick)
                return RunOutcome(RunStatus.SKIPPED, tick, MissReason.LATE)
        ctx = RunContext(job, tick, kind, token)
        hook = opts.before_run or self._before_run
        if hook is not None:
            try:
                verdict = hook(ctx)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
            except Exception:
                self._logger.exception("before_run of %s raised; the run is vetoed", job._key)
                verdict = False
            if not verdict:
                if lock is not None:
                    await self._unlock(job, lock)
                if kind is not _RUN_NOW:
                    self._count_toward_limit(job)
                return self._skip(job, tick, kind, SkipReason.VETOED)
        if leader_run and self._elector is not None and self._elector.leadership() is None:
            # Leadership ended while the lock or before_run was awaited.
            if lock is not None:
                await self._unlock(job, lock)
            return self._skip(job, tick, kind, SkipReason.NOT_LEADER)
        if kind is not _RUN_NOW and not self._count_toward_limit(job):
            # The limit was reached by runs that started meanwhile; the job is removed.
            if lock is not None:
                await self._unlock(job, lock)
            return RunOutcome(RunStatus.SKIPPED, tick, None)
        job._run_count += 1
        if kind is not _RUN_NOW or job._last_run is None or tick > job._last_run:
            job._last_run = tick
        run = ctx
        if lock is not None:
            lock.on_lost(functools.partial(self._lost, run))
        if leader_run:
            self._elector_runs.add(run)
        if heard and self._wants(JobStarted, job):
            self._emit_job(job, JobStarted, tick=tick, kind=kind, start=start, lateness=lateness)
        timer = self._arm_timeout(run, opts.timeout) if opts.timeout is not None else None
        info = job._info
        args, kwargs = job._args, job._kwargs
        if info.ctx_param is not None:
            kwargs = {**(kwargs or {}), info.ctx_param: ctx}
        reset = _current.set(ctx)
        result: Any = None
        error: BaseException | None = None
        try:
            if info.is_async:
                if timer is None and not leader_run:
                    # Nothing but shutdown or a lost lock can cancel this run: no scope
                    # (it is the costliest part of a run's overhead); a lost lock cancels
                    # the task (see _lost).
                    if lock is not None:
                        run._task = asyncio.current_task()
                    try:
                        result = await (job._func(*args, **kwargs) if kwargs else job._func(*args))
                    finally:
                        if run._cause is not None:
                            _uncancel(run)
                else:
                    with self._scope_type() as scope:
                        ctx._cancel_scope = scope
                        result = await (job._func(*args, **kwargs) if kwargs else job._func(*args))
                if run._cause is not None:  # timed out or lost, even if the job swallowed it
                    error = run._cause
            else:
                self._thread_runs.add(run)
                result = await self._call_in_thread(job, args, kwargs)
                if run._cause is not None:
                    error = run._cause
        except asyncio.CancelledError as exc:
            if _cancelled_from_outside():
                raise  # shutdown cancels this run
            # Lost (a lock-only run's task was cancelled, see _lost), else the job's own
            # (an awaited future was cancelled): a failure either way.
            error = run._cause if run._cause is not None else exc
        except Exception as exc:
            error = (
                run._cause
                if run._cause is not None and isinstance(exc, (anyio.get_cancelled_exc_class(),))
                else exc
            )
        finally:
            run._done = True
            run._task = None  # no cycle between the task's frame and its context
            if kind is _RUN_NOW or not info.is_async:
                # Scheduled async runs own their task (and its context copy); a reset
                # there would be wasted work.
                _current.reset(reset)
            if timer is not None:
                timer()
            if leader_run:
                self._elector_runs.discard(run)
            self._thread_runs.discard(run)
        if lock is not None:
            record = getattr(lock, "record_outcome", None)
            if record is not None:  # a backend with run history (PostgreSQL)
                try:
                    await record(
                        "succeeded" if error is None else "failed",
                        None if error is None else repr(error),
                    )
                except Exception as exc:
                    self._logger.warning("recording the outcome of %s failed: %r", job._key, exc)
            await self._unlock(job, lock)
        end = clock.now() if timed else start
        if error is None:
            if heard and self._wants(JobSucceeded, job):
                self._emit_job(
                    job,
                    JobSucceeded,
                    tick=tick,
                    kind=kind,
                    start=start,
                    end=end,
                    return_value=result,
                )
        else:
            self._log_failure(job, tick, error)
            if heard and self._wants(JobFailed, job):
                self._emit_job(
                    job, JobFailed, tick=tick, kind=kind, start=start, end=end, exception=error
                )
        if self._monitor is not None:
            self._record(
                job,
                "succeeded" if error is None else "failed",
                None,
                (end - start).total_seconds(),
                lateness.total_seconds(),
            )
        if not need_outcome:  # nobody awaits it (scheduled runs): skip building it
            return None
        if error is None:
            return RunOutcome(RunStatus.SUCCEEDED, tick, None, start, end, None, result)
        return RunOutcome(RunStatus.FAILED, tick, None, start, end, error)

    async def _call_in_thread(
        self, job: Job, args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> Any:
        global threads_in_flight
        func = functools.partial(job._func, *args, **kwargs) if kwargs else job._func
        if args and not kwargs:
            func = functools.partial(job._func, *args)
        threads_in_flight += 1
        try:
            result = await anyio.to_thread.run_sync(
                func, limiter=self._limiter, abandon_on_cancel=True
            )
        finally:
            threads_in_flight -= 1
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                f"{job._func!r} is a plain function that returned an awaitable; "
                "declare it async def so asyncron awaits it"
            )
        return result

    def _arm_timeout(self, run: _Run, timeout: timedelta) -> Callable[[], None]:
        """Fire :meth:`_timed_out` after ``timeout`` on the clock; returns a disarm callable."""
        seconds = timeout.total_seconds()
        if self._system_clock and self._loop is not None:
            handle = self._loop.call_later(seconds, self._timed_out, run)
            return handle.cancel

        async def watch() -> None:
            await self._clock.sleep_until(self._clock.monotonic() + seconds)
            self._timed_out(run)

        assert self._loop is not None
        task = self._loop.create_task(watch())

        def disarm() -> None:
            task.cancel()

        return disarm

    def _timed_out(self, run: _Run) -> None:
        if run._done:
            return
        run._cancelled = True
        run._cause = RunTimeout(
            f"run of {run._job._name or run._job._key} at {run._tick.isoformat()} "
            f"exceeded timeout={run._job._opts.timeout}"
        )
        if run._cancel_scope is not None:
            run._cancel_scope.cancel()

    def _lost(self, run: _Run, exc: BaseException | None) -> None:
        """A run's lock or this instance's leadership was lost."""
        if run._done:
            return
        job = run._job
        run._cancelled = True
        self._logger.warning("lost the lock of %s at %s: %r", job._key, run._tick, exc)
        if self._wants(LockLost, job):
            self._emit_job(job, LockLost, tick=run._tick, kind=run._kind, exception=exc)
        if job._opts.on_lock_lost == "cancel":
            cause = LockLostError(f"lost the lock of {job._key} at {run._tick.isoformat()}")
            if exc is not None:
                cause.__cause__ = exc
            run._cause = cause
            if run._cancel_scope is not None:
                run._cancel_scope.cancel()
            elif run._task is not None:
                run._task.cancel()  # taken back by _uncancel when the call ends

    def _cancel_leader_runs(self, exc: BaseException | None) -> None:
        for run in list(self._elector_runs):
            self._lost(run, exc)
