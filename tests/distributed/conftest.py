"""Fixtures for the coordination contract suite: one ``Backend`` per technology.

A ``Backend`` wraps a locker (and, where the backend has one, electors) with the
helpers the contract needs: ``force_loss(key)`` takes a held run lock away the way
the backend would lose it, ``outage()`` / ``recover()`` take the whole backend
down and bring it back. Every test gets its own key prefix, so tests never meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from asyncron._clock import SystemClock
from asyncron.distributed import MemoryElector, MemoryLocker
from tests._services import (
    PrivateServer,
    free_port,
    fresh_prefix,
    start_private_redis,
    unavailable,
)

BACKENDS = ("memory", "redis", "postgres")
SERVER_BACKENDS = ("redis", "postgres")


class OffsetClock(SystemClock):
    """The system clock with a monotonic offset that tests can jump forward, to
    simulate a process resumed after its deadlines passed (SIGSTOP, a long GC)."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 0.0

    def jump(self, seconds: float) -> None:
        """Move monotonic time forward without letting any task run."""
        self.offset += seconds

    def monotonic(self) -> float:
        """Return the system's monotonic time plus the offset."""
        return time.monotonic() + self.offset

    async def sleep_until(self, deadline: float) -> None:
        """Wait until :meth:`monotonic` reaches ``deadline``."""
        delay = deadline - self.monotonic()
        await asyncio.sleep(delay if delay > 0 else 0)


@dataclass
class Backend:
    """One coordination backend under test.

    ``new_locker`` / ``new_elector`` open another instance on the same store (the
    memory locker is shared, as in-process schedulers share it); everything opened
    is closed when the test ends.
    """

    name: str
    prefix: str
    new_locker: Callable[..., Awaitable[Any]]
    force_loss: Callable[[str], Awaitable[None]]
    go_down: Callable[[], Awaitable[None]]
    recover: Callable[[], Awaitable[None]]
    raw_claim: Callable[[str], Awaitable[int | None]]
    new_elector: Callable[..., Awaitable[Any]] | None = None
    locker: Any = None
    opened: list[Any] = field(default_factory=list)

    async def close(self, item: Any) -> None:
        """Close a locker or elector opened by ``new_*`` before the test ends."""
        if item in self.opened:
            self.opened.remove(item)
        await item.__aexit__(None, None, None)

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """Take the backend down for the body of the ``async with``, then recover it."""
        await self.go_down()
        try:
            yield
        finally:
            await self.recover()


def _prefix() -> str:
    return fresh_prefix("t")


# --------------------------------------------------------------------------- memory


@contextlib.asynccontextmanager
async def _memory_backend() -> AsyncIterator[Backend]:
    locker = MemoryLocker()

    async def new_locker(**_: Any) -> MemoryLocker:
        return locker  # one shared instance is how in-process schedulers coordinate

    async def force_loss(key: str) -> None:
        assert locker.lose(key), f"no lock held on {key!r}"

    async def go_down() -> None:
        locker.fail_with(ConnectionError("simulated outage"))

    async def recover() -> None:
        locker.fail_with(None)

    async def raw_claim(key: str) -> int | None:
        return None  # kept as integer µs internally, not exposed raw

    async def new_elector(**_: Any) -> MemoryElector:
        return MemoryElector()

    async with locker:
        yield Backend(
            "memory", _prefix(), new_locker, force_loss, go_down, recover, raw_claim,
            new_elector, locker,
        )  # fmt: skip


# ---------------------------------------------------------------------------- redis


def _stop_keeping_data(server: PrivateServer) -> None:
    """SIGTERM a private redis-server and wait for it, keeping its directory (AOF)."""
    server.stop(remove=False)


def _start_redis(port: int | None = None, directory: str | None = None) -> PrivateServer:
    return start_private_redis(port, directory)


@contextlib.asynccontextmanager
async def _redis_backend(url: str | None, *, private: bool) -> AsyncIterator[Backend]:
    from redis.asyncio import Redis

    from asyncron.distributed.redis import RedisElector, RedisLocker

    server: PrivateServer | None = None
    if private:
        try:
            server = await asyncio.to_thread(_start_redis)
        except (FileNotFoundError, RuntimeError, OSError):
            unavailable("redis-server (for outage tests)")
        assert server is not None
        url = server.url
    assert url is not None
    prefix = _prefix()
    admin = Redis.from_url(url)
    opened: list[Any] = []

    async def new_locker(**options: Any) -> RedisLocker:
        locker = RedisLocker(url, prefix=prefix, **{"ttl": 5, **options})
        await locker.__aenter__()
        opened.append(locker)
        return locker

    async def new_elector(**options: Any) -> RedisElector:
        elector = RedisElector(url, prefix=prefix, **{"ttl": 1, **options})
        await elector.__aenter__()
        opened.append(elector)
        return elector

    async def force_loss(key: str) -> None:
        assert await admin.delete(f"{prefix}:{{{key}}}:lock") == 1, f"no lock held on {key!r}"

    async def go_down() -> None:
        assert server is not None, "outages need the private server (outage_backend)"
        await asyncio.to_thread(_stop_keeping_data, server)

    async def recover() -> None:
        nonlocal server
        assert server is not None
        port = server.port
        server = await asyncio.to_thread(_start_redis, port, server.directory)

    async def raw_claim(key: str) -> int | None:
        value = await admin.get(f"{prefix}:{{{key}}}:claim")
        return None if value is None else int(value)

    try:
        backend = Backend(
            "redis", prefix, new_locker, force_loss, go_down, recover, raw_claim, new_elector,
            opened=opened,
        )  # fmt: skip
        backend.locker = await new_locker()
        yield backend
    finally:
        for item in reversed(opened):
            await item.__aexit__(None, None, None)
        await admin.aclose()
        if server is not None:
            await asyncio.to_thread(server.stop)


