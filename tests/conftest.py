"""Shared fixtures: the real servers for backend tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._services import postgres_service, redis_service, unavailable


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
