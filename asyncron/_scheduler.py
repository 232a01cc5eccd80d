"""The Scheduler: public API, job registry and lifecycle on top of the run engine."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import random as _random
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio

from ._clock import Clock, SystemClock
from ._events import (
    ClockSkewDetected,
    Event,
    EventCallback,
    EventDispatcher,
    JobAdded,
    JobRemoved,
    JobUpdated,
    LeadershipChanged,
    MissReason,
    Monitor,
    RemovalReason,
    RunKind,
    RunOutcome,
    RunStatus,
    SchedulerStarted,
    SchedulerStopped,
    Subscription,
)
from ._job import (
    OPTION_NAMES,
    START_NOW,
    BeforeRun,
    Job,
    JobOptions,
    build_options,
    check_arguments,
    default_key,
    inspect_function,
    normalize_tags,
)
from ._runner import RunEngine
from ._schedules import EverySchedule, OnceSchedule, Schedule
from ._time import as_duration, resolve_zone
from .errors import (
    ConfigurationError,
    ConflictingJobError,
    InvalidJobError,
    InvalidScheduleError,
    JobLookupError,
    SchedulerStateError,
)

if TYPE_CHECKING:
    from .distributed.protocols import Elector, Leadership, Locker

__all__ = ("Scheduler", "SchedulerState")

F = TypeVar("F", bound=Callable[..., Any])
_UNSET: Any = object()
_US = timedelta(microseconds=1)


class SchedulerState(enum.StrEnum):
    """``created → running ⇄ stopped → shut_down``."""

    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    SHUT_DOWN = "shut_down"


def _check_int(field: str, value: Any, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            field, value, "an integer >= 1" + (" or None" if allow_none else "")
        )
    return value


class Scheduler(RunEngine):
    """An asyncio job scheduler: ``async with Scheduler() as scheduler: ...``.

    Registry calls (``add_job``, ``remove_job``…) are plain methods usable before start;
    ``start``/``shutdown`` (or ``async with``) run it.

    :param tz: the default zone of schedules (IANA name, ``"UTC"``, or ``"local"``)
    :param max_concurrent_jobs: runs in progress at once across all jobs (None: no limit)
    :param concurrency_mode: at the global limit, ``"wait"`` queues a tick, ``"skip"`` drops it
    :param max_threads: worker threads for plain (non-async) job functions
    :param job_defaults: options applied to every job unless given at ``add_job``
    :param stop_timeout: how long shutdown waits for runs before cancelling them
    :param locker: the coordination locker (every instance schedules, each tick runs once)
    :param elector: the leader elector (only the leader runs coordinated jobs)
    :param monitor: receives one synchronous call per finished run
    :param clock: the source of time (``asyncron.testing.VirtualClock`` in tests)
    :param random: the ``random.Random`` used for jitter and random intervals
    :param logger: the logger (default ``logging.getLogger("asyncron")``)
    :param before_run: a veto hook for every run (a job's own ``before_run`` wins)
    :param skew_threshold: clock skew against a backend server that emits ClockSkewDetected
    :param claim_ahead: how long before a tick a batch locker (``lock_many``) is asked for
        its locks, so that runs start on time rather than a round trip late (0: at the tick)
    """

    def __init__(
        self,
        *,
        tz: Any = "UTC",
        max_concurrent_jobs: int | None = None,
        concurrency_mode: Literal["wait", "skip"] = "wait",
        max_threads: int = 8,
        job_defaults: Mapping[str, Any] | None = None,
        stop_timeout: timedelta | float = 30.0,
        locker: Locker | None = None,
        elector: Elector | None = None,
        monitor: Monitor | None = None,
        clock: Clock | None = None,
        random: _random.Random | None = None,
        logger: logging.Logger | None = None,
        before_run: BeforeRun | None = None,
        skew_threshold: timedelta | float = 1.0,
        claim_ahead: timedelta | float = 0.05,
    ) -> None:
        self._tz = resolve_zone(tz, "tz")
        self._max_concurrent = _check_int(
            "max_concurrent_jobs", max_concurrent_jobs, allow_none=True
        )
        if concurrency_mode not in ("wait", "skip"):
            raise ConfigurationError("concurrency_mode", concurrency_mode, "'wait' or 'skip'")
        self._concurrency_mode = concurrency_mode
        threads = _check_int("max_threads", max_threads)
        assert threads is not None
        self._max_threads = threads
        defaults = dict(job_defaults or {})
        for key in defaults:
            if key not in OPTION_NAMES:
                raise ConfigurationError(
                    "job_defaults",
                    {key: defaults[key]},
                    f"job options: {', '.join(sorted(OPTION_NAMES))}",
                )
        build_options(defaults, self._tz)  # fail here, not at the first add_job
        self._job_defaults = defaults
        stop = as_duration("stop_timeout", stop_timeout)
        assert stop is not None
        self._stop_timeout = stop
        skew = as_duration("skew_threshold", skew_threshold, allow_zero=False)
        assert skew is not None
        self._skew_threshold = skew
        ahead = as_duration("claim_ahead", claim_ahead)
        assert ahead is not None
        if ahead > timedelta(seconds=1):
            raise ConfigurationError("claim_ahead", claim_ahead, "at most 1 second")
        self._claim_ahead = ahead.total_seconds()
        if locker is not None and not (hasattr(locker, "lock") and hasattr(locker, "last_ticks")):
            raise ConfigurationError("locker", locker, "a Locker (lock() and last_ticks())")
        if elector is not None and not (
            hasattr(elector, "leadership") and hasattr(elector, "is_leader")
        ):
            raise ConfigurationError("elector", elector, "an Elector (leadership(), is_leader())")
        if monitor is not None and not hasattr(monitor, "record_run"):
            raise ConfigurationError("monitor", monitor, "a Monitor with record_run()")
        if clock is not None and not all(
            hasattr(clock, a) for a in ("now", "monotonic", "sleep_until")
        ):
            raise ConfigurationError("clock", clock, "a Clock (now(), monotonic(), sleep_until())")
        if random is not None and not isinstance(random, _random.Random):
            raise ConfigurationError("random", random, "a random.Random instance")
        if logger is not None and not isinstance(logger, logging.Logger):
            raise ConfigurationError("logger", logger, "a logging.Logger")
        if before_run is not None and not callable(before_run):
            raise ConfigurationError("before_run", before_run, "a callable taking a RunContext")
        self._locker = locker
        self._elector = elector
        self._monitor = monitor
        self._clock = clock if clock is not None else SystemClock()
        self._random = random if random is not None else _random.Random()
        self._logger = logger if logger is not None else logging.getLogger("asyncron")
        self._before_run = before_run
        self._events = EventDispatcher()
        self._state = SchedulerState.CREATED
        self._jobs: dict[Job, None] = {}  # insertion-ordered set
        self._ids: dict[uuid.UUID, Job] | None = None  # built on the first lookup by id
        self._names: dict[str, Job] = {}
        self._keys: dict[str, Job] = {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._background: list[asyncio.Task[Any]] = []
        self._forever: asyncio.Event | None = None
        self._draining: asyncio.Future[None] | None = None
        self._clock_skew: timedelta | None = None
        self._starting = False
        self._remove_listener: Callable[[], None] | None = None
        self._unsubscribe_wall: Callable[[], None] | None = None
        self._init_engine()

    # --- properties -------------------------------------------------------------
    @property
    def state(self) -> SchedulerState:
        """The lifecycle state."""
        return self._state

    @property
    def jobs(self) -> tuple[Job, ...]:
        """A snapshot of the jobs, in the order they were added."""
        return tuple(self._jobs)

    @property
    def waiting_runs(self) -> int:
        """Ticks queued for an overlap slot or for the global limit."""
        return self._waiting_count

    @property
    def clock(self) -> Clock:
        """The clock this scheduler reads and waits on."""
        return self._clock

    @property
    def tz(self) -> Any:
        """The scheduler's default zone (a ``ZoneInfo``)."""
        return self._tz

    @property
    def clock_skew(self) -> timedelta | None:
        """Local minus backend-server time, round-trip corrected (None until measured)."""
        return self._clock_skew

    # --- registry -------------------------------------------------------------------
    def add_job(
        self,
        func: Callable[..., Any],
        schedule: Schedule,
        *,
        name: str | None = None,
        tags: Iterable[str] | str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        id: uuid.UUID | str | None = None,
        **options: Any,
    ) -> Job:
        """Add a job and return its handle.

        :param func: an ``async def`` or plain function (plain ones run in worker threads)
        :param schedule: when to run it: ``cron()``, ``every()``, ``daily()``, ``once()``…
        :param name: a unique name; also the coordination key and the source of the id
        :param tags: labels for ``remove_by_tags``
        :param args: positional arguments for ``func``
        :param kwargs: keyword arguments for ``func``
        :param id: a chosen id (UUID or its string)
        :param options: job options (``max_instances``, ``overlap``, ``misfire_grace``…)
        """
        if self._state is SchedulerState.SHUT_DOWN:
            raise SchedulerStateError("add a job", self._state, "create a new scheduler")
        if not callable(func):
            raise InvalidJobError(f"func={func!r} is not callable")
        if type(schedule) is EverySchedule:  # no zone to resolve (the commonest schedule)
            zone = self._tz
        elif isinstance(schedule, Schedule):
            schedule = schedule.with_zone(self._tz)
            zone = schedule.zone or self._tz
        else:
            raise InvalidScheduleError(
                "schedule",
                schedule,
                "a schedule from cron(), every(), random_every(), daily(), "
                "weekly(), monthly() or once()",
            )
        merged = {**self._job_defaults, **options} if self._job_defaults else options
        opts = build_options(merged, zone)
        if name is not None:
            self._check_name(name)
        job_id = self._make_id(id) if id is not None else None
        tags_set = normalize_tags(tags)
        args_tuple = tuple(args)
        kwargs_dict = dict(kwargs) if kwargs else None
        info = inspect_function(func)
        check_arguments(func, info, args_tuple, kwargs_dict or {})
        is_once = type(schedule) is OnceSchedule
        local_once = is_once and schedule.now  # type: ignore[attr-defined]
        coordinated = (
            opts.distributed
            and not local_once
            and (opts.locker is not None or self._locker is not None or self._elector is not None)
        )
        key = name if name is not None else default_key(func)[0]
        if coordinated:
            self._check_coordinated(func, name, key, schedule, opts)
        job = Job(
            self,
            job_id,
            name,
            key,
            func,
            info,
            args_tuple,
            kwargs_dict,
            schedule,
            opts,
            tags_set,
            coordinated,
        )
        now = self._clock.now()
        first = self._after(job, now)
        if first is None and not local_once and opts.start_at is not START_NOW:
            if is_once:
                raise InvalidScheduleError(
                    "at",
                    schedule.at,  # type: ignore[attr-defined]
                    "at least one time in the future",
                )
            raise ConfigurationError(
                "stop_at", opts.stop_at, "a time that leaves at least one tick of the schedule"
            )
        self._jobs[job] = None
        if self._ids is not None or job_id is not None:
            self._id_index()[job.id] = job
        if name is not None:
            self._names[name] = job
        if coordinated:
            self._keys[key] = job
            self._note_batching(job)
        if self._loop is not None and self._state is SchedulerState.RUNNING:
            if self._loop_thread != threading.get_ident():
                self._loop.call_soon_threadsafe(self._activate, job, None)
            elif first is not None and not local_once and opts.start_at is not START_NOW:
                # All that _activate does for a job that is neither a local one-off nor
                # start_at="now", without its call (2.7k of 46k instructions an add).
                self._set_next(job, first)
            else:
                self._activate(job, now, first_start=True, first=first)
        else:
            job._next_tick = now if local_once else first
        if self._wants(JobAdded, job):
            self._emit_job(job, JobAdded)
        return job

    def job(self, schedule: Schedule, **options: Any) -> Callable[[F], F]:
        """Decorator form of :meth:`add_job`; returns the function unchanged."""

        def decorate(func: F) -> F:
            self.add_job(func, schedule, **options)
            return func

        return decorate

    def _check_name(self, name: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError("name", name, "a non-empty string")
        if len(name) >= 32:  # shorter strings never parse as UUIDs; parsing is slow
            try:
                uuid.UUID(name)
            except ValueError:
                pass
            else:
                raise ConfigurationError("name", name, "a name that does not parse as a UUID")
        if name in self._names:
            raise ConflictingJobError("name", name)

    def _make_id(self, given: Any) -> uuid.UUID:
        if isinstance(given, uuid.UUID):
            job_id = given
        else:
            parsed: uuid.UUID | None = None
            if isinstance(given, str):
                with contextlib.suppress(ValueError):
                    parsed = uuid.UUID(given)
            if parsed is None:
                raise ConfigurationError("id", given, "a UUID or a string that parses as one")
            job_id = parsed
        if job_id in self._id_index():
            raise ConflictingJobError("id", str(job_id))
        return job_id

    def _id_index(self) -> dict[uuid.UUID, Job]:
        index = self._ids
        if index is None:
            index = self._ids = {job.id: job for job in self._jobs}
        return index

    def _check_coordinated(
        self, func: Any, name: str | None, key: str, schedule: Schedule, opts: JobOptions
    ) -> None:
        locker = opts.locker or self._locker
        if locker is not None and not schedule.is_pure:
            raise ConfigurationError(
                "schedule",
                schedule,
                "a schedule with pure ticks under a locker: random_every "
                "ticks differ per instance (use an elector, or distributed=False)",
            )
        if locker is not None and opts.from_completion:
            raise ConfigurationError(
                "from_completion",
                True,
                "False under a locker: ticks from completion differ "
                "per instance (use an elector, or distributed=False)",
            )
        if name is None:
            _, unstable = default_key(func)
            if unstable is not None:
                raise ConfigurationError(
                    "name",
                    None,
                    f"an explicit name= for a coordinated job whose function is "
                    f"{unstable} (its default key {key!r} is not stable across instances)",
                )
        if key in self._keys:
            raise ConfigurationError(
                "name",
                name,
                f"a name: the coordination key {key!r} is already used by "
                "another job; give each job of this function its own name=",
            )

    def _lookup(self, key: Any) -> Job:
        if isinstance(key, Job):
            if key not in self._jobs:
                raise JobLookupError(key._name or key.id)
            return key
        if isinstance(key, uuid.UUID):
            found = self._id_index().get(key)
        elif isinstance(key, str):
            try:
                found = self._id_index().get(uuid.UUID(key))
            except ValueError:
                found = self._names.get(key)
        else:
            raise JobLookupError(key)
        if found is None:
            raise JobLookupError(key)
        return found

    def get_job(self, job: uuid.UUID | str) -> Job:
        """Return the job with this id (a UUID, or a string that parses as one) or name."""
        return self._lookup(job)

    def remove_job(self, job: uuid.UUID | str | Job) -> None:
        """Remove a job; a run in progress is not cancelled."""
        self._retire(self._lookup(job), RemovalReason.EXPLICIT)

    def remove_by_tags(self, *tags: str, match: Literal["any", "all"] = "any") -> int:
        """Remove the jobs that have any (or all) of ``tags``; return how many."""
        if match not in ("any", "all"):
            raise ConfigurationError("match", match, "'any' or 'all'")
        wanted = normalize_tags(tags)
        if not wanted:  # with match="all" the empty set would match every job
            raise ConfigurationError("tags", tags, "at least one tag")
        if match == "any":
            doomed = [j for j in self._jobs if not wanted.isdisjoint(j._tags)]
        else:
            doomed = [j for j in self._jobs if wanted <= j._tags]
        for job in doomed:
            self._retire(job, RemovalReason.EXPLICIT)
        return len(doomed)

    def pause_job(self, job: uuid.UUID | str | Job) -> None:
        """Pause a job: its due ticks are skipped as ``paused`` until resumed."""
        self._lookup(job)._paused = True

    def resume_job(self, job: uuid.UUID | str | Job) -> None:
        """Resume a paused job from its next tick."""
        self._lookup(job)._paused = False

    def update_job(
        self,
        job: uuid.UUID | str | Job,
        schedule: Schedule | None = None,
        *,
        name: str | None = _UNSET,
        tags: Iterable[str] | str | None = _UNSET,
        args: Iterable[Any] = _UNSET,
        kwargs: Mapping[str, Any] | None = _UNSET,
        **options: Any,
    ) -> Job:
        """Change a job's schedule or options; keeps its id, run_count and last_run.

        A new schedule recomputes the next tick from now, without catch-up.
        """
        target = self._lookup(job)
        new_schedule = target._schedule
        if schedule is not None:
            if not isinstance(schedule, Schedule):
                raise InvalidScheduleError("schedule", schedule, "a schedule from cron(), every()…")
            new_schedule = schedule.with_zone(self._tz)
        zone = new_schedule.zone or self._tz
        current = {f: getattr(target._opts, f) for f in OPTION_NAMES}
        opts = build_options({**current, **options}, zone) if options else target._opts
        if (new_schedule is not target._schedule or opts is not target._opts) and not (
            type(new_schedule) is OnceSchedule and new_schedule.now
        ):
            # Like add_job: a schedule left without ticks fails here, not as a stuck job.
            saved = target._schedule, target._opts
            target._schedule, target._opts = new_schedule, opts
            try:
                first = self._after(target, self._clock.now())
            finally:
                target._schedule, target._opts = saved
            if first is None and type(new_schedule) is OnceSchedule:
                raise InvalidScheduleError("at", new_schedule.at, "at least one time in the future")
            if first is None:
                raise ConfigurationError(
                    "stop_at", opts.stop_at, "a time that leaves at least one tick of the schedule"
                )
        new_name = target._name
        if name is not _UNSET and name != target._name:
            if name is not None:
                self._check_name(name)
            new_name = name
        new_args = target._args if args is _UNSET else tuple(args)
        new_kwargs = target._kwargs if kwargs is _UNSET else (dict(kwargs) if kwargs else None)
        check_arguments(target._func, target._info, new_args, new_kwargs or {})
        new_tags = target._tags if tags is _UNSET else normalize_tags(tags)
        coordinated = target._coordinated and opts.distributed
        new_key = new_name if new_name is not None else default_key(target._func)[0]
        if coordinated and new_key != target._key:
            if self._keys.get(target._key) is target:
                del self._keys[target._key]
            try:
                self._check_coordinated(target._func, new_name, new_key, new_schedule, opts)
            except BaseException:
                self._keys[target._key] = target
                raise
            self._keys[new_key] = target
        if target._name is not None and new_name != target._name:
            del self._names[target._name]
        if new_name is not None:
            self._names[new_name] = target
        target._name, target._key = new_name, new_key
        target._args, target._kwargs, target._tags = new_args, new_kwargs, new_tags
        target._coordinated = coordinated
        schedule_changed = new_schedule is not target._schedule or opts is not target._opts
        target._schedule, target._opts = new_schedule, opts
        target._refresh_bare()
        self._note_batching(target)
        if schedule_changed:
            now = self._clock.now()
            if self._loop is not None and self._state is SchedulerState.RUNNING:
                self._call_in_loop(self._set_next, target, self._after(target, now))
            else:
                target._next_tick = self._after(target, now)
        if self._wants(JobUpdated, target):
            self._emit_job(target, JobUpdated)
        return target

    def subscribe(self, callback: EventCallback, *event_types: type[Event]) -> Subscription:
        """Call ``callback`` (sync or async) with every event of the given types (by
        ``isinstance``; none given: all events). Returns a :class:`Subscription`."""
        if not callable(callback):
            raise ConfigurationError("callback", callback, "a callable taking an event")
        for event_type in event_types:
            if not (isinstance(event_type, type) and issubclass(event_type, Event)):
                raise ConfigurationError("event_types", event_type, "Event subclasses")
        return self._events.subscribe(callback, event_types)

    def _retire(self, job: Job, reason: RemovalReason) -> None:
        if job._removed:
            return
        job._removed = True
        job._version += 1
        if job._next_tick is not None and self._loop is not None:
            self._stale += 1  # its heap entry is out of date now
        self._jobs.pop(job, None)
        if self._ids is not None:
            self._ids.pop(job.id, None)
        name, key = job._name, job._key
        if name is not None and self._names.get(name) is job:
            del self._names[name]
        if self._keys.get(key) is job:
            del self._keys[key]
        if job._waiting:
            self._waiting_count -= len(job._waiting)
            for tick, _, future in job._waiting:
                self._resolve(future, RunOutcome(RunStatus.SKIPPED, tick, None))
            job._waiting.clear()
            job._active = max(0, job._active)
        if job._active and self._global_waiting:
            # Ticks queued for the global limit are not in progress: drop them too.
            for entry in [e for e in self._global_waiting if e[0] is job]:
                self._global_waiting.remove(entry)
                self._waiting_count -= 1
                job._active -= 1
                self._resolve(entry[3], RunOutcome(RunStatus.SKIPPED, entry[1], None))
        if job._opts.listeners or self._events.wants(JobRemoved):
            self._emit_job(job, JobRemoved, reason=reason)

    def _preview(self, job: Job, n: int) -> list[datetime]:
        ticks: list[datetime] = []
        tick = job.next_run
        saved = self._random
        if not job._schedule.is_pure:  # preview on a copy: the real draws stay the same
            self._random = _random.Random()
            self._random.setstate(saved.getstate())
        try:
            while tick is not None and len(ticks) < n:
                ticks.append(tick)
                tick = self._after(job, tick)
        finally:
            self._random = saved
        return ticks

    # --- lifecycle ------------------------------------------------------------------
    def _call_in_loop(self, func: Callable[..., Any], *args: Any) -> None:
        if self._loop_thread == threading.get_ident() or self._loop is None:
            func(*args)
        else:
            self._loop.call_soon_threadsafe(func, *args)

    def _activate(
        self,
        job: Job,
        now: datetime | None,
        *,
        first_start: bool = True,
        first: datetime | Any | None = _UNSET,
    ) -> None:
        """Make a job active: ticks at or before now are never due except via catch-up."""
        if job._removed:
            return
        now = now if now is not None else self._clock.now()
        schedule, opts = job._schedule, job._opts
        if isinstance(schedule, OnceSchedule) and schedule.now:
            if first_start:
                job._version += 1
                job._next_tick = None
                self._submit(job, now, RunKind.SCHEDULED, None)
                self._retire(job, RemovalReason.EXHAUSTED)
            return
        submitted = False
        if opts.start_at is START_NOW and first_start:
            tick = self._latest(job, now) or now
            self._submit(job, tick, RunKind.START, None)
            submitted = True
        nxt = self._after(job, now) if first is _UNSET else first
        self._set_next(job, nxt)
        if nxt is None and not submitted:
            self._retire_exhausted(job)

    async def start(self) -> None:
        """Start dispatching (valid when created or stopped)."""
        if self._state in (SchedulerState.RUNNING, SchedulerState.SHUT_DOWN):
            raise SchedulerStateError(
                "start", self._state, "start() is valid when created or stopped"
            )
        if self._starting:
            raise SchedulerStateError("start", self._state, "another start() is in progress")
        self._starting = True
        try:
            await self._start()
        finally:
            self._starting = False

    async def _start(self) -> None:
        resume = self._state is SchedulerState.STOPPED
        loop = self._loop = asyncio.get_running_loop()
        # Runs start as Task(coro, loop=loop): loop.create_task's own Python costs 0.4 µs
        # a run. A loop with a task factory gets create_task, so the factory is honoured.
        self._new_task = (
            functools.partial(asyncio.Task, loop=loop)
            if loop.get_task_factory() is None
            else loop.create_task
        )
        # Stands in _tasks for a run whose task ended while its lock's release is still
        # in flight (see RunEngine._run_locked): nothing left to wait for or cancel.
        self._ended = loop.create_future()
        self._ended.set_result(None)
        # The running backend's own cancel scope class: built directly, a scope costs
        # 40 % less than through anyio.CancelScope's dispatch (measured 7.7 -> 4.3 us).
        self._scope_type = type(anyio.CancelScope())
        self._loop_thread = threading.get_ident()
        self._limiter = anyio.CapacityLimiter(self._max_threads)
        if self._stack is None:
            stack = contextlib.AsyncExitStack()
            try:
                for backend in self._backends():
                    if hasattr(backend, "__aenter__"):
                        await stack.enter_async_context(backend)
            except BaseException:
                await stack.aclose()
                self._loop = None
                raise
            self._stack = stack
        if self.state is SchedulerState.SHUT_DOWN:  # shutdown() ran while backends opened
            opened, self._stack = self._stack, None
            self._loop = None
            if opened is not None:
                await opened.aclose()
            raise SchedulerStateError("start", self._state, "shutdown() was called meanwhile")
        self._events.start()
        self._state = SchedulerState.RUNNING
        now = self._clock.now()
        self._clear_queue()
        for job in list(self._jobs):
            job._next_tick = None  # not on the (cleared) heap: nothing stale to count
            # _version stays 0 until a job's first activation: jobs added while stopped
            # start like new ones (their once("now") / start_at="now" run is due).
            self._activate(job, now, first_start=not resume or job._version == 0)
        self._background.append(self._loop.create_task(self._timer_loop(), name="asyncron.timer"))
        add_wall = getattr(self._clock, "add_wall_step_listener", None)
        if add_wall is not None:
            self._unsubscribe_wall = add_wall(self._poke)
        if self._elector is not None and hasattr(self._elector, "add_listener"):
            self._remove_listener = self._elector.add_listener(self._on_leadership)
            current = self._elector.leadership()
            if current is not None:  # a term won before start has no change event
                current.on_lost(self._cancel_leader_runs)
                if self._events.wants(LeadershipChanged):
                    self._events.emit(
                        LeadershipChanged(timestamp=now, leader=True, epoch=current.epoch)
                    )
        if not resume:
            catch_up = [
                j
                for j in self._jobs
                if j._coordinated and isinstance(j._opts.misfire_grace, timedelta)
            ]
            if catch_up:
                self._track(self._catch_up(catch_up))
        if any(hasattr(b, "server_time") for b in self._backends()):
            self._background.append(
                self._loop.create_task(self._watch_skew(), name="asyncron.skew")
            )
        if self._events.wants(SchedulerStarted):
            self._events.emit(SchedulerStarted(timestamp=now))

    def _backends(self) -> list[Any]:
        found: list[Any] = []
        for backend in (
            self._locker,
            self._elector,
            *(j._opts.locker for j in self._jobs),
        ):
            if backend is not None and not any(backend is b for b in found):
                found.append(backend)
        return found

    async def stop_jobs(self) -> None:
        """Stop dispatching and drain runs like shutdown, but keep the jobs; a later
        ``start()`` resumes from the next ticks without catch-up."""
        if self._state is not SchedulerState.RUNNING:
            raise SchedulerStateError("stop jobs", self._state, "only a running scheduler stops")
        await self._drain()
        if self._state is SchedulerState.RUNNING:  # a concurrent shutdown() wins
            self._state = SchedulerState.STOPPED

    async def shutdown(self) -> None:
        """Stop dispatching, wait up to ``stop_timeout`` for runs, cancel what is left,
        close the backends it opened. Terminal and idempotent."""
        if self._state is SchedulerState.SHUT_DOWN:
            return
        if self._state is SchedulerState.RUNNING:
            await self._drain()
        self._state = SchedulerState.SHUT_DOWN
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        if self._forever is not None:
            self._forever.set()

    async def _drain(self) -> None:
        """Drain once: a concurrent stop_jobs()/shutdown() waits for the drain in progress
        (two drains would each wait on their own idle event, one of them forever)."""
        if self._draining is not None:
            await asyncio.shield(self._draining)
            return
        self._draining = asyncio.get_running_loop().create_future()
        try:
            await self._drain_once()
        finally:
            self._draining.set_result(None)
            self._draining = None

    async def _drain_once(self) -> None:
        clock = self._clock
        # Called from a run (a job awaiting shutdown()): never wait for, or cancel, the
        # caller itself — it cannot finish before this returns.
        caller = asyncio.current_task()
        for key in [key for key, task in self._tasks.items() if task is caller]:
            del self._tasks[key]
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background.clear()
        self._drop_all_ahead()  # locks taken ahead for ticks that will not be dispatched
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self._unsubscribe_wall is not None:
            self._unsubscribe_wall()
            self._unsubscribe_wall = None
        while self._global_waiting:
            job, tick, _, future = self._global_waiting.popleft()
            job._active -= 1
            self._resolve(future, RunOutcome(RunStatus.SKIPPED, tick, None))
        for job in self._jobs:
            if job._waiting:
                for tick, _, future in job._waiting:
                    self._resolve(future, RunOutcome(RunStatus.SKIPPED, tick, None))
                job._waiting.clear()
        self._waiting_count = 0
        if self._tasks:
            self._idle = asyncio.Event()
            deadline = clock.monotonic() + self._stop_timeout.total_seconds()
            async with anyio.create_task_group() as tg:

                async def expire() -> None:
                    await clock.sleep_until(deadline)
                    tg.cancel_scope.cancel()

                tg.start_soon(expire)
                await self._idle.wait()
                tg.cancel_scope.cancel()
            self._idle = None
        if self._tasks:
            for run in list(self._thread_runs):
                self._logger.warning(
                    "shutdown: abandoning the thread still running %s (tick %s)",
                    run._job._name or run._job._key,
                    run._tick.isoformat(),
                )
            # (A run whose task ended while its lock's release is in flight has nothing
            # left to cancel: the release completes on its own, or the lock expires.)
            pending = [run for run in self._tasks.values() if not run.done()]
            self._logger.warning("shutdown: cancelling %d runs after stop_timeout", len(pending))
            for run_task in pending:
                run_task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            # A run cancelled before its first step never reached the code that takes
            # it out of the set.
            for key in [key for key, task in self._tasks.items() if task.done()]:
                del self._tasks[key]
        self._clear_queue()
        self._loop = None
        if self._events.wants(SchedulerStopped):
            self._events.emit(SchedulerStopped(timestamp=clock.now()))
        await self._events.stop()

    async def run_forever(self) -> None:
        """Start, run until SIGINT/SIGTERM (handlers installed in the main thread) or
        ``shutdown()``, then shut down gracefully."""
        async with self:
            self._forever = asyncio.Event()
            loop = asyncio.get_running_loop()
            installed: list[signal.Signals] = []
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.add_signal_handler(sig, self._forever.set)
                        installed.append(sig)
            try:
                await self._forever.wait()
            finally:
                for sig in installed:
                    loop.remove_signal_handler(sig)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """The lifespan context FastAPI/Starlette call: ``FastAPI(lifespan=scheduler.lifespan)``."""
        async with self:
            yield

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    # --- run_now -------------------------------------------------------------------
    async def _run_now(self, job: Job) -> RunOutcome:
        if self._state is not SchedulerState.RUNNING or self._loop is None:
            raise SchedulerStateError("run a job now", self._state, "start the scheduler first")
        future: asyncio.Future[RunOutcome] = self._loop.create_future()
        self._submit(job, self._clock.now(), RunKind.RUN_NOW, future)
        return await future

    # --- coordination ------------------------------------------------------------------
    def _on_leadership(self, leadership: Leadership | None) -> None:
        if leadership is None:
            if self._events.wants(LeadershipChanged):
                self._events.emit(
                    LeadershipChanged(timestamp=self._clock.now(), leader=False, epoch=None)
                )
            return
        leadership.on_lost(self._cancel_leader_runs)
        if self._events.wants(LeadershipChanged):
            self._events.emit(
                LeadershipChanged(timestamp=self._clock.now(), leader=True, epoch=leadership.epoch)
            )
        jobs = [
            j for j in self._jobs if j._coordinated and isinstance(j._opts.misfire_grace, timedelta)
        ]
        if jobs and self._loop is not None:
            self._track(self._catch_up(jobs))

    def _catch_up(self, jobs: list[Job]) -> Coroutine[Any, Any, None]:
        """Hold back the jobs' regular ticks now, and return the coroutine that runs the
        missed ticks: a tick claimed while the ledger is read would make them refused."""
        for job in jobs:
            if not job._opts.from_completion:
                self._held_back.setdefault(job, [])
        return self._run_catch_up(jobs)

    async def _run_catch_up(self, jobs: list[Job]) -> None:
        """Run the ticks in (max(last claimed tick, now - grace), now] that no instance ran,
        then the held-back regular ticks of the jobs that got no catch-up run."""
        caught: set[Job] = set()
        try:
            await self._catch_up_ledgers(jobs, caught)
        finally:
            for job in jobs:
                held = self._held_back.pop(job, None)
                if held and job not in caught and not job._removed:
                    if self._state is SchedulerState.RUNNING and self._loop is not None:
                        for tick in held:
                            self._submit(job, tick, RunKind.SCHEDULED, None)

    async def _catch_up_ledgers(self, jobs: list[Job], caught: set[Job]) -> None:
        groups: dict[int, tuple[Any, list[Job]]] = {}
        for job in jobs:
            ledger: Any = job._opts.locker or self._locker
            if ledger is None and self._elector is not None and hasattr(self._elector, "claim"):
                ledger = self._elector
            if ledger is None:
                continue
            groups.setdefault(id(ledger), (ledger, []))[1].append(job)
        for ledger, members in groups.values():
            try:
                last = await ledger.last_ticks([j._key for j in members])
            except Exception as exc:
                self._logger.warning("catch-up: reading the ledger failed: %r", exc)
                continue
            now = self._clock.now()
            for job in members:
                claimed = last.get(job._key)
                grace = job._opts.misfire_grace
                if claimed is None or grace is None or job._removed:
                    continue
                low = max(claimed, now - grace)
                if job._opts.coalesce:
                    latest = self._latest(job, now)
                    if latest is None or latest <= low:
                        continue
                    first = self._after(job, low)
                    if first is not None and first < latest:
                        before = self._latest(job, latest - _US) or first
                        self._missed(job, MissReason.COALESCED, first, before)
                    caught.add(job)
                    self._submit(job, latest, RunKind.CATCH_UP, None)
                else:
                    first = self._after(job, low)
                    if first is not None and first <= now:
                        # The newest 100 run; older ones are JobMissed(queue_full).
                        ticks, _ = self._walk_missed(job, first, now)
                        caught.add(job)
                        for tick in ticks:
                            self._submit(job, tick, RunKind.CATCH_UP, None)

    async def _watch_skew(self) -> None:
        """Measure the offset to each backend server's clock, round-trip corrected."""
        clock = self._clock
        sources = [b for b in self._backends() if hasattr(b, "server_time")]
        while True:
            for backend in sources:
                # The sample with the shortest round trip bounds the error best: a
                # stall during one read would skew it by half the stall.
                best: tuple[float, timedelta] | None = None
                for _ in range(3):
                    try:
                        before = clock.now()
                        mono = clock.monotonic()
                        server = await backend.server_time()
                        rtt = clock.monotonic() - mono
                    except Exception as exc:
                        self._logger.debug("clock skew: reading server time failed: %r", exc)
                        break
                    if best is None or rtt < best[0]:
                        best = (rtt, before + timedelta(seconds=rtt / 2) - server)
                if best is None:
                    continue
                skew = best[1]
                self._clock_skew = skew
                if abs(skew) > self._skew_threshold:
                    self._logger.warning(
                        "clock skew of %.3f s against %s",
                        skew.total_seconds(),
                        type(backend).__name__,
                    )
                    if self._events.wants(ClockSkewDetected):
                        self._events.emit(
                            ClockSkewDetected(
                                timestamp=clock.now(),
                                skew=skew,
                                threshold=self._skew_threshold,
                                source=type(backend).__name__,
                            )
                        )
            await clock.sleep_until(clock.monotonic() + 60.0)
