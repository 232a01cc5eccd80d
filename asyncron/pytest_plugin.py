"""pytest fixtures for testing schedules on a virtual clock (registered as a plugin).

``asyncron_clock`` is a :class:`~asyncron.testing.VirtualClock` starting at
2026-01-01T00:00:00Z (override the ``asyncron_clock_start`` fixture to change it);
``asyncron_scheduler`` is a started :class:`~asyncron.Scheduler` on that clock, shut
down after the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio

from ._scheduler import Scheduler
from .testing import VirtualClock

__all__ = ("asyncron_clock", "asyncron_clock_start", "asyncron_scheduler")


@pytest.fixture
def asyncron_clock_start() -> datetime:
    """The wall time the virtual clock starts at; override in a conftest to change it."""
    return datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def asyncron_clock(asyncron_clock_start: datetime) -> VirtualClock:
    """A virtual clock: ``await asyncron_clock.advance(hours=1)`` runs what falls due."""
    return VirtualClock(asyncron_clock_start)


@pytest_asyncio.fixture
async def asyncron_scheduler(asyncron_clock: VirtualClock) -> AsyncIterator[Scheduler]:
    """A running scheduler on the virtual clock, shut down after the test (moving the
    clock through ``stop_timeout``, so a run still waiting on the clock cannot hang it)."""
    async with Scheduler(clock=asyncron_clock) as scheduler:
        try:
            yield scheduler
        finally:
            stopping = asyncio.ensure_future(scheduler.shutdown())
            while not stopping.done():
                await asyncron_clock.advance(1)
            await stopping
