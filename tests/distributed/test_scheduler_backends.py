"""A Scheduler on the real Redis and PostgreSQL backends, in one process.

The contract suite tests the backends alone; these tests check what the scheduler
makes of them: a lost lock cancels the run (``JobFailed(LockLostError)`` and
``LockLost``), an outage is reported and survived, the clock skew against the
server is measured, and each run's ``fencing_token`` is its lock's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from asyncron import (
    ClockSkewDetected,
    Event,
    JobFailed,
    JobMissed,
    JobStarted,
    LockFailed,
    LockLost,
    MissReason,
    RunContext,
    Scheduler,
    SchedulerState,
    every,
)
from asyncron.errors import LockLostError
from tests._services import free_port, fresh_prefix, start_private_redis, unavailable
from tests.distributed.worker import OffsetClock, to_us

pytestmark = pytest.mark.external_service

BACKENDS = ("redis", "postgres")


def _prefix() -> str:
    return fresh_prefix("sb", 10)


class Events:
    """Collects a scheduler's events; ``wait`` blocks (bounded) until one matches."""

    def __init__(self) -> None:
        self.seen: list[Event] = []
        self._changed = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.seen.append(event)
        self._changed.set()

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.seen if isinstance(e, kind)]

    async def wait(self, match: Callable[[Any], bool], within: float, what: str) -> Any:
        async def first() -> Any:
            while True:
                for event in self.seen:
                    if match(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(first(), within)
        except TimeoutError:
            pytest.fail(f"no {what} within {within} s; saw {[type(e).__name__ for e in self.seen]}")


def _locker(name: str, url: str, prefix: str, **options: Any) -> Any:
    if name == "redis":
        from asyncron.distributed.redis import RedisLocker

        return RedisLocker(url, prefix=prefix, **options)
    from asyncron.distributed.postgres import PostgresLocker

    return PostgresLocker(url, prefix=prefix, **options)


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(backend name, URL/DSN) of a real server."""
    fixture = "redis_url" if request.param == "redis" else "postgres_dsn"
    return request.param, str(request.getfixturevalue(fixture))


@contextlib.asynccontextmanager
async def admin(name: str, url: str) -> AsyncIterator[Any]:
    if name == "redis":
        from redis.asyncio import Redis

        client = Redis.from_url(url)
        try:
            yield client
        finally:
            await client.aclose()
    else:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            yield conn
        finally:
            await conn.close()


async def take_lock_away(name: str, client: Any, prefix: str, key: str) -> None:
    """Lose a held run lock the way production does: the key deleted behind the
    holder's back (Redis), the holder's backend terminated (PostgreSQL)."""
    if name == "redis":
        assert await client.delete(f"{prefix}:{{{key}}}:lock") == 1
        return
    from asyncron.distributed.postgres import advisory_key

    k1, k2 = advisory_key(prefix, key)
    rows = await client.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
        " AND granted AND classid::int = $1 AND objid::int = $2",
        k1,
        k2,
    )
    assert rows, f"nobody holds the advisory lock of {key!r}"


async def test_lock_loss_cancels_the_running_async_run(server: tuple[str, str]) -> None:
    """Deleting the run lock (Redis) or terminating its session (PostgreSQL) while a
    run is in progress cancels that run: ``LockLost`` and ``JobFailed(LockLostError)``."""
    name, url = server
    prefix = _prefix()
    events = Events()
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def long_run(ctx: RunContext) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            cancelled.append(ctx.cancelled)

    scheduler = Scheduler(locker=_locker(name, url, prefix, ttl=1.5))
    scheduler.subscribe(events, LockLost, JobFailed)
    scheduler.add_job(long_run, every(seconds=1), name="long")
    async with admin(name, url) as client, scheduler:
        await asyncio.wait_for(started.wait(), 10)
        lost_at = time.monotonic()
        await take_lock_away(name, client, prefix, "long")
        failed = await events.wait(lambda e: isinstance(e, JobFailed), 10, "JobFailed")
        detected = time.monotonic() - lost_at
        assert isinstance(failed.exception, LockLostError)
        assert [e.job_name for e in events.of(LockLost)] == ["long"]
        assert cancelled == [True]
        assert detected < 1.5, f"the loss took {detected:.2f} s to cancel the run (ttl 1.5 s)"
        print(f"[lock loss {name}] detected_and_cancelled_s={detected:.3f}")


async def test_redis_outage_is_reported_survived_and_recovered_from() -> None:
    """With the (private) Redis stopped, due runs fail to lock: ``LockFailed``, then
    ``JobMissed(backend_unavailable)`` once the next tick is due; the scheduler keeps
    running, raises nothing, and runs again by itself once Redis is back."""
    try:
        server = start_private_redis(free_port())
    except (FileNotFoundError, RuntimeError, OSError):
        unavailable("redis-server (for the outage test)")
    directory = server.directory
    port = server.port
    events = Events()
    ran: list[datetime] = []

    async def job(ctx: RunContext) -> None:
        ran.append(ctx.tick)

    scheduler = Scheduler(locker=_locker("redis", server.url, _prefix(), ttl=1.5))
    scheduler.subscribe(events, JobStarted, LockFailed, JobMissed)
    scheduler.add_job(job, every(seconds=1), name="beat")
    try:
        async with scheduler:
            await events.wait(lambda e: isinstance(e, JobStarted), 5, "a first run")
            await asyncio.to_thread(server.stop, remove=False)
            down = datetime.now(UTC)
            await events.wait(lambda e: isinstance(e, LockFailed), 5, "LockFailed")
            missed = await events.wait(
                lambda e: isinstance(e, JobMissed) and e.reason is MissReason.BACKEND_UNAVAILABLE,
                5,
                "JobMissed(backend_unavailable)",
            )
            assert missed.first_tick >= down - timedelta(seconds=1)
            assert scheduler.state is SchedulerState.RUNNING
            server = start_private_redis(port, directory)
            up = datetime.now(UTC)
            await events.wait(
                lambda e: isinstance(e, JobStarted) and e.tick > up, 10, "a run after recovery"
            )
            assert scheduler.state is SchedulerState.RUNNING
            assert len(set(ran)) == len(ran)
            print(
                f"[redis outage] lock_failed={len(events.of(LockFailed))} "
                f"missed={sum(e.count or 1 for e in events.of(JobMissed))} runs={len(ran)}"
            )
    finally:
        await asyncio.to_thread(server.stop, remove=False)
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


async def test_clock_skew_is_measured_and_reported(server: tuple[str, str]) -> None:
    """A scheduler whose wall clock runs 3 s ahead of the server measures
    ``clock_skew`` of about +3 s at start and emits ``ClockSkewDetected``."""
    name, url = server
    events = Events()
    scheduler = Scheduler(locker=_locker(name, url, _prefix()), clock=OffsetClock(3.0))
    scheduler.subscribe(events, ClockSkewDetected)
    async with scheduler:
        detected = await events.wait(
            lambda e: isinstance(e, ClockSkewDetected), 5, "ClockSkewDetected"
        )
        assert detected.skew.total_seconds() == pytest.approx(3.0, abs=0.5)
        assert detected.threshold == timedelta(seconds=1)
        skew = scheduler.clock_skew
        assert skew is not None and skew.total_seconds() == pytest.approx(3.0, abs=0.5)
        print(f"[skew {name}] clock_skew={skew.total_seconds():.3f} source={detected.source}")


async def test_fencing_token_is_the_locks_token_and_increases(server: tuple[str, str]) -> None:
    """``ctx.fencing_token`` of each run equals the token its lock holds in the
    backend (Redis: the lock value; PostgreSQL: the run's history row), and grows."""
    name, url = server
    prefix = _prefix()
    seen: list[tuple[int | None, int]] = []
    done = asyncio.Event()
    async with admin(name, url) as client:

        async def job(ctx: RunContext) -> None:
            if name == "redis":
                value = (await client.get(f"{prefix}:{{fenced}}:lock")).decode()
                stored = int(value.rsplit(":", 1)[1])
            else:
                table = f'"{prefix}_runs"'
                stored = await client.fetchval(
                    f"SELECT token FROM {table} WHERE job = $1 AND tick = $2",
                    "fenced",
                    to_us(ctx.tick),
                )
            seen.append((ctx.fencing_token, stored))
            if len(seen) == 3:
                done.set()

        scheduler = Scheduler(locker=_locker(name, url, prefix))
        scheduler.add_job(job, every(seconds=1), name="fenced")
        async with scheduler:
            await asyncio.wait_for(done.wait(), 10)
    tokens = [token for token, _ in seen]
    assert all(token == stored for token, stored in seen), seen
    assert all(isinstance(t, int) for t in tokens)
    assert tokens == sorted(set(tokens)), tokens  # strictly increasing


async def test_an_elector_claim_failing_in_an_outage_is_deferred_not_dropped() -> None:
    """Under a RedisElector (which claims each tick in its ledger), a Redis outage
    shorter than the lease makes the claims fail: each affected run emits
    ``LockFailed`` and is deferred (design §4), then runs once Redis is back — with
    misfire_grace, coalesce=False and overlap="wait" no tick is lost or doubled."""
    from asyncron.distributed.redis import RedisElector

    try:
        server = start_private_redis(free_port())
    except (FileNotFoundError, RuntimeError, OSError):
        unavailable("redis-server (for the outage test)")
    directory = server.directory
    port = server.port
    events = Events()
    ran: list[datetime] = []

    async def job(ctx: RunContext) -> None:
        ran.append(ctx.tick)

    scheduler = Scheduler(elector=RedisElector(server.url, prefix=_prefix(), ttl=8))
    scheduler.subscribe(events, JobStarted, LockFailed, JobMissed)
    scheduler.add_job(
        job,
        every(seconds=1),
        name="led",
        misfire_grace=10,
        coalesce=False,
        overlap="wait",
    )
    try:
        async with scheduler:
            await events.wait(lambda e: isinstance(e, JobStarted), 5, "a first run")
            first = ran[0]
            server.stop(remove=False)
            await events.wait(lambda e: isinstance(e, LockFailed), 5, "LockFailed")
            await asyncio.sleep(1)
            server = start_private_redis(port, directory)
            up = datetime.now(UTC)
            await events.wait(
                lambda e: isinstance(e, JobStarted) and e.tick > up, 10, "a run after recovery"
            )
            last = max(ran)
    finally:
        server.stop(remove=False)
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    expected = [
        first + timedelta(seconds=i) for i in range(int((last - first).total_seconds()) + 1)
    ]
    assert sorted(ran) == expected, f"missing {sorted(set(expected) - set(ran))}"
    assert not events.of(JobMissed), events.of(JobMissed)


async def test_a_lock_reply_lost_with_the_read_back_is_recognised_on_retry(
    redis_url: str,
) -> None:
    """The lock script ran (tick claimed, lock taken) but its reply was lost, and
    reading the key back failed too: the scheduler's retry must recognise the lock
    as its own and run the tick — not find it claimed and skip it (lost forever)."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from asyncron import JobSkipped
    from asyncron.distributed.redis import _LOCK, RedisLocker

    locker = RedisLocker(redis_url, prefix=_prefix(), ttl=5)
    faults = {"reply": 1, "read_back": 1}
    eval_chunks = locker._eval_chunks

    async def lossy(source: str, *args: Any) -> Any:
        replies = await eval_chunks(source, *args)
        if source is _LOCK and faults["reply"]:
            faults["reply"] -= 1
            raise RedisConnectionError("replies lost (injected)")
        return replies

    ran: list[datetime] = []
    events = Events()

    async def job(ctx: RunContext) -> None:
        ran.append(ctx.tick)

    scheduler = Scheduler(locker=locker)
    scheduler.subscribe(events, JobStarted, JobSkipped)
    scheduler.add_job(job, every(seconds=1), name="lossy")  # no grace: no catch-up MGET
    async with locker:
        client = locker.client
        mget = client.mget

        async def failing_mget(*args: Any, **kwargs: Any) -> Any:
            if faults["read_back"]:
                faults["read_back"] -= 1
                raise RedisConnectionError("read-back failed (injected)")
            return await mget(*args, **kwargs)

        client.mget = failing_mget  # type: ignore[method-assign]
        locker._eval_chunks = lossy  # type: ignore[method-assign]
        async with scheduler:
            first = await events.wait(
                lambda e: isinstance(e, (JobStarted, JobSkipped)), 5, "the first tick's outcome"
            )
    assert faults == {"reply": 0, "read_back": 0}
    outcomes = [(type(e).__name__, getattr(e, "reason", None)) for e in events.seen]
    assert isinstance(first, JobStarted), outcomes
    assert ran[0] == first.tick


async def test_catch_up_is_not_overtaken_by_a_tick_due_during_the_ledger_read(
    redis_url: str,
) -> None:
    """A new leader reads the ledger (slowly: across a tick boundary here) and must
    still run every missed tick within the grace, with coalesce=False: a regular tick
    that comes due during the read is held back (claimed first, it would make the
    older missed ticks refused by the high-water mark) and runs after them."""
    from redis.asyncio import Redis

    from asyncron.distributed.redis import RedisElector

    prefix = _prefix()
    seeded = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=4)
    client = Redis.from_url(redis_url)
    try:
        await client.set(f"{prefix}:{{caught}}:claim", to_us(seeded))
    finally:
        await client.aclose()
    elector = RedisElector(redis_url, prefix=prefix, ttl=5)
    read = elector.last_ticks

    async def slow_read(keys: Any) -> Any:
        found = await read(keys)
        await asyncio.sleep(math.ceil(time.time()) - time.time() + 0.05)
        return found

    elector.last_ticks = slow_read  # type: ignore[method-assign]
    ran: list[datetime] = []

    async def job(ctx: RunContext) -> None:
        ran.append(ctx.tick)

    scheduler = Scheduler(elector=elector)
    scheduler.add_job(
        job, every(seconds=1), name="caught", misfire_grace=20, coalesce=False, overlap="wait"
    )
    async with scheduler:
        await asyncio.sleep(2.5)
    expected = [seeded + timedelta(seconds=i) for i in range(1, 4)]
    assert all(tick in ran for tick in expected), (sorted(ran), expected)
