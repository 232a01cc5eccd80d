"""The Job handle, job options and their validation, and job-function introspection."""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from ._context import RunContext
from ._events import EventCallback, RunOutcome
from ._time import as_duration, localize
from .errors import ConfigurationError, InvalidJobError, JobLookupError

if TYPE_CHECKING:
    from ._scheduler import Scheduler
    from ._schedules import Schedule
    from .distributed.protocols import Locker

__all__ = ("NAMESPACE", "Job", "JobOptions")

#: The namespace of job ids derived from names: ``uuid5(NAMESPACE, name)``.
NAMESPACE = uuid.UUID("6f1d3c9e-2f45-5b7a-9c1e-a5c7d0e8b4f2")

_UUID_NEW = uuid.UUID.__new__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown
_uuid_random = random.Random()
# Forked workers (gunicorn, multiprocessing) must not draw the same ids.
os.register_at_fork(after_in_child=_uuid_random.seed)


def _make_uuid(value: int) -> uuid.UUID:
    # uuid.UUID.__init__ validates its arguments at length; these ints are well formed.
    made = _UUID_NEW(uuid.UUID)
    object.__setattr__(made, "int", value)
    object.__setattr__(made, "is_safe", _SAFE_UNKNOWN)
    return made


def name_uuid(name: str) -> uuid.UUID:
    """``uuid.uuid5(NAMESPACE, name)``, built without UUID's slow validating constructor."""
    digest = hashlib.sha1(NAMESPACE.bytes + name.encode(), usedforsecurity=False).digest()
    value = int.from_bytes(digest[:16])
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    value = (value & ~(0xF000 << 64)) | (5 << 76)  # version 5
    return _make_uuid(value)


def random_uuid() -> uuid.UUID:
    """A version-4 UUID (ids need to be unique, not secret)."""
    value = _uuid_random.getrandbits(128)
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)
    value = (value & ~(0xF000 << 64)) | (4 << 76)
    return _make_uuid(value)


BeforeRun = Callable[[RunContext], "bool | Awaitable[bool]"]


#: The one ``start_at="now"`` object options hold, so checks can use ``is``.
START_NOW: Literal["now"] = "now"


@dataclass(frozen=True, slots=True)
class JobOptions:
    """A job's validated options; shared between jobs when equal to the defaults."""

    max_instances: int = 1
    overlap: Literal["skip", "wait"] = "skip"
    limit_runs: int | None = None
    start_at: datetime | Literal["now"] | None = None
    stop_at: datetime | None = None
    from_completion: bool = False
    misfire_grace: timedelta | None = None
    coalesce: bool = True
    jitter: timedelta | None = None
    timeout: timedelta | None = None
    before_run: BeforeRun | None = None
    listeners: tuple[EventCallback, ...] = ()
    locker: Locker | None = None
    distributed: bool = True
    on_lock_lost: Literal["cancel", "continue"] = "cancel"
    #: Derived: nothing wraps a run's call (no jitter, timeout, before_run, listeners,
    #: limit_runs or misfire_grace), so the runner may take its short path.
    _bare: bool = field(default=False, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "_bare",
            self.jitter is None
            and self.timeout is None
            and self.before_run is None
            and not self.listeners
            and self.limit_runs is None
            and self.misfire_grace is None,
        )


OPTION_NAMES = frozenset(f.name for f in fields(JobOptions) if f.init)
_DEFAULT_OPTIONS = JobOptions()


def _check_bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(field, value, "True or False")
    return value


def _check_positive_int(field: str, value: Any, *, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            field, value, "an integer >= 1" + (" or None" if allow_none else "")
        )
    return value


def _check_choice(field: str, value: Any, choices: tuple[str, ...]) -> Any:
    if value not in choices:
        raise ConfigurationError(field, value, " or ".join(repr(c) for c in choices))
    return value


def _check_datetime(field: str, value: Any, zone: ZoneInfo) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ConfigurationError(field, value, "a datetime (aware, or naive in the job's zone)")
    if value.tzinfo is None:
        return localize(value, zone)
    return value.astimezone(UTC)


_OPTIONS_CACHE: dict[Any, JobOptions] = {}


