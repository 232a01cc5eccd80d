"""What is specific to the PostgreSQL backends: advisory keys, dedicated connections,
their loss, PgBouncer detection, run history and the one-statement lock path.

The behaviour every backend shares is in ``test_contract.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from asyncron._clock import SystemClock
from asyncron._time import to_us
from asyncron.distributed import BatchLocker, ClaimLedger, Elector, Lock, ServerClock
from asyncron.errors import ConfigurationError, LockHeld, LockLostError, TickClaimed
from tests._services import PG_TABLES, fresh_prefix

postgres = pytest.importorskip("asyncron.distributed.postgres")
asyncpg = pytest.importorskip("asyncpg")

PostgresElector = postgres.PostgresElector
PostgresLock = postgres.PostgresLock
PostgresLocker = postgres.PostgresLocker
advisory_key = postgres.advisory_key

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def tick(seconds: float) -> datetime:
    """The tick ``seconds`` after 2030-01-01T00:00Z."""
    return T0 + timedelta(seconds=seconds)


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` until true, failing after ``within`` seconds."""
    for _ in range(round(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    assert predicate(), f"not true within {within} s"


def session_index(prefix: str, key: str, connections: int = 2) -> int:
    """Which lock connection a key uses (the locker's rule)."""
    return int.from_bytes(postgres._digest(prefix, key), "big") % connections


def keys_on(prefix: str, index: int, count: int = 1) -> list[str]:
    """``count`` keys that use lock connection ``index`` of two."""
    found = [f"job-{n}" for n in range(200) if session_index(prefix, f"job-{n}") == index]
    return found[:count]


class OffsetClock(SystemClock):
    """The system clock, with monotonic time a test can jump forward."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        """The system's monotonic time plus the offset."""
        return time.monotonic() + self.offset

    async def sleep_until(self, deadline: float) -> None:
        """Wait until :meth:`monotonic` reaches ``deadline``."""
        await asyncio.sleep(max(0.0, deadline - self.monotonic()))


class _FakeConnection:
    """Answers ``SELECT pg_backend_pid()`` with the given pids, in turn."""

    def __init__(self, *pids: int) -> None:
        self._pids = list(pids)

    async def fetchval(self, query: str) -> int:
        assert "pg_backend_pid" in query
        return self._pids.pop(0)


class TestAdvisoryKey:
    """The advisory key of a coordination key is frozen: every version must agree."""

    def test_digest_is_pinned(self) -> None:
        """blake2b-64 of prefix NUL key, split into two signed int32 halves."""
        assert advisory_key("asyncron", "cleanup") == (-979972188, -1578521844)
        assert advisory_key("asyncron", "report") == (747530339, -673976058)

    def test_prefix_and_key_are_separated(self) -> None:
        """The NUL separator keeps ("ab", "c") and ("a", "bc") apart."""
        assert advisory_key("ab", "c") != advisory_key("a", "bc")


class TestPgBouncerDetection:
    """Transaction pooling shows as a backend pid that changes on one connection."""

    async def test_a_changing_backend_pid_raises_configuration_error(self) -> None:
        """Two reads of pg_backend_pid() that differ fail loudly, naming PgBouncer's mode."""
        with pytest.raises(ConfigurationError, match="transaction pooling") as caught:
            await postgres._check_session_pinned(_FakeConnection(101, 202))
        assert "101" in str(caught.value) and "202" in str(caught.value)

    async def test_a_stable_backend_pid_is_returned(self) -> None:
        """A direct connection answers the same pid twice, which is returned."""
        assert await postgres._check_session_pinned(_FakeConnection(7, 7)) == 7


class TestOptions:
    """Bad options fail at construction, naming the option."""

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"prefix": ""}, "prefix"),
            ({"prefix": "x" * 49}, "prefix"),
            ({"lock_connections": 0}, "lock_connections"),
            ({"lock_connections": True}, "lock_connections"),
            ({"ttl": 0}, "ttl"),
            ({"ttl": 3, "heartbeat": 2}, "heartbeat"),
            ({"history_ttl": -1}, "history_ttl"),
            ({"owner": ""}, "owner"),
        ],
    )
    def test_bad_locker_options(self, options: dict[str, Any], field: str) -> None:
        """Each bad locker option raises ConfigurationError for its field."""
        with pytest.raises(ConfigurationError) as caught:
            PostgresLocker("postgresql://localhost/x", **options)
        assert caught.value.field == field

    def test_dsn_or_pool_must_be_one_of_them(self) -> None:
        """Anything but a DSN string or an asyncpg.Pool is refused."""
        with pytest.raises(ConfigurationError, match="dsn_or_pool"):
            PostgresLocker(42)
        with pytest.raises(ConfigurationError, match="name"):
            PostgresElector("postgresql://localhost/x", name="")

    async def test_calls_before_entry_say_so(self) -> None:
        """Using a locker that was never entered raises a RuntimeError that says how."""
        with pytest.raises(RuntimeError, match="async with"):
            await PostgresLocker("postgresql://localhost/x").lock("job", None)


