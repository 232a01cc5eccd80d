"""Event types, run outcomes, and the dispatcher that delivers events off the run path."""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from uuid import UUID

if TYPE_CHECKING:
    from types import TracebackType

__all__ = (
    "ClockSkewDetected",
    "Event",
    "EventCallback",
    "JobAdded",
    "JobEvent",
    "JobFailed",
    "JobMissed",
    "JobRemoved",
    "JobSkipped",
    "JobStarted",
    "JobSucceeded",
    "JobUpdated",
    "LeadershipChanged",
    "LockFailed",
    "LockLost",
    "MissReason",
    "Monitor",
    "RemovalReason",
    "RunEvent",
    "RunKind",
    "RunOutcome",
    "RunStatus",
    "SchedulerStarted",
    "SchedulerStopped",
    "SkipReason",
    "Subscription",
)

logger = logging.getLogger("asyncron")


class SkipReason(enum.StrEnum):
    """Why a due run was not started (the tick is consumed)."""

    PAUSED = "paused"
    OVERLAP = "overlap"
    CONCURRENCY_LIMIT = "concurrency_limit"
    NOT_LEADER = "not_leader"
    TICK_CLAIMED = "tick_claimed"
    LOCK_HELD = "lock_held"
    LOCK_ERROR = "lock_error"
    VETOED = "vetoed"


class MissReason(enum.StrEnum):
    """Why a tick was missed rather than run."""

    LATE = "late"
    COALESCED = "coalesced"
    QUEUE_FULL = "queue_full"
    BACKEND_UNAVAILABLE = "backend_unavailable"


class RunKind(enum.StrEnum):
    """How a run came about."""

    SCHEDULED = "scheduled"
    CATCH_UP = "catch_up"
    START = "start"
    RUN_NOW = "run_now"


class RunStatus(enum.StrEnum):
    """The end state of a run."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class RemovalReason(enum.StrEnum):
    """Why a job left the scheduler."""

    EXPLICIT = "explicit"
    LIMIT_RUNS = "limit_runs"
    STOP_AT = "stop_at"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What became of one run: returned by ``Job.run_now()`` and given to monitors.

    ``reason`` is set for skipped runs; ``exception`` for failed ones.
    """

    status: RunStatus
    tick: datetime
    reason: SkipReason | MissReason | None = None
    start: datetime | None = None
    end: datetime | None = None
    exception: BaseException | None = None
    return_value: Any = None


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every event; ``timestamp`` is the wall time it was emitted (UTC)."""

    timestamp: datetime


@dataclass(frozen=True, slots=True)
class SchedulerStarted(Event):
    """The scheduler started (or resumed after ``stop_jobs``)."""


@dataclass(frozen=True, slots=True)
class SchedulerStopped(Event):
    """The scheduler stopped dispatching and drained its runs."""


@dataclass(frozen=True, slots=True)
class JobEvent(Event):
    """Base class of events about one job."""

    job_id: UUID
    job_name: str | None


@dataclass(frozen=True, slots=True)
class JobAdded(JobEvent):
    """A job was added."""


@dataclass(frozen=True, slots=True)
class JobUpdated(JobEvent):
    """A job's options or schedule were changed."""


@dataclass(frozen=True, slots=True)
class JobRemoved(JobEvent):
    """A job left the scheduler (a run in progress is not cancelled)."""

    reason: RemovalReason


@dataclass(frozen=True, slots=True)
class RunEvent(JobEvent):
    """Base class of events about one run of a job."""

    tick: datetime
    kind: RunKind


@dataclass(frozen=True, slots=True)
class JobStarted(RunEvent):
    """A run started; ``lateness`` is its start minus (tick + jitter)."""

    start: datetime
    lateness: timedelta


@dataclass(frozen=True, slots=True)
class JobSucceeded(RunEvent):
    """A run returned."""

    start: datetime
    end: datetime
    return_value: Any


@dataclass(frozen=True, slots=True)
class JobFailed(RunEvent):
    """A run raised (or timed out, ``RunTimeout``; or lost its lock, ``LockLostError``)."""

    start: datetime
    end: datetime
    exception: BaseException


@dataclass(frozen=True, slots=True)
class JobSkipped(RunEvent):
    """A due run was not started; the tick is consumed."""

    reason: SkipReason


@dataclass(frozen=True, slots=True)
class JobMissed(JobEvent):
    """Ticks were not run: late, coalesced, dropped from a full queue, or the backend
    did not answer within the grace. ``count`` ticks from ``first_tick`` to
    ``last_tick``; ``count`` is None when a long gap was not walked to count it."""

    reason: MissReason
    count: int | None
    first_tick: datetime
    last_tick: datetime


@dataclass(frozen=True, slots=True)
class LockFailed(JobEvent):
    """The coordination backend failed (not a refusal) while claiming a tick."""

    tick: datetime | None
    exception: BaseException


@dataclass(frozen=True, slots=True)
class LockLost(RunEvent):
    """A run's lock (or this instance's leadership) was lost while the run was going on."""

    exception: BaseException | None