def build_options(given: Mapping[str, Any], zone: ZoneInfo) -> JobOptions:
    """Validate job options (already merged with the scheduler's ``job_defaults``).

    Options are immutable, so jobs given equal options share one validated instance.
    """
    if not given:
        return _DEFAULT_OPTIONS
    # Value types are in the key so that, say, True never passes for 1. (Keyword order
    # is part of it too: a different order only misses the cache.)
    if len(given) == 1:  # the common case, as a flat tuple (about half the cost)
        ((name, value),) = given.items()
        key: Any = (zone, name, value, type(value))
    else:
        key = (zone, *given.items(), *map(type, given.values()))
    try:
        cached = _OPTIONS_CACHE.get(key)
    except TypeError:  # an unhashable value: validate it every time
        cached = key = None
    if cached is not None:
        return cached
    opts = _build_options(given, zone)
    if key is not None:
        if len(_OPTIONS_CACHE) >= 1024:
            _OPTIONS_CACHE.clear()
        _OPTIONS_CACHE[key] = opts
    return opts


def _build_options(given: Mapping[str, Any], zone: ZoneInfo) -> JobOptions:
    unknown = set(given) - OPTION_NAMES
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigurationError(
            name, given[name], f"a job option: {', '.join(sorted(OPTION_NAMES))}"
        )
    values: dict[str, Any] = {}
    for key, value in given.items():
        if key in ("max_instances",):
            values[key] = _check_positive_int(key, value, allow_none=False)
        elif key == "limit_runs":
            values[key] = _check_positive_int(key, value, allow_none=True)
        elif key == "overlap":
            values[key] = _check_choice(key, value, ("skip", "wait"))
        elif key == "on_lock_lost":
            values[key] = _check_choice(key, value, ("cancel", "continue"))
        elif key in ("from_completion", "coalesce", "distributed"):
            values[key] = _check_bool(key, value)
        elif key in ("misfire_grace", "timeout"):
            values[key] = as_duration(
                key, value, allow_zero=key == "misfire_grace", allow_none=True
            )
        elif key == "jitter":
            jitter = as_duration(key, value, allow_none=True)
            values[key] = jitter if jitter else None
        elif key == "start_at":
            values[key] = START_NOW if value == "now" else _check_datetime(key, value, zone)
        elif key == "stop_at":
            values[key] = _check_datetime(key, value, zone)
        elif key == "before_run":
            if value is not None and not callable(value):
                raise ConfigurationError(key, value, "a callable taking a RunContext, or None")
            values[key] = value
        elif key == "listeners":
            if value is None:
                value = ()
            if callable(value):
                value = (value,)
            if not isinstance(value, Iterable) or not all(callable(c) for c in value):
                raise ConfigurationError(key, value, "a sequence of callables taking an event")
            values[key] = tuple(value)
        elif key == "locker":
            if value is not None and not (hasattr(value, "lock") and hasattr(value, "last_ticks")):
                raise ConfigurationError(key, value, "a Locker (lock() and last_ticks()) or None")
            values[key] = value
    opts = JobOptions(**values)
    start_at, stop_at = opts.start_at, opts.stop_at
    if isinstance(start_at, datetime) and stop_at is not None and stop_at <= start_at:
        raise ConfigurationError(
            "stop_at", stop_at, f"a time after start_at={start_at.isoformat()}"
        )
    if opts.locker is not None and not opts.distributed:
        raise ConfigurationError("locker", opts.locker, "None when distributed=False")
    return opts if opts != _DEFAULT_OPTIONS else _DEFAULT_OPTIONS


# --- job functions ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FuncInfo:
    """What add_job learns once about a job function."""

    is_async: bool
    ctx_param: str | None
    signature: inspect.Signature | None
    min_pos: int
    max_pos: int  # -1: *args
    simple: bool  # positional-or-keyword parameters only (fast argument check)


_func_cache: dict[Any, FuncInfo] = {}


def _unwrap(func: Any) -> Any:
    while isinstance(func, functools.partial):
        func = func.func
    return func


def is_async_callable(func: Any) -> bool:
    """Whether calling ``func`` returns a coroutine (partials unwrapped, __call__ checked)."""
    target = _unwrap(func)
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(type(target), "__call__", None)  # noqa: B004
    return call is not None and inspect.iscoroutinefunction(call) and not inspect.isroutine(target)


def _is_ctx_annotation(annotation: Any) -> bool:
    if annotation is RunContext:
        return True
    if isinstance(annotation, str):
        return annotation.rsplit(".", 1)[-1].strip("'\" ") == "RunContext"
    return False