@pytest.fixture
async def prefix(postgres_dsn: str) -> AsyncIterator[str]:
    """A fresh table and key prefix; its tables are dropped after the test."""
    value = fresh_prefix("t")
    yield value
    admin = await asyncpg.connect(postgres_dsn)
    try:
        for table in PG_TABLES:
            await admin.execute(f'DROP TABLE IF EXISTS "{value}_{table}"')
    finally:
        await admin.close()


@pytest.fixture
async def admin(postgres_dsn: str) -> AsyncIterator[Any]:
    """A direct connection for inspecting and disturbing the server."""
    conn = await asyncpg.connect(postgres_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def open_locker(
    postgres_dsn: str, prefix: str
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Open ``PostgresLocker(dsn, prefix=prefix, **options)``; closed after the test."""
    opened: list[Any] = []

    async def open_(**options: Any) -> Any:
        locker = PostgresLocker(postgres_dsn, prefix=prefix, **options)
        await locker.__aenter__()
        opened.append(locker)
        return locker

    yield open_
    for locker in reversed(opened):
        await locker.__aexit__(None, None, None)


async def holder_pids(admin: Any, prefix: str, key: str) -> list[int]:
    """The backend pids holding the advisory lock of ``key``."""
    rows = await admin.fetch(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid::int = $1 AND objid::int = $2 AND objsubid = 2",
        *advisory_key(prefix, key),
    )
    return [row["pid"] for row in rows]


async def history(admin: Any, prefix: str) -> list[dict[str, Any]]:
    """The run history rows, in insertion order."""
    rows = await admin.fetch(f'SELECT * FROM "{prefix}_runs" ORDER BY id')
    return [dict(row) for row in rows]


@pytest.mark.external_service
class TestPostgresLocker:
    """PostgresLocker against a real server."""

    async def test_implements_the_protocols(self, open_locker: Any) -> None:
        """A BatchLocker and a ServerClock; its locks are Locks."""
        locker = await open_locker()
        assert isinstance(locker, BatchLocker) and isinstance(locker, ServerClock)
        lock = await locker.lock("job", tick(1))
        assert isinstance(lock, Lock)
        await lock.unlock()

    async def test_two_local_runs_of_one_key_are_refused(self, open_locker: Any) -> None:
        """The session would grant its own lock again, so the locker refuses a second
        local holder; with a tick the claim is still made and kept."""
        locker = await open_locker()
        lock = await locker.lock("job", None)
        with pytest.raises(LockHeld, match="in this process"):
            await locker.lock("job", None)
        with pytest.raises(LockHeld, match="in this process"):
            await locker.lock("job", tick(5))
        assert await locker.last_ticks(["job"]) == {"job": tick(5)}
        await lock.unlock()
        with pytest.raises(TickClaimed):
            await locker.lock("job", tick(5))

    async def test_terminated_connection_loses_its_locks_and_is_replaced(
        self, open_locker: Any, admin: Any, prefix: str
    ) -> None:
        """pg_terminate_backend on a lock connection fires on_lost (LockLostError) for
        every lock on it, spares the other connection, and the key can be locked again
        on a fresh connection with a larger token."""
        locker = await open_locker()
        (doomed_key,) = keys_on(prefix, 0)
        (safe_key,) = keys_on(prefix, 1)
        doomed = await locker.lock(doomed_key, tick(1))
        safe = await locker.lock(safe_key, tick(1))
        lost: list[BaseException] = []
        doomed.on_lost(lost.append)
        safe.on_lost(lost.append)
        (pid,) = await holder_pids(admin, prefix, doomed_key)
        started = time.monotonic()
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await wait_for(lambda: len(lost) == 1, within=2)
        assert time.monotonic() - started < 1  # the connection's end, not the ttl
        assert isinstance(lost[0], LockLostError) and doomed.lost and not safe.lost
        await doomed.unlock()  # never raises once lost
        again = await locker.lock(doomed_key, None)
        assert again.fencing_token > doomed.fencing_token
        assert await holder_pids(admin, prefix, doomed_key) not in ([], [pid])
        late: list[BaseException] = []
        doomed.on_lost(late.append)  # registered after the loss: called soon
        await wait_for(lambda: len(late) == 1)
        await again.unlock()
        await safe.unlock()
        assert await holder_pids(admin, prefix, safe_key) == []

    async def test_missed_deadline_loses_the_locks(self, open_locker: Any) -> None:
        """When the locker cannot confirm its session within ttl (here: time jumps as
        after a SIGSTOP) the locks are lost and a new connection serves the next lock."""
        clock = OffsetClock()
        locker = await open_locker(ttl=1, clock=clock)
        lock = await locker.lock("job", None)
        lost: list[BaseException] = []
        lock.on_lost(lost.append)
        clock.offset += 1.5
        await wait_for(lambda: len(lost) == 1, within=2)
        assert isinstance(lost[0], LockLostError)
        assert isinstance(lost[0].__cause__, TimeoutError)
        await (await locker.lock("job", None)).unlock()

    async def test_heartbeats_keep_locks_past_the_ttl(self, open_locker: Any) -> None:
        """Advisory locks do not expire; the heartbeat keeps the session confirmed."""
        locker = await open_locker(ttl=0.6)
        lock = await locker.lock("job", None)
        lost: list[BaseException] = []
        lock.on_lost(lost.append)
        await asyncio.sleep(1.5)
        assert lost == [] and not lock.lost
        await lock.unlock()

    async def test_pid_change_at_a_heartbeat_fails_loudly(self, open_locker: Any) -> None:
        """A heartbeat that reaches another backend loses the locks on that connection
        and makes every later lock raise ConfigurationError."""
        locker = await open_locker(ttl=0.6)
        (key,) = keys_on(locker._prefix, 0)
        lock = await locker.lock(key, None)
        lost: list[BaseException] = []
        lock.on_lost(lost.append)
        locker._sessions[0].pid = -1  # as if PgBouncer had switched server connections
        await wait_for(lambda: len(lost) == 1, within=2)
        assert isinstance(lost[0].__cause__, ConfigurationError)
        with pytest.raises(ConfigurationError, match="PgBouncer"):
            await locker.lock("other", None)

    async def test_history_records_owner_token_and_outcome(
        self, open_locker: Any, admin: Any, prefix: str
    ) -> None:
        """A run's row has its tick in µs, owner, token, start, and, once unlocked,
        its end and the recorded outcome; a later record_outcome updates it."""
        locker = await open_locker(owner="node-a")
        lock = await locker.lock("job", tick(1))
        await lock.record_outcome("failed", "ValueError('boom')")
        await lock.unlock()
        untracked = await locker.lock("job", None)
        await untracked.unlock()
        await untracked.record_outcome("succeeded")
        first, second = await history(admin, prefix)
        assert first["job"] == "job" and first["tick"] == to_us(tick(1))
        assert first["owner"] == "node-a" and first["token"] == lock.fencing_token
        assert first["outcome"] == "failed" and first["error"] == "ValueError('boom')"
        assert first["started_at"] <= first["ended_at"]
        assert second["tick"] is None and second["outcome"] == "succeeded"
        assert second["ended_at"] is not None
        assert lock.run_id == first["id"]

    async def test_history_of_a_lost_lock_says_so(
        self, open_locker: Any, admin: Any, prefix: str
    ) -> None:
        """Unlocking a lost lock with no recorded outcome closes its row as lock_lost."""
        locker = await open_locker()
        lock = await locker.lock("job", tick(1))
        (pid,) = await holder_pids(admin, prefix, "job")
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await wait_for(lambda: lock.lost)
        await lock.unlock()
        (row,) = await history(admin, prefix)
        assert row["outcome"] == "lock_lost" and "LockLostError" in row["error"]

    async def test_cleanup_removes_rows_older_than_history_ttl(
        self, open_locker: Any, admin: Any, prefix: str
    ) -> None:
        """cleanup_history deletes rows started before now - history_ttl, only those."""
        locker = await open_locker(history_ttl=timedelta(days=1))
        for n in range(3):
            await (await locker.lock("job", tick(n))).unlock()
        await admin.execute(
            f"UPDATE \"{prefix}_runs\" SET started_at = now() - interval '2 days' WHERE tick < $1",
            to_us(tick(2)),
        )
        assert await locker.cleanup_history() == 2
        assert [row["tick"] for row in await history(admin, prefix)] == [to_us(tick(2))]
        assert await locker.cleanup_history() == 0

    async def test_create_schema_is_idempotent_and_safe_concurrently(
        self, open_locker: Any, admin: Any, prefix: str
    ) -> None:
        """Migrations run at open and again, concurrently, without error."""
        locker = await open_locker()
        other = await open_locker()
        await asyncio.gather(*(backend.create_schema() for backend in (locker, other) * 3))
        tables = await admin.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE $1", f"{prefix}_%"
        )
        assert sorted(row["tablename"] for row in tables) == [
            f"{prefix}_{name}" for name in ("claims", "leaders", "runs", "tokens")
        ]

    async def test_server_time_is_close_to_local_time(self, open_locker: Any) -> None:
        """server_time() is the server's clock_timestamp(), aware, in UTC."""
        locker = await open_locker()
        server = await locker.server_time()
        assert server.utcoffset() == timedelta(0)
        assert abs(server - datetime.now(UTC)) < timedelta(seconds=1)

    async def test_lock_is_one_statement_and_lock_many_one_per_connection(
        self, open_locker: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """lock() sends one statement; lock_many of 50 keys one per lock connection."""
        locker = await open_locker()
        statements: list[str] = []
        run = postgres._Session.run

        async def counting(self: Any, generation: int, method: str, query: str, *a: Any) -> Any:
            statements.append(query)
            return await run(self, generation, method, query, *a)

        monkeypatch.setattr(postgres._Session, "run", counting)
        await locker.lock("single", tick(1))
        assert len(statements) == 1
        statements.clear()
        results = await locker.lock_many([(f"job-{n}", tick(1)) for n in range(50)])
        assert len(statements) == 2
        assert all(isinstance(result, PostgresLock) for result in results)
        assert {result.fencing_token for result in results} == {1}

    async def test_a_retry_after_a_lost_reply_is_not_refused(
        self, open_locker: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If the claim committed but the reply was lost, the retry of the same tick
        claims it again (same nonce) instead of finding it claimed; afterwards the
        tick is claimed for good."""
        locker = await open_locker()
        run = postgres._Session.run
        calls = 0

        async def reply_lost(self: Any, generation: int, method: str, query: str, *a: Any) -> Any:
            nonlocal calls
            calls += 1
            result = await run(self, generation, method, query, *a)
            if calls == 1:
                raise ConnectionError("reply lost")
            return result

        monkeypatch.setattr(postgres._Session, "run", reply_lost)
        with pytest.raises(ConnectionError):
            await locker.lock("job", tick(1))
        assert await locker.last_ticks(["job"]) == {"job": tick(1)}
        lock = await locker.lock("job", tick(1))
        await lock.unlock()
        with pytest.raises(TickClaimed):
            await locker.lock("job", tick(1))

    async def test_a_failed_connection_fails_the_batch_and_keeps_it_retryable(
        self, open_locker: Any, admin: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When one lock connection's statement fails, lock_many raises, releases the
        locks the other connection took, and a retry of the same ticks succeeds."""
        locker = await open_locker()
        good, bad = keys_on(prefix, 0, 3), keys_on(prefix, 1, 3)
        run = postgres._Session.run

        async def failing(self: Any, generation: int, method: str, query: str, *a: Any) -> Any:
            if self is locker._sessions[1] and method == "fetch":
                raise ConnectionError("no reply")
            return await run(self, generation, method, query, *a)

        monkeypatch.setattr(postgres._Session, "run", failing)
        requests = [(key, tick(1)) for key in good + bad]
        with pytest.raises(ConnectionError):
            await locker.lock_many(requests)
        monkeypatch.setattr(postgres._Session, "run", run)
        assert not locker._held
        for key in good:
            assert await holder_pids(admin, prefix, key) == []
        results = await locker.lock_many(requests)
        assert all(isinstance(result, PostgresLock) for result in results), results
        for result in results:
            await result.unlock()

    async def test_a_pool_can_be_passed_and_is_left_open(
        self, postgres_dsn: str, prefix: str
    ) -> None:
        """With a user's pool, the lock connections come from it and go back at close;
        the pool stays open."""
        pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=6)
        try:
            async with PostgresLocker(pool, prefix=prefix) as locker:
                lock = await locker.lock("job", tick(1))
                with pytest.raises(LockHeld):
                    await locker.lock("job", None)
                await lock.unlock()
            assert await pool.fetchval("SELECT 1") == 1
        finally:
            await pool.close()

    async def test_closing_loses_what_is_still_held(self, postgres_dsn: str, prefix: str) -> None:
        """Closing the locker releases its sessions, so held locks report loss."""
        lost: list[BaseException] = []
        async with PostgresLocker(postgres_dsn, prefix=prefix) as locker:
            lock = await locker.lock("job", None)
            lock.on_lost(lost.append)
        await wait_for(lambda: len(lost) == 1)
        await lock.unlock()


@pytest.mark.external_service
class TestPostgresElector:
    """PostgresElector against a real server."""

    async def test_terminated_connection_ends_leadership_at_once(
        self, postgres_dsn: str, prefix: str, admin: Any
    ) -> None:
        """Killing the leader's connection ends its term with LockLostError long
        before the ttl; it then campaigns again and leads with a larger epoch."""
        events: list[Any] = []
        async with PostgresElector(
            postgres_dsn, prefix=prefix, ttl=30, retry_interval=0.05
        ) as elector:
            assert isinstance(elector, Elector) and isinstance(elector, ClaimLedger)
            term = elector.leadership()
            assert term is not None
            ended: list[BaseException | None] = []
            term.on_lost(ended.append)
            elector.add_listener(events.append)
            (pid,) = await holder_pids(admin, prefix, "\x00elector\x00default")
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            await wait_for(lambda: len(ended) == 1, within=1)
            assert isinstance(ended[0], LockLostError)
            await wait_for(lambda: elector.leadership() is not None, within=2)
            new_term = elector.leadership()
            assert new_term is not None and new_term.epoch > term.epoch
            await wait_for(lambda: len(events) == 2)
            assert events == [None, new_term]

    async def test_a_pool_given_elector_survives_termination_and_leaves_the_pool_open(
        self, postgres_dsn: str, prefix: str, admin: Any
    ) -> None:
        """With a user's pool, the elector's connection is acquired from it; a killed
        connection ends the term, a fresh one leads again, and the pool stays usable."""
        pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=4)
        try:
            async with PostgresElector(pool, prefix=prefix, retry_interval=0.05) as elector:
                term = elector.leadership()
                assert term is not None
                (pid,) = await holder_pids(admin, prefix, "\x00elector\x00default")
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
                await wait_for(lambda: elector.leadership() not in (None, term), within=2)
            assert await pool.fetchval("SELECT 1") == 1
        finally:
            await pool.close()

    async def test_claims_share_the_lockers_high_water_mark(
        self, postgres_dsn: str, prefix: str, open_locker: Any
    ) -> None:
        """A tick claimed through the elector's ledger is claimed for the locker too,
        and fencing tokens keep growing across both."""
        locker = await open_locker()
        async with PostgresElector(postgres_dsn, prefix=prefix) as elector:
            token = await elector.claim("job", tick(1))
            with pytest.raises(TickClaimed):
                await elector.claim("job", tick(1))
            with pytest.raises(TickClaimed):
                await locker.lock("job", tick(1))
            lock = await locker.lock("job", tick(2))
            assert lock.fencing_token > token
            await lock.unlock()
            assert await elector.last_ticks(["job", "none"]) == {"job": tick(2)}
            assert abs(await elector.server_time() - datetime.now(UTC)) < timedelta(seconds=1)


@pytest.mark.external_service
class TestSchedulerHistory:
    """The scheduler records each run's outcome in the PostgreSQL history table."""

    async def test_scheduled_runs_leave_their_outcome_and_error_in_the_history(
        self, open_locker: Callable[..., Awaitable[Any]], admin: Any, prefix: str
    ) -> None:
        """A succeeding and a failing job each leave one row per tick with their outcome."""
        from asyncron import JobFailed, JobSucceeded, Scheduler, every

        locker = await open_locker()
        done: asyncio.Queue[Any] = asyncio.Queue()

        async def fine() -> None:
            pass

        async def broken() -> None:
            raise ValueError("boom")

        scheduler = Scheduler(locker=locker)
        scheduler.subscribe(done.put_nowait, JobSucceeded, JobFailed)
        scheduler.add_job(fine, every(seconds=1), name="fine")
        scheduler.add_job(broken, every(seconds=1), name="broken")
        async with scheduler:
            events = [await asyncio.wait_for(done.get(), 10) for _ in range(2)]
        assert {type(e) for e in events} == {JobSucceeded, JobFailed}
        rows = await history(admin, prefix)
        expected = {"fine": ("succeeded", None), "broken": ("failed", "ValueError('boom')")}
        for row in rows:  # a second tick may have run before shutdown: same outcome
            outcome, error = expected[row["job"]]
            assert row["outcome"] == outcome and row["ended_at"] is not None
            assert row["error"] == error
        ticks = {(row["job"], row["tick"]) for row in rows}
        assert {(e.job_name, to_us(e.tick)) for e in events} <= ticks
