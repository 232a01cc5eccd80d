"""Helpers for tests that run schedulers on the virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncron import Event, Scheduler
from asyncron.testing import VirtualClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)

#: ``start(**options)``: a started scheduler on the test's virtual clock.
Factory = Callable[..., Awaitable[Scheduler]]


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    """The instant ``minutes`` and ``seconds`` after the clock's start (2026-01-01Z)."""
    return T0 + timedelta(minutes=minutes, seconds=seconds)


class Recorder:
    """An event callback that keeps what it receives."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, *types: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, types)]


async def shut_down(scheduler: Scheduler, clock: VirtualClock) -> None:
    """Shut ``scheduler`` down, moving the virtual clock while it waits for runs."""
    task = asyncio.create_task(scheduler.shutdown())
    for _ in range(40):
        await clock.advance(seconds=1)
        if task.done():
            break
    await task


async def pause(clock: VirtualClock, seconds: float) -> None:
    """Take ``seconds`` of virtual time inside a job."""
    await clock.sleep_until(clock.monotonic() + seconds)