def inspect_function(func: Any) -> FuncInfo:
    """Decide, once per function, whether it is async and which parameter takes the
    RunContext (by annotation; string annotations are never evaluated)."""
    try:
        cached = _func_cache.get(func)
    except TypeError:  # unhashable callable
        cached = None
    if cached is not None:
        return cached
    try:
        sig = inspect.signature(func, eval_str=False)
    except (TypeError, ValueError):
        sig = None
    ctx_param = None
    min_pos = max_pos = 0
    simple = sig is not None
    if sig is not None:
        ctx_params = [p.name for p in sig.parameters.values() if _is_ctx_annotation(p.annotation)]
        if len(ctx_params) > 1:
            raise InvalidJobError(
                f"{func!r} has several RunContext parameters ({', '.join(ctx_params)}); at most one"
            )
        ctx_param = ctx_params[0] if ctx_params else None
        for p in sig.parameters.values():
            if p.name == ctx_param:
                if p.kind is p.POSITIONAL_ONLY:
                    raise InvalidJobError(
                        f"{func!r}: the RunContext parameter {p.name!r} cannot be positional-only"
                    )
                continue
            if p.kind is p.POSITIONAL_OR_KEYWORD:
                max_pos += 1
                if p.default is p.empty:
                    min_pos += 1
            else:
                simple = False
    info = FuncInfo(is_async_callable(func), ctx_param, sig, min_pos, max_pos, simple)
    try:
        if len(_func_cache) < 10_000:
            _func_cache[func] = info
    except TypeError:
        pass
    return info