@dataclass(frozen=True, slots=True)
class LeadershipChanged(Event):
    """This instance became leader (``leader=True``, with the new epoch) or stopped leading."""

    leader: bool
    epoch: int | None


@dataclass(frozen=True, slots=True)
class ClockSkewDetected(Event):
    """The local clock differs from a backend server's clock by more than the threshold.

    ``skew`` is local minus server time, corrected for the round trip.
    """

    skew: timedelta
    threshold: timedelta
    source: str


EventCallback = Callable[[Any], "Awaitable[None] | None"]


@runtime_checkable
class Monitor(Protocol):
    """Receives one call per finished run, synchronously, with primitive values.

    Must not block: it is called on the event loop right after each run ends.
    """

    def record_run(
        self, job: str, status: str, reason: str | None, duration: float, lateness: float
    ) -> None:
        """Record a run of ``job`` (its name or id) with its status, skip reason,
        duration and lateness in seconds."""
        ...


class Subscription:
    """A registered event callback; ``unsubscribe()`` (or leaving ``with``) removes it."""

    __slots__ = ("_active", "_callback", "_dispatcher", "_types")

    def __init__(
        self,
        dispatcher: EventDispatcher,
        callback: EventCallback,
        types: tuple[type[Event], ...],
    ) -> None:
        self._dispatcher = dispatcher
        self._callback = callback
        self._types = types
        self._active = True  # False once unsubscribed: queued events skip it

    def unsubscribe(self) -> None:
        """Stop delivering events to this callback; idempotent."""
        self._dispatcher.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unsubscribe()


def _matches(types: tuple[type[Event], ...], event_type: type[Event]) -> bool:
    return not types or issubclass(event_type, types)


class EventDispatcher:
    """Holds subscriptions, knows which event types anyone listens to, and delivers events
    in order from a bounded queue in one task, outside the run pipeline."""

    MAX_QUEUE = 10_000

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._queue: deque[tuple[Event, tuple[Subscription | EventCallback, ...]]] = deque()
        self._wanted: dict[type[Event], bool] = {}
        #: True while no subscriber listens to JobStarted, JobSucceeded or JobFailed:
        #: then a run builds no events and reads the clock for none (the hot path).
        self.runs_unheard = True
        self._dropped = 0
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.monitor: Monitor | None = None

    # --- subscriptions -------------------------------------------------
    def subscribe(self, callback: EventCallback, types: Iterable[type[Event]]) -> Subscription:
        types = tuple(types)
        sub = Subscription(self, callback, types)
        self._subscriptions.append(sub)
        self._changed()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub._active = False
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)
            self._changed()

    def _changed(self) -> None:
        self._wanted.clear()
        self.runs_unheard = not any(self.wants(t) for t in (JobStarted, JobSucceeded, JobFailed))

    def wants(self, event_type: type[Event]) -> bool:
        """Whether any subscriber listens to ``event_type`` (cached per type)."""
        wanted = self._wanted.get(event_type)
        if wanted is None:
            wanted = any(_matches(s._types, event_type) for s in self._subscriptions)
            self._wanted[event_type] = wanted
        return wanted

    # --- delivery --------------------------------------------------------
    def emit(self, event: Event, extra: tuple[EventCallback, ...] = ()) -> None:
        """Queue ``event`` for the subscribers and the ``extra`` (per-job) callbacks."""
        callbacks: tuple[Subscription | EventCallback, ...] = tuple(
            s for s in self._subscriptions if _matches(s._types, type(event))
        )
        if extra:
            callbacks += extra
        if not callbacks:
            return
        if len(self._queue) >= self.MAX_QUEUE:
            self._queue.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                logger.warning(
                    "event queue full (%d): dropped %d oldest events so far",
                    self.MAX_QUEUE,
                    self._dropped,
                )
        self._queue.append((event, callbacks))
        wakeup = self._wakeup
        if wakeup is not None:
            if threading.get_ident() == self._thread:
                wakeup.set()
            elif self._loop is not None:  # e.g. add_job in a worker thread
                self._loop.call_soon_threadsafe(wakeup.set)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._loop, self._thread = asyncio.get_running_loop(), threading.get_ident()
        if self._queue:
            self._wakeup.set()
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="asyncron.events")

    async def stop(self) -> None:
        """Let the dispatcher task deliver what is queued, then end it (delivering here,
        beside it, broke the order and cancelled the callback it was awaiting)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            await task
        except asyncio.CancelledError:
            if (current := asyncio.current_task()) is not None and current.cancelling():
                raise
        finally:
            self._stopping = False
            self._wakeup = None

    @property
    def pending(self) -> int:
        """Events queued and not yet delivered."""
        return len(self._queue)

    async def _drain(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._deliver_all()
            if self._stopping:
                return

    async def _deliver_all(self) -> None:
        queue = self._queue
        while queue:
            event, callbacks = queue.popleft()
            for callback in callbacks:
                if isinstance(callback, Subscription):
                    if not callback._active:
                        continue  # unsubscribed after the event was queued
                    callback = callback._callback
                try:
                    result = callback(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("event callback %r raised on %r", callback, event)
