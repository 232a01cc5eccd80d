"""Clocks: where asyncron reads the time and waits for it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import anyio

__all__ = ("Clock", "SystemClock")


@runtime_checkable
class Clock(Protocol):
    """The source of time for a scheduler; every timed wait in asyncron goes through it."""

    def now(self) -> datetime:
        """Return the current wall time, aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Return a monotonic time in seconds, for deadlines and waits."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Wait until :meth:`monotonic` reaches ``deadline``."""
        ...


class SystemClock:
    """The real clock: ``datetime.now(UTC)``, ``time.monotonic()`` and the event loop's timer."""

    __slots__ = ()

    def now(self) -> datetime:
        """Return the current wall time, aware, in UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """Return ``time.monotonic()``, the clock asyncio's timer runs on."""
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        """Wait until ``time.monotonic()`` reaches ``deadline``."""
        delay = deadline - time.monotonic()
        await anyio.sleep(delay if delay > 0 else 0)


def resolve_none(future: asyncio.Future[None]) -> None:
    """Resolve ``future`` unless it is done already (a wake-up or a release may come
    after its waiter gave up): the callback behind every internal one-shot wait."""
    if not future.done():
        future.set_result(None)