def check_arguments(
    func: Any, info: FuncInfo, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> None:
    """Bind args/kwargs against the signature; raise InvalidJobError on a mismatch."""
    sig = info.signature
    if sig is None:
        return
    if info.ctx_param is not None and info.ctx_param in kwargs:
        raise InvalidJobError(
            f"{func!r}: {info.ctx_param!r} takes the RunContext; do not pass it in kwargs"
        )
    if info.simple and not kwargs and info.min_pos <= len(args) <= info.max_pos:
        return
    bind_kwargs = dict(kwargs)
    if info.ctx_param is not None:
        bind_kwargs[info.ctx_param] = None
    try:
        sig.bind(*args, **bind_kwargs)
    except TypeError as exc:
        raise InvalidJobError(f"args/kwargs do not fit {func!r}{sig}: {exc}") from exc


def default_key(func: Any) -> tuple[str, str | None]:
    """The coordination key of an unnamed job, and why it would be unstable (or None)."""
    target = func
    if isinstance(func, functools.partial):
        return repr(func), "a functools.partial"
    if inspect.ismethod(target):
        return f"{target.__module__}:{target.__qualname__}", "a bound method"
    qualname = getattr(target, "__qualname__", None)
    module = getattr(target, "__module__", None)
    if qualname is None or module is None:
        return repr(func), "a callable instance"
    if qualname == "<lambda>" or qualname.endswith(".<lambda>"):
        return f"{module}:{qualname}", "a lambda"
    if "<locals>" in qualname:
        return f"{module}:{qualname}", "a nested function"
    return f"{module}:{qualname}", None


# --- the handle -----------------------------------------------------------------


class Job:
    """A handle on one job in a scheduler; also the scheduler's per-job state.

    Readable properties stay readable after removal; methods then raise
    :class:`~asyncron.JobLookupError`.
    """

    __slots__ = (
        "__weakref__",
        "_active",
        "_args",
        "_bare",
        "_bare_locked",
        "_batcher",
        "_coordinated",
        "_func",
        "_id",
        "_info",
        "_key",
        "_kwargs",
        "_last_run",
        "_limit_count",
        "_name",
        "_next_tick",
        "_opts",
        "_paused",
        "_removed",
        "_run_count",
        "_schedule",
        "_scheduler",
        "_tags",
        "_version",
        "_waiting",
    )

    def __init__(
        self,
        scheduler: Scheduler,
        job_id: uuid.UUID | None,
        name: str | None,
        key: str,
        func: Callable[..., Any],
        info: FuncInfo,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        schedule: Schedule,
        opts: JobOptions,
        tags: frozenset[str],
        coordinated: bool,
    ) -> None:
        self._scheduler = scheduler
        self._id = job_id
        self._name = name
        self._key = key
        self._func = func
        self._info = info
        self._args = args
        self._kwargs = kwargs
        self._schedule = schedule
        self._opts = opts
        self._tags = tags
        self._coordinated = coordinated
        self._next_tick: datetime | None = None
        self._version = 0
        self._paused = False
        self._removed = False
        self._active = 0
        self._waiting: deque[Any] | None = None
        self._run_count = 0
        self._limit_count = 0
        self._last_run: datetime | None = None
        self._bare = self._bare_locked = False
        #: The batch locker of its scheduled ticks, if any (set by the scheduler).
        self._batcher: Any = None
        self._refresh_bare()

    def _refresh_bare(self) -> None:
        """Whether a run of this job is just an awaited call (the runner's short path);
        recomputed whenever its options or coordination change."""
        info = self._info
        # _bare_locked: the same, but for a lock taken in a batch (see _run_locked).
        self._bare_locked = self._opts._bare and info.is_async and info.ctx_param is None
        self._bare = self._bare_locked and not self._coordinated

    # --- readable properties
    @property
    def id(self) -> uuid.UUID:
        """The job's id: chosen, ``uuid5(NAMESPACE, name)`` for a named job, else random."""
        job_id = self._id
        if job_id is None:
            # Computed on first use: building UUIDs dominated the cost of add_job.
            job_id = self._id = name_uuid(self._name) if self._name is not None else random_uuid()
        return job_id

    @property
    def name(self) -> str | None:
        """The job's unique name, if it has one."""
        return self._name

    @property
    def key(self) -> str:
        """The coordination key: the name, else ``module:qualname`` of the function."""
        return self._key

    @property
    def func(self) -> Callable[..., Any]:
        """The job function."""
        return self._func

    @property
    def tags(self) -> frozenset[str]:
        """The job's tags."""
        return self._tags

    @property
    def schedule(self) -> Schedule:
        """The schedule, with its zone resolved."""
        return self._schedule

    @property
    def tz(self) -> ZoneInfo | None:
        """The zone of the schedule (None for schedules that ignore zones)."""
        return self._schedule.zone

    @property
    def options(self) -> JobOptions:
        """The job's validated options."""
        return self._opts

    @property
    def paused(self) -> bool:
        """Whether the job is paused."""
        return self._paused

    @property
    def removed(self) -> bool:
        """Whether the job has left its scheduler."""
        return self._removed

    @property
    def next_run(self) -> datetime | None:
        """The next tick (UTC), or None when the schedule is exhausted or the job removed."""
        return None if self._removed else self._next_tick

    @property
    def last_run(self) -> datetime | None:
        """The tick of the latest run started here (UTC)."""
        return self._last_run

    @property
    def run_count(self) -> int:
        """Runs started here, scheduled and run_now."""
        return self._run_count

    @property
    def running(self) -> int:
        """Runs of this job in progress here, plus its ticks queued for the global limit
        (ticks queued for an overlap slot are counted by ``Scheduler.waiting_runs``)."""
        return self._active

    def next_runs(self, n: int) -> list[datetime]:
        """The next ``n`` ticks (fewer if the schedule ends first)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigurationError("n", n, "an integer >= 0")
        return self._scheduler._preview(self, n)

    # --- methods
    def _check(self) -> None:
        if self._removed:
            raise JobLookupError(self._name or self.id)

    async def run_now(self) -> RunOutcome:
        """Run the job now, outside its schedule, and return the outcome.

        Obeys the overlap rule, the global limit, the elector and the run lock; never
        claims a tick, never moves ``next_run``, does not count toward ``limit_runs``.
        A refusal is returned as a skipped outcome; the job's exception is never raised.
        """
        self._check()
        return await self._scheduler._run_now(self)

    def pause(self) -> None:
        """Stop starting runs; due ticks are skipped as ``paused``."""
        self._check()
        self._scheduler.pause_job(self)

    def resume(self) -> None:
        """Start runs again from the next tick."""
        self._check()
        self._scheduler.resume_job(self)

    def remove(self) -> None:
        """Remove the job; a run in progress is not cancelled."""
        self._check()
        self._scheduler.remove_job(self)

    def __repr__(self) -> str:
        label = f"name={self._name!r}" if self._name else f"id={self.id!s}"
        return f"<Job {label} schedule={self._schedule!r} next_run={self.next_run}>"


_NO_TAGS: frozenset[str] = frozenset()


def normalize_tags(tags: Any) -> frozenset[str]:
    """Validate ``tags``: a string or an iterable of strings."""
    if tags is None:
        return _NO_TAGS
    if isinstance(tags, str):
        return frozenset((tags,))
    if isinstance(tags, Sequence | set | frozenset) and all(isinstance(t, str) for t in tags):
        return frozenset(tags)
    raise ConfigurationError("tags", tags, "a string or a collection of strings")