# ------------------------------------------------------------------------- postgres


class _Proxy:
    """A TCP proxy in front of PostgreSQL whose outage drops every connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


@contextlib.asynccontextmanager
async def _postgres_backend(dsn: str, *, private: bool) -> AsyncIterator[Backend]:
    postgres = pytest.importorskip(
        "asyncron.distributed.postgres", reason="asyncron.distributed.postgres not written yet"
    )
    from urllib.parse import urlparse

    import asyncpg

    parsed = urlparse(dsn)
    direct_dsn = dsn  # the admin connection bypasses the proxy, so outages spare it
    proxy: _Proxy | None = None
    if private:
        proxy = _Proxy((parsed.hostname or "127.0.0.1", parsed.port or 5432))
        await proxy.start()
        dsn = parsed._replace(
            netloc=f"{parsed.username or 'postgres'}@127.0.0.1:{proxy.port}"
        ).geturl()
    prefix = _prefix()
    admin = await asyncpg.connect(direct_dsn)
    opened: list[Any] = []

    async def new_locker(**options: Any) -> Any:
        locker = postgres.PostgresLocker(dsn, prefix=prefix, **{"ttl": 5, **options})
        await locker.__aenter__()
        opened.append(locker)
        await locker.create_schema()
        return locker

    elector_cls = getattr(postgres, "PostgresElector", None)

    async def new_elector(**options: Any) -> Any:
        elector = elector_cls(dsn, prefix=prefix, **{"ttl": 1, **options})  # type: ignore[misc]
        await elector.__aenter__()
        opened.append(elector)
        return elector

    async def force_loss(key: str) -> None:
        pids = await _advisory_holders(admin, postgres, prefix, key)
        assert pids, f"no advisory lock held on {key!r}"
        for pid in pids:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)

    async def go_down() -> None:
        assert proxy is not None, "outages need the proxy (outage_backend)"
        await proxy.stop()

    async def recover() -> None:
        assert proxy is not None
        await proxy.start()

    async def raw_claim(key: str) -> int | None:
        table = '"' + f"{prefix}_claims".replace('"', '""') + '"'
        value = await admin.fetchval(f"SELECT last_tick FROM {table} WHERE key = $1", key)
        return None if value is None else int(value)

    try:
        backend = Backend(
            "postgres", prefix, new_locker, force_loss, go_down, recover, raw_claim,
            new_elector if elector_cls is not None else None, opened=opened,
        )  # fmt: skip
        backend.locker = await new_locker()
        yield backend
    finally:
        for item in reversed(opened):
            with contextlib.suppress(Exception):
                await item.__aexit__(None, None, None)
        await admin.close()
        if proxy is not None:
            await proxy.stop()


async def _advisory_holders(admin: Any, postgres: Any, prefix: str, key: str) -> list[int]:
    """The backend pids holding the advisory lock of ``key`` (keys from the module)."""
    keys = postgres.advisory_key(prefix, key)
    rows = await admin.fetch(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid::int = $1 AND objid::int = $2",
        *keys,
    )
    return [row["pid"] for row in rows]


# ------------------------------------------------------------------------- fixtures


def _skip_unless_service(request: pytest.FixtureRequest, name: str) -> str | None:
    if name == "redis":
        return str(request.getfixturevalue("redis_url"))
    if name == "postgres":
        return str(request.getfixturevalue("postgres_dsn"))
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the server-backed parametrisations of this directory's backend fixtures
    ``external_service`` (the hook sees every item of the session)."""
    ours = {"backend", "outage_backend", "elector_backend"}
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or not ours & set(getattr(item, "fixturenames", ())):
            continue
        if any(callspec.params.get(name) in SERVER_BACKENDS for name in ours):
            item.add_marker(pytest.mark.external_service)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A backend on the shared server (memory, Redis, PostgreSQL), fresh prefix per test."""
    async with _open(request, request.param, private=False) as opened:
        yield opened


@pytest.fixture(params=BACKENDS)
async def outage_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A backend that can be taken down: a private redis-server restarted on its port
    and directory, a TCP proxy in front of PostgreSQL, ``fail_with`` in memory."""
    async with _open(request, request.param, private=True) as opened:
        yield opened


@pytest.fixture(params=SERVER_BACKENDS)
async def elector_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A server backend with electors (Redis; PostgreSQL once it has an elector)."""
    async with _open(request, request.param, private=False) as opened:
        if opened.new_elector is None:
            pytest.skip(f"{opened.name} has no elector yet")
        yield opened


@contextlib.asynccontextmanager
async def _open(
    request: pytest.FixtureRequest, name: str, *, private: bool
) -> AsyncIterator[Backend]:
    url = _skip_unless_service(request, name)
    if name == "memory":
        factory = _memory_backend()
    elif name == "redis":
        factory = _redis_backend(url, private=private)
    else:
        assert url is not None
        factory = _postgres_backend(url, private=private)
    async with factory as opened:
        yield opened


@pytest.fixture
def offset_clock() -> Iterator[OffsetClock]:
    """A system clock whose monotonic time a test can jump forward."""
    yield OffsetClock()
