"""The interface every scheduler adapter implements."""

from __future__ import annotations

import abc
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ("Adapter", "JobFunc")

#: A job body: ``async def body(job: int) -> None``.
JobFunc = Callable[[int], Coroutine[Any, Any, None]]


class Adapter(abc.ABC):
    """Drive one scheduler through the operations the scenarios need.

    Adds take a ``range`` of job numbers and loop inside the adapter, so the per-job
    cost measured is the scheduler's own call, not an extra await per job.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    @abc.abstractmethod
    def version(self) -> str:
        """The scheduler's version string."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the scheduler (empty) inside the running event loop."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop the scheduler without waiting for anything scheduled."""

    @abc.abstractmethod
    async def add_every(self, func: JobFunc, jobs: range, seconds: int, first: int) -> None:
        """Add ``func(job)`` for each job, every ``seconds``, first at epoch ``first``.

        ``first`` is a whole second; ticks are ``first + k * seconds``.
        """

    @abc.abstractmethod
    async def add_once(self, func: JobFunc, jobs: range, at: float) -> None:
        """Add ``func(job)`` for each job, to run once at epoch ``at``."""
