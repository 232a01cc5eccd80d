"""RunContext: what a running job can know about its own run."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    import anyio

    from ._events import RunKind
    from ._job import Job

__all__ = ("RunContext", "current_run")

_current: ContextVar[RunContext | None] = ContextVar("asyncron_run", default=None)


class RunContext:
    """The context of one run, injected into a job function by annotation and returned by
    :func:`current_run`. Read-only; ``cancelled`` turns True when the run's timeout
    passes or its lock or leadership is lost (plain functions should check it)."""

    # _cause and _done are the scheduler's bookkeeping of the run this context stands for.
    __slots__ = (
        "_cancel_scope",
        "_cancelled",
        "_cause",
        "_done",
        "_fencing_token",
        "_job",
        "_kind",
        "_task",
        "_tick",
    )

    def __init__(
        self,
        job: Job,
        tick: datetime,
        kind: RunKind,
        fencing_token: int | None,
        cancel_scope: anyio.CancelScope | None = None,
    ) -> None:
        self._job = job
        self._tick = tick
        self._kind = kind
        self._fencing_token = fencing_token
        self._cancel_scope = cancel_scope
        self._cancelled = False
        self._cause: BaseException | None = None
        self._done = False
        # The task a lost lock cancels, for a run whose only canceller is its lock (no
        # scope: see cancel_scope).
        self._task: asyncio.Task[Any] | None = None

    @property
    def job(self) -> Job:
        """The job this run belongs to."""
        return self._job

    @property
    def tick(self) -> datetime:
        """The scheduled instant this run stands for (UTC); ``clock.now()`` for run_now."""
        return self._tick

    @property
    def kind(self) -> RunKind:
        """``scheduled``, ``catch_up``, ``start`` or ``run_now``."""
        return self._kind

    @property
    def attempt(self) -> int:
        """The attempt number; always 1 (reserved for retries)."""
        return 1

    @property
    def fencing_token(self) -> int | None:
        """The lock's fencing token under a locker, else the leadership epoch, else None."""
        return self._fencing_token

    @property
    def cancelled(self) -> bool:
        """Whether the run was asked to stop (timeout, lock or leadership lost, shutdown)."""
        return self._cancelled

    @property
    def cancel_scope(self) -> anyio.CancelScope | None:
        """The run's cancel scope, for inspection: set for async runs that a timeout or
        lost leadership can cancel; None for runs that only shutdown or a lost lock can
        cancel (a lost lock cancels the run's task, once, as ``task.cancel()`` does; a
        scope per run was a fifth of a locked run's instructions) and in threads."""
        return self._cancel_scope

    def __repr__(self) -> str:
        return (
            f"RunContext(job={self._job.name or self._job.id!s}, tick={self._tick.isoformat()}, "
            f"kind={self._kind.value}, fencing_token={self._fencing_token})"
        )


def current_run() -> RunContext | None:
    """Return the context of the run this code executes in, or None outside a run
    (visible in worker threads too)."""
    return _current.get()
