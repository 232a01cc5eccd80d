"""Shared fixtures: the real servers for backend tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from asyncron import Scheduler
from asyncron.testing import VirtualClock
from tests._services import postgres_service, redis_service, unavailable
from tests._virtual import Factory, shut_down


@pytest.fixture(scope="session")
def _redis_url_session() -> Iterator[str | None]:
    with redis_service() as url:
        yield url


@pytest.fixture(scope="session")
def _postgres_dsn_session() -> Iterator[str | None]:
    with postgres_service() as dsn:
        yield dsn


@pytest.fixture
def redis_url(_redis_url_session: str | None) -> str:
    """The URL of a real Redis server (skipped on a laptop without one, failed in CI)."""
    if _redis_url_session is None:
        unavailable("Redis")
    assert _redis_url_session is not None
    return _redis_url_session


@pytest.fixture
def postgres_dsn(_postgres_dsn_session: str | None) -> str:
    """The DSN of a real PostgreSQL server (skipped on a laptop without one, failed in CI)."""
    if _postgres_dsn_session is None:
        unavailable("PostgreSQL")
    assert _postgres_dsn_session is not None
    return _postgres_dsn_session


@pytest.fixture
def clock(asyncron_clock: VirtualClock) -> VirtualClock:
    """The test's virtual clock (the plugin's, starting at 2026-01-01T00:00:00Z)."""
    return asyncron_clock


@pytest_asyncio.fixture
async def start(clock: VirtualClock) -> AsyncIterator[Factory]:
    """A factory of started schedulers on the virtual clock, shut down after the test
    (moving the clock past ``stop_timeout`` if runs are still in progress)."""
    started: list[Scheduler] = []

    async def factory(**options: Any) -> Scheduler:
        scheduler = Scheduler(clock=clock, **options)
        await scheduler.start()
        started.append(scheduler)
        return scheduler

    yield factory
    for scheduler in started:
        await shut_down(scheduler, clock)


@pytest_asyncio.fixture
async def scheduler(start: Factory) -> Scheduler:
    """A started scheduler on the virtual clock."""
    return await start()
