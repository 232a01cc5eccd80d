"""PostgreSQL coordination: :class:`PostgresLocker` and :class:`PostgresElector` (asyncpg).

Run locks and leadership are *session* advisory locks, keyed by two int32 halves of
a stable 64-bit blake2b digest of prefix and key (:func:`advisory_key`; never
``hash()``, which differs between processes). They live exactly as long as the
session that took them, so they are held on a few dedicated connections opened by
the backend (``lock_connections``, default 2; one for an elector), never on pooled
ones: asyncpg's pool runs ``pg_advisory_unlock_all()`` whenever a connection goes
back to it. Each dedicated connection has a heartbeat with a deadline, because
asyncpg sets no TCP keepalive: when a heartbeat fails, the deadline passes or the
connection dies (``pg_terminate_backend``, a server restart), every lock on it is
lost at once (``on_lost``) and the next request opens a fresh connection.

Claims, fencing tokens and run history are ordinary tables, for prefix P::

    P_claims   key text PK, last_tick bigint (µs), nonce text   the high-water mark
    P_tokens   key text PK, token bigint                        fencing counter per key
    P_leaders  name text PK, epoch bigint, owner, since         elector epochs
    P_runs     id PK, job, tick bigint (µs, NULL = unclaimed), owner, token,
               started_at, ended_at, outcome, error; UNIQUE (job, tick)

A ``lock`` or ``lock_many`` is **one statement, one round trip** on the key's lock
connection: it claims (``INSERT … ON CONFLICT DO UPDATE … WHERE last_tick < tick``),
takes ``pg_try_advisory_lock`` only where the claim succeeded, increments the
fencing token only where the lock was taken (so tokens follow acquisition order)
and inserts the history row. ``unlock`` is one statement too: it writes the end
time and outcome and releases the advisory lock. A statement that fails after
taking an advisory lock leaves it held (session locks ignore rollback), so such a
failure is followed by an explicit unlock, or the connection is dropped.

**PgBouncer in transaction mode breaks session advisory locks**: it lends a server
connection for one transaction at a time, so the lock is taken on a backend that
the next statement (heartbeat, unlock) may not reach, and that another client may
then hold under our lock. The backends therefore read ``pg_backend_pid()`` twice on
every dedicated connection and at every heartbeat, and raise
:class:`~asyncron.ConfigurationError` when it changes. Use a direct connection or
PgBouncer in session mode for the DSN.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from .._clock import Clock, SystemClock
from .._time import as_duration, from_us, to_us
from ..errors import ConfigurationError, LockHeld, LockLostError, LockNotAcquired, TickClaimed
from ._common import CountedEntries, ElectorListeners, HeldLock, Term
from .protocols import Lock

__all__ = (
    "PostgresElector",
    "PostgresLeadership",
    "PostgresLock",
    "PostgresLocker",
    "advisory_key",
)

logger = logging.getLogger("asyncron")

_T = TypeVar("_T")

# Table names are quoted identifiers; PostgreSQL truncates names at 63 bytes, which
# would make two tables of a long prefix collide.
_MAX_PREFIX_BYTES = 48
# Nonces of claims whose outcome is unknown (the reply was lost), kept for a retry.
_MAX_AMBIGUOUS = 10_000


def advisory_key(prefix: str, key: str) -> tuple[int, int]:
    """Return the two int32 keys of ``pg_advisory_lock`` for ``key`` under ``prefix``.

    The first 64 bits of blake2b over ``prefix``, a NUL and ``key``, split into two
    signed halves: stable across processes, machines and versions (frozen).
    """
    digest = _digest(prefix, key)
    return (
        int.from_bytes(digest[:4], "big", signed=True),
        int.from_bytes(digest[4:], "big", signed=True),
    )


def _digest(prefix: str, key: str) -> bytes:
    return hashlib.blake2b(f"{prefix}\x00{key}".encode(), digest_size=8).digest()


def _import_asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "asyncron.distributed.postgres needs asyncpg: install asyncron[postgres]"
        ) from exc
    return asyncpg


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pgbouncer_error(first: int, second: int) -> ConfigurationError:
    return ConfigurationError(
        "dsn_or_pool",
        f"a connection whose backend pid changed from {first} to {second}",
        "a direct PostgreSQL connection or PgBouncer in session mode; transaction "
        "pooling hands each statement to any server connection, so session advisory "
        "locks would be taken on one backend and released, renewed or stolen on others",
    )


async def _check_session_pinned(conn: Any) -> int:
    """Return the connection's backend pid, read twice; raise if the two reads differ.

    Two statements on one client connection reaching two backends is the mark of a
    transaction-pooling proxy (PgBouncer ``pool_mode=transaction``).
    """
    first = int(await conn.fetchval("SELECT pg_backend_pid()"))
    second = int(await conn.fetchval("SELECT pg_backend_pid()"))
    if first != second:
        raise _pgbouncer_error(first, second)
    return first


async def _before(clock: Clock, deadline: float, awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable``, or raise ``TimeoutError`` when ``clock`` reaches ``deadline``.

    The wait goes through the clock (not ``asyncio.timeout``) so virtual time applies.
    """
    task = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(clock.sleep_until(deadline))
    try:
        await asyncio.wait((task, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not task.done():
            task.cancel()
            # Nobody awaits it any more; retrieve its end so asyncio does not log it.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
    if not task.done() or task.cancelled():
        raise TimeoutError
    return task.result()


def _closed(conn: Any) -> bool:
    """Whether a dedicated connection is closed; a pool's proxy whose connection died
    has been handed back by asyncpg already and refuses every call."""
    try:
        return bool(conn.is_closed())
    except Exception:
        return True


def _terminate(conn: Any) -> None:
    with contextlib.suppress(Exception):  # a proxy already handed back (see _closed)
        conn.terminate()


class _Tables:
    """The quoted table names of one prefix, and the statements that use them."""

    def __init__(self, prefix: str) -> None:
        self.claims = _quote(f"{prefix}_claims")
        self.tokens = _quote(f"{prefix}_tokens")
        self.leaders = _quote(f"{prefix}_leaders")
        self.runs = _quote(f"{prefix}_runs")
        self.runs_started = _quote(f"{prefix}_runs_started")
        self.schema = f"""
            CREATE TABLE IF NOT EXISTS {self.claims} (
                key text PRIMARY KEY, last_tick bigint NOT NULL, nonce text);
            CREATE TABLE IF NOT EXISTS {self.tokens} (
                key text PRIMARY KEY, token bigint NOT NULL);
            CREATE TABLE IF NOT EXISTS {self.leaders} (
                name text PRIMARY KEY, epoch bigint NOT NULL, owner text, since timestamptz);
            CREATE TABLE IF NOT EXISTS {self.runs} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                job text NOT NULL,
                tick bigint,
                owner text NOT NULL,
                token bigint NOT NULL,
                started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                ended_at timestamptz,
                outcome text,
                error text,
                UNIQUE (job, tick));
            CREATE INDEX IF NOT EXISTS {self.runs_started} ON {self.runs} (started_at);
        """
        # The claim CAS also accepts the same tick with the same nonce: that is a
        # retry of a request whose reply was lost, which must not find itself claimed.
        claim_cas = """
            ON CONFLICT (key) DO UPDATE SET last_tick = EXCLUDED.last_tick,
                                            nonce = EXCLUDED.nonce
            WHERE c.last_tick < EXCLUDED.last_tick
               OR (c.last_tick = EXCLUDED.last_tick AND c.nonce = EXCLUDED.nonce)
            RETURNING c.key"""
        # One statement per batch: claim, then lock where claimed (and wanted: a key
        # held in this process is only claimed), then a token and a history row where
        # locked. MATERIALIZED makes each advisory lock call happen exactly once.
        # Rows are inserted in key order so concurrent batches lock rows in one order.
        self.lock = f"""
            WITH req AS MATERIALIZED (
                SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bool[],
                                     $5::int[], $6::int[])
                    WITH ORDINALITY AS r(key, tick, nonce, wanted, k1, k2, ord)
            ), claimed AS (
                INSERT INTO {self.claims} AS c (key, last_tick, nonce)
                SELECT key, tick, nonce FROM req WHERE tick IS NOT NULL ORDER BY key
                {claim_cas}
            ), attempt AS MATERIALIZED (
                SELECT req.ord, req.key, req.tick, req.wanted, req.k1, req.k2,
                       (req.tick IS NULL OR claimed.key IS NOT NULL) AS claim_ok
                FROM req LEFT JOIN claimed ON claimed.key = req.key
            ), locked AS MATERIALIZED (
                SELECT ord, key, tick, claim_ok,
                       CASE WHEN claim_ok AND wanted THEN pg_try_advisory_lock(k1, k2)
                            ELSE false END AS lock_ok
                FROM attempt
            ), issued AS (
                INSERT INTO {self.tokens} AS t (key, token)
                SELECT key, 1 FROM locked WHERE lock_ok ORDER BY key
                ON CONFLICT (key) DO UPDATE SET token = t.token + 1
                RETURNING t.key, t.token
            ), history AS (
                INSERT INTO {self.runs} AS h (job, tick, owner, token)
                SELECT locked.key, locked.tick, $7, issued.token
                FROM locked JOIN issued ON issued.key = locked.key
                ON CONFLICT (job, tick) DO UPDATE SET
                    owner = EXCLUDED.owner, token = EXCLUDED.token,
                    started_at = clock_timestamp(), ended_at = NULL,
                    outcome = NULL, error = NULL
                RETURNING h.id, h.job
            )
            SELECT locked.ord, locked.claim_ok, locked.lock_ok, issued.token, history.id
            FROM locked
            LEFT JOIN issued ON issued.key = locked.key
            LEFT JOIN history ON history.job = locked.key
            ORDER BY locked.ord"""
        # Keys that a failed lock statement may have locked, and that this process did
        # not hold before: session locks survive the statement's rollback.
        self.unlock_after_error = """
            SELECT pg_advisory_unlock(k1, k2)
            FROM unnest($1::int[], $2::int[]) AS u(k1, k2)"""
        self.unlock = f"""
            WITH done AS (
                UPDATE {self.runs} SET ended_at = clock_timestamp(), outcome = $3, error = $4
                WHERE id = $5)
            SELECT pg_advisory_unlock($1, $2)"""
        self.finish = f"""
            UPDATE {self.runs} SET ended_at = coalesce(ended_at, clock_timestamp()),
                                   outcome = $2, error = $3
            WHERE id = $1"""
        self.claim = f"""
            WITH claimed AS (
                INSERT INTO {self.claims} AS c (key, last_tick, nonce)
                VALUES ($1, $2, $3)
                {claim_cas}
            )
            INSERT INTO {self.tokens} AS t (key, token)
            SELECT key, 1 FROM claimed
            ON CONFLICT (key) DO UPDATE SET token = t.token + 1
            RETURNING t.token"""
        self.last_ticks = f"SELECT key, last_tick FROM {self.claims} WHERE key = ANY($1::text[])"
        self.cleanup = f"""
            DELETE FROM {self.runs} WHERE started_at < clock_timestamp() - $1::interval"""
        self.campaign = f"""
            WITH attempt AS MATERIALIZED (SELECT pg_try_advisory_lock($2, $3) AS ok)
            INSERT INTO {self.leaders} AS e (name, epoch, owner, since)
            SELECT $1, 1, $4, clock_timestamp() FROM attempt WHERE attempt.ok
            ON CONFLICT (name) DO UPDATE SET epoch = e.epoch + 1, owner = EXCLUDED.owner,
                                             since = EXCLUDED.since
            RETURNING e.epoch"""


class _Session:
    """One dedicated connection that holds session advisory locks.

    Statements run one at a time (asyncpg allows no concurrency on a connection).
    Every statement that succeeds proves the session alive as of when it was *sent*;
    a watcher sends a heartbeat when nothing else did for ``heartbeat`` seconds, and
    when no proof is younger than ``ttl`` (or the heartbeat fails, or the connection
    closes) the session counts as lost: the owner's ``on_lost`` runs and the
    connection is dropped, so the server releases whatever it still holds.
    """

    def __init__(
        self, backend: _PostgresBackend, label: str, on_lost: Callable[[BaseException], None]
    ) -> None:
        self._backend = backend
        self.label = label
        self._on_lost = on_lost
        self.conn: Any = None
        self.pid = 0
        self.generation = 0
        self._sent_ok = -math.inf
        self._mutex = asyncio.Lock()
        self._connecting = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._listener: Callable[[Any], None] | None = None

    @property
    def valid_until(self) -> float:
        """The monotonic deadline after which the session counts as lost."""
        return self._sent_ok + self._backend._ttl

    async def ensure(self) -> int:
        """Connect if needed; return the generation of the live connection."""
        async with self._connecting:
            if self._backend._closing:
                raise RuntimeError(f"the {self._backend._kind} is closing")
            if self.conn is None:
                await self._connect()
        return self.generation

    async def _connect(self) -> None:
        backend = self._backend
        sent = backend._clock.monotonic()
        conn = await backend._open_dedicated(self.label)
        try:
            pid = await _check_session_pinned(conn)
        except BaseException:
            await backend._drop_dedicated(conn, graceful=False)
            raise
        self.generation += 1
        generation = self.generation
        self.conn, self.pid, self._sent_ok = conn, pid, sent

        def terminated(_conn: Any) -> None:
            self.fail(
                generation,
                ConnectionError(f"the PostgreSQL connection {self.label} (pid {pid}) closed"),
            )

        self._listener = terminated
        conn.add_termination_listener(terminated)
        self._watcher = backend._start(self._watch(generation), f"{self.label}.heartbeat")

    async def run(self, generation: int, method: str, query: str, *args: Any) -> Any:
        """Run one statement on the connection of ``generation``; raise if it is gone."""
        async with self._mutex:
            conn = self.conn
            if conn is None or generation != self.generation:
                raise ConnectionError(f"the PostgreSQL connection {self.label} was replaced")
            sent = self._backend._clock.monotonic()
            try:
                result = await getattr(conn, method)(query, *args)
            except BaseException as exc:
                if _closed(conn):
                    self.fail(generation, exc)
                raise
            if generation == self.generation:
                self._sent_ok = max(self._sent_ok, sent)
            return result

    def fail(self, generation: int, exc: BaseException) -> None:
        """Count the session of ``generation`` as lost: drop it and tell the owner."""
        if generation != self.generation or self.conn is None:
            return
        conn, self.conn = self.conn, None
        self._forget_connection(conn)
        # Closing the socket now frees the server-side locks if the server still holds
        # them; a user's pool also wants the connection back.
        _terminate(conn)
        if not isinstance(self._backend._source, str):
            self._backend._start(self._backend._drop_dedicated(conn, graceful=False), "drop")
        logger.warning("lost PostgreSQL session %s: %r", self.label, exc)
        self._on_lost(exc)

    async def close(self) -> None:
        """Close the connection, which releases its advisory locks on the server."""
        async with self._connecting:
            conn, self.conn = self.conn, None
            if conn is not None:
                self.generation += 1
                self._forget_connection(conn)
                await self._backend._drop_dedicated(conn, graceful=True)

    def _forget_connection(self, conn: Any) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):  # a proxy already handed back
                conn.remove_termination_listener(self._listener)
            self._listener = None
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()

    async def _watch(self, generation: int) -> None:
        clock = self._backend._clock
        heartbeat = self._backend._heartbeat
        while generation == self.generation and self.conn is not None:
            await clock.sleep_until(min(self._sent_ok + heartbeat, self.valid_until))
            if generation != self.generation:
                return
            if clock.monotonic() >= self.valid_until:
                # The loop did not run in time (a paused process): act on nothing.
                self.fail(generation, TimeoutError(f"{self.label} missed its deadline"))
                return
            if clock.monotonic() >= self._sent_ok + heartbeat:
                try:
                    pid = await _before(
                        clock,
                        self.valid_until,
                        self.run(generation, "fetchval", "SELECT pg_backend_pid()"),
                    )
                except TimeoutError:
                    self.fail(
                        generation,
                        TimeoutError(
                            f"no answer from PostgreSQL on {self.label} within "
                            f"ttl={self._backend._ttl:g}s"
                        ),
                    )
                    return
                except Exception as exc:
                    self.fail(generation, exc)
                    return
                if pid != self.pid:
                    error = _pgbouncer_error(self.pid, int(pid))
                    self._backend._misconfigured = error
                    self.fail(generation, error)
                    return


class _PostgresBackend(CountedEntries):
    """Pool ownership, dedicated connections, counted entries, schema and shared reads."""

    _kind = "postgres"

    def __init__(
        self,
        dsn_or_pool: Any,
        *,
        prefix: str,
        ttl: float | timedelta,
        heartbeat: float | timedelta | None,
        owner: str | None,
        clock: Clock | None,
    ) -> None:
        self._asyncpg = _import_asyncpg()
        if not isinstance(dsn_or_pool, (str, self._asyncpg.Pool)):
            raise ConfigurationError(
                "dsn_or_pool", dsn_or_pool, "a postgresql:// DSN or an asyncpg.Pool"
            )
        if (
            not isinstance(prefix, str)
            or not prefix
            or "\x00" in prefix
            or len(prefix.encode()) > _MAX_PREFIX_BYTES
        ):
            raise ConfigurationError(
                "prefix", prefix, f"a non-empty string of at most {_MAX_PREFIX_BYTES} bytes"
            )
        ttl_delta = as_duration("ttl", ttl, allow_zero=False)
        assert ttl_delta is not None
        self._ttl = ttl_delta.total_seconds()
        heartbeat_delta = as_duration("heartbeat", heartbeat, allow_zero=False, allow_none=True)
        self._heartbeat = (
            self._ttl / 3 if heartbeat_delta is None else heartbeat_delta.total_seconds()
        )
        # A failed heartbeat must leave time for the next one before the deadline.
        if self._heartbeat > self._ttl / 2:
            raise ConfigurationError("heartbeat", heartbeat, f"at most ttl/2 ({self._ttl / 2:g} s)")
        if owner is not None and (not isinstance(owner, str) or not owner):
            raise ConfigurationError("owner", owner, "a non-empty string or None")
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._prefix = prefix
        self._tables = _Tables(prefix)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._source = dsn_or_pool
        self._pool: Any = None if isinstance(dsn_or_pool, str) else dsn_or_pool
        CountedEntries.__init__(self)
        self._is_open = False
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._misconfigured: ConfigurationError | None = None
        self._ambiguous: dict[tuple[str, int], str] = {}

    @property
    def pool(self) -> Any:
        """The ``asyncpg.Pool`` for claims and history; only while the backend is open."""
        if self._pool is None or not self._is_open:
            raise RuntimeError(f"the {self._kind} is not open: enter it with `async with` first")
        return self._pool

    async def create_schema(self) -> None:
        """Create the tables if they do not exist; idempotent, safe to run concurrently.

        Also run when the backend opens. A transaction-level advisory lock serialises
        concurrent migrations (``CREATE TABLE IF NOT EXISTS`` alone can race).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, $2)", *advisory_key(self._prefix, "\x00schema")
            )
            await conn.execute(self._tables.schema)

    async def server_time(self) -> datetime:
        """Return the server's ``clock_timestamp()``, aware, in UTC."""
        value = await self.pool.fetchval("SELECT clock_timestamp()")
        assert isinstance(value, datetime)
        return value.astimezone(UTC)

    async def last_ticks(self, keys: Sequence[str]) -> dict[str, datetime]:
        """Return the last claimed tick of each key that has one (the catch-up ledger)."""
        if not keys:
            return {}
        rows = await self.pool.fetch(self._tables.last_ticks, list(keys))
        return {row["key"]: from_us(row["last_tick"]) for row in rows}

    def _nonce(self, key: str, tick_us: int) -> str:
        """The claim nonce for ``(key, tick)``: a retry after a lost reply reuses it."""
        nonce = self._ambiguous.get((key, tick_us))
        if nonce is None:
            nonce = uuid.uuid4().hex
            if len(self._ambiguous) >= _MAX_AMBIGUOUS:
                del self._ambiguous[next(iter(self._ambiguous))]
            self._ambiguous[key, tick_us] = nonce
        return nonce

    async def _open(self) -> None:
        if isinstance(self._source, str):
            self._pool = await self._asyncpg.create_pool(self._source, min_size=1, max_size=4)
        self._is_open = True
        try:
            await self.create_schema()
            await self._started()
        except BaseException:
            await self._close()
            raise

    async def _close(self) -> None:
        # Stop the background tasks first: a campaign running while the session closes
        # would open a new connection and take the lock again.
        self._closing = True
        try:
            await self._cancel_tasks()
            await self._stopping()
        finally:
            await self._cancel_tasks()
            self._is_open = False
            self._closing = False
            if isinstance(self._source, str) and self._pool is not None:
                pool, self._pool = self._pool, None
                await pool.close()

    async def _cancel_tasks(self) -> None:
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _started(self) -> None:
        """Start what runs while open (subclasses)."""

    async def _stopping(self) -> None:
        """Give up what is held (subclasses)."""

    def _start(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(
            coro, name=f"asyncron.{self._kind}.{name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _open_dedicated(self, label: str) -> Any:
        """Open a connection for session locks, outside any pool.

        Server-side keepalives and ``tcp_user_timeout`` make the server drop a
        vanished client, and so free its locks, soon after ``ttl``; never before,
        since the client counts its locks lost at ``ttl`` after the last answered
        statement was sent.
        """
        settings = {
            "tcp_keepalives_idle": str(max(1, math.ceil(self._ttl))),
            "tcp_keepalives_interval": "1",
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": str(max(1000, math.ceil(self._ttl * 1000))),
        }
        if isinstance(self._source, str):
            # Named for whoever reads pg_locks / pg_stat_activity, unless the DSN names it.
            if "application_name" not in self._source:
                settings["application_name"] = f"asyncron {label}"
            return await self._asyncpg.connect(self._source, server_settings=settings)
        # A user's pool: keep the connection acquired for the session's whole life, so
        # the pool's reset (which unlocks everything) runs only when we give it back.
        conn = await self._source.acquire()
        try:
            for name, value in settings.items():
                await conn.execute("SELECT set_config($1, $2, false)", name, value)
        except BaseException:
            await self._drop_dedicated(conn, graceful=False)
            raise
        return conn

    async def _drop_dedicated(self, conn: Any, *, graceful: bool) -> None:
        if graceful and not _closed(conn):
            try:
                if isinstance(self._source, str):
                    await conn.close(timeout=self._heartbeat)
                else:
                    await self._source.release(conn, timeout=self._heartbeat)
                return
            except Exception as exc:
                logger.debug("closing %r failed: %r", conn, exc)
        _terminate(conn)
        if not isinstance(self._source, str):
            # The pool may already have reclaimed a connection that died under us.
            with contextlib.suppress(Exception):
                await self._source.release(conn)

    def _check_usable(self) -> None:
        if not self._is_open:
            raise RuntimeError(f"the {self._kind} is not open: enter it with `async with` first")
        if self._misconfigured is not None:
            raise self._misconfigured


class PostgresLock(HeldLock):
    """A run lock held as a session advisory lock by a :class:`PostgresLocker`; lost
    when its session dies or misses its heartbeat deadline."""

    __slots__ = (
        "_generation",
        "_keys",
        "_locker",
        "_outcome",
        "_run_id",
        "_run_key",
        "_session",
        "_tick",
    )

    def __init__(
        self,
        locker: PostgresLocker,
        session: _Session,
        generation: int,
        key: str,
        tick: datetime | None,
        fencing_token: int,
        run_id: int | None,
        run_key: str | None = None,
    ) -> None:
        super().__init__(key, fencing_token)
        self._locker = locker
        self._session = session
        self._generation = generation
        self._run_key = key if run_key is None else run_key
        self._keys = advisory_key(locker._prefix, self._run_key)
        self._tick = tick
        self._run_id = run_id
        self._outcome: tuple[str, str | None] | None = None

    @property
    def tick(self) -> datetime | None:
        """The tick claimed with this lock; None for a lock taken without a claim."""
        return self._tick

    @property
    def run_id(self) -> int | None:
        """The id of this run's row in the history table (None if it has none)."""
        return self._run_id

    async def record_outcome(self, outcome: str, error: str | None = None) -> None:
        """Record how the run ended in the history table.

        Before :meth:`unlock` this does no I/O: ``unlock`` writes the end time and
        outcome in the statement that releases the lock. After it, one ``UPDATE``
        goes through the pool.

        :param outcome: the run's status, e.g. ``"succeeded"`` or ``"failed"``
        :param error: the error's text, if the run failed
        """
        self._outcome = (outcome, error)
        if self._released and self._run_id is not None:
            await self._locker.pool.execute(
                self._locker._tables.finish, self._run_id, outcome, error
            )

    async def unlock(self) -> None:
        """Release the lock and close its history row; idempotent.

        Never raises: a lock already lost only has its history row closed (outcome
        ``"lock_lost"`` unless one was recorded), and a failure to release on a live
        connection drops that connection, which releases every lock on it.
        """
        if not self._mark_released():
            return
        self._locker._forget(self)
        # Shielded: a release cut short would leave the session holding the key while
        # this process counts it free, and the session would grant it again (re-entrant).
        await asyncio.shield(self._locker._start(self._release(), "unlock"))

    async def _release(self) -> None:
        outcome, error = self._outcome or (None, None)
        try:
            if self._lost is None:
                await self._session.run(
                    self._generation,
                    "fetchval",
                    self._locker._tables.unlock,
                    *self._keys,
                    outcome,
                    error,
                    self._run_id,
                )
            elif self._run_id is not None and self._locker._is_open:
                await self._locker.pool.execute(
                    self._locker._tables.finish,
                    self._run_id,
                    outcome or "lock_lost",
                    error if outcome else repr(self._lost),
                )
        except Exception as exc:
            logger.warning("unlocking %r failed: %r", self, exc)
            if self._lost is None:
                # The advisory lock may still be held: only ending the session frees it.
                self._session.fail(self._generation, exc)

    def _lose(self, exc: BaseException) -> None:
        lost = LockLostError(f"the run lock on {self._key!r} was lost: {exc}")
        lost.__cause__ = exc
        super()._lose(lost)


class PostgresLocker(_PostgresBackend):
    """A :class:`~asyncron.distributed.BatchLocker` on PostgreSQL advisory locks, with
    run history and skew detection (:class:`~asyncron.distributed.ServerClock`).

    One ``lock`` (or ``lock_many`` per lock connection) is one statement: claim, lock,
    fencing token and history row. Pass the outcome of a run with
    :meth:`PostgresLock.record_outcome` before ``unlock``.

    :param dsn_or_pool: a ``postgresql://`` DSN (the locker opens and closes its own
        pool and connections) or an ``asyncpg.Pool`` (left open; the lock
        connections are acquired from it and kept until close, so size it for
        ``lock_connections`` more)
    :param prefix: the first part of every table name and advisory key; share it
        with a :class:`PostgresElector` to share the claims
    :param lock_connections: how many dedicated connections hold the advisory
        locks; a key always uses the same one
    :param ttl: how long a lock connection may go without an answered statement
        before its locks count as lost. Advisory locks do not expire on the server:
        this bounds how long a run may go on when the locker can no longer confirm
        its lock (and sets the server-side keepalive that frees a vanished client's
        locks)
    :param heartbeat: the heartbeat period of each lock connection (default ttl/3)
    :param history_ttl: how long run history rows are kept (None: forever);
        cleaned at open and then hourly
    :param owner: this instance's name in the history (default host:pid:random)
    :param clock: where heartbeats, deadlines and cleanups wait
    """

    _kind = "postgres-locker"

    def __init__(
        self,
        dsn_or_pool: Any,
        *,
        prefix: str = "asyncron",
        lock_connections: int = 2,
        ttl: float | timedelta = 30,
        heartbeat: float | timedelta | None = None,
        history_ttl: float | timedelta | None = timedelta(days=7),
        owner: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            dsn_or_pool, prefix=prefix, ttl=ttl, heartbeat=heartbeat, owner=owner, clock=clock
        )
        if isinstance(lock_connections, bool) or not isinstance(lock_connections, int):
            raise ConfigurationError("lock_connections", lock_connections, "an int >= 1")
        if lock_connections < 1:
            raise ConfigurationError("lock_connections", lock_connections, "an int >= 1")
        history = as_duration("history_ttl", history_ttl, allow_zero=False, allow_none=True)
        self._history_ttl = history
        self._sessions = [
            _Session(self, f"lock-{index}", self._session_lost(index))
            for index in range(lock_connections)
        ]
        # Advisory locks are re-entrant within a session, so this map, not the server,
        # refuses a second local holder. None marks a key whose statement is in flight.
        self._held: dict[str, PostgresLock | None] = {}

    def __repr__(self) -> str:
        return (
            f"<PostgresLocker prefix={self._prefix!r} connections={len(self._sessions)} "
            f"held={sum(1 for lock in self._held.values() if lock is not None)}>"
        )

    async def lock(
        self, key: str, tick: datetime | None, *, run_key: str | None = None
    ) -> PostgresLock:
        """Claim ``(key, tick)`` (unless ``tick`` is None) and take the run lock on
        ``run_key`` (default: ``key``), in one statement.

        :raises TickClaimed: ``tick`` is at or before the key's last claimed tick
        :raises LockHeld: another run, here or elsewhere, holds the lock; the claim
            just made is kept
        """
        (result,) = await self._locked([(key, tick, key if run_key is None else run_key)])
        if isinstance(result, LockNotAcquired):
            raise result
        assert isinstance(result, PostgresLock)
        return result

    async def lock_many(
        self, requests: Sequence[tuple[str, datetime | None]]
    ) -> list[Lock | LockNotAcquired]:
        """Do :meth:`lock` for each request, in order: one statement per lock
        connection involved, run concurrently. Refusals are returned in place.

        A backend failure raises for the whole batch: the locks it took are released
        and its claims stay retryable (a retry of the same tick is not refused).
        """
        return await self._locked([(key, tick, key) for key, tick in requests])

    async def _locked(
        self, requests: list[tuple[str, datetime | None, str]]
    ) -> list[Lock | LockNotAcquired]:
        """lock_many over (key, tick, run key) requests."""
        self._check_usable()
        task = asyncio.ensure_future(self._lock_many(requests))
        try:
            # Shielded: a statement cut short by cancellation would leave its outcome
            # unknown; let it finish and release what it took.
            results = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._abandon)
            raise
        for key, tick, _ in requests:
            if tick is not None:
                self._ambiguous.pop((key, to_us(tick)), None)
        return list(results)

    async def cleanup_history(self) -> int:
        """Delete history rows older than ``history_ttl``; return how many went."""
        if self._history_ttl is None:
            return 0
        status = await self.pool.execute(self._tables.cleanup, self._history_ttl)
        return int(str(status).rsplit(" ", 1)[-1])

    async def _lock_many(
        self, requests: list[tuple[str, datetime | None, str]]
    ) -> list[PostgresLock | LockNotAcquired]:
        results: list[PostgresLock | LockNotAcquired | None] = [None] * len(requests)
        # A key twice in one batch goes in a second round: one INSERT … ON CONFLICT may
        # not touch a row twice.
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for index, (key, _tick, _run_key) in enumerate(requests):
            occurrence = seen.get(key, 0)
            seen[key] = occurrence + 1
            if occurrence == len(rounds):
                rounds.append([])
            rounds[occurrence].append(index)
        try:
            for indexes in rounds:
                await self._lock_round(requests, indexes, results)
        except BaseException:
            # The caller gets no locks from a failed batch: give back what was taken.
            await asyncio.gather(
                *(result.unlock() for result in results if isinstance(result, PostgresLock))
            )
            raise
        done: list[PostgresLock | LockNotAcquired] = []
        for result in results:
            assert result is not None
            done.append(result)
        return done

    async def _lock_round(
        self,
        requests: list[tuple[str, datetime | None, str]],
        indexes: list[int],
        results: list[PostgresLock | LockNotAcquired | None],
    ) -> None:
        by_session: dict[int, list[int]] = {}
        for index in indexes:
            key, tick, run_key = requests[index]
            if tick is None and run_key in self._held:
                results[index] = LockHeld(key, "held by another run in this process")
                continue
            digest = _digest(self._prefix, run_key)
            session = int.from_bytes(digest, "big") % len(self._sessions)
            by_session.setdefault(session, []).append(index)
        outcomes = await asyncio.gather(
            *(
                self._lock_on(self._sessions[session], requests, batch, results)
                for session, batch in by_session.items()
            ),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _lock_on(
        self,
        session: _Session,
        requests: list[tuple[str, datetime | None, str]],
        batch: list[int],
        results: list[PostgresLock | LockNotAcquired | None],
    ) -> None:
        generation = await session.ensure()
        keys: list[str] = []
        ticks: list[int | None] = []
        nonces: list[str | None] = []
        wanted: list[bool] = []
        k1s: list[int] = []
        k2s: list[int] = []
        reserved: set[str] = set()
        for index in batch:
            key, tick, run_key = requests[index]
            tick_us = None if tick is None else to_us(tick)
            keys.append(key)
            ticks.append(tick_us)
            nonces.append(None if tick_us is None else self._nonce(key, tick_us))
            # A key held here is still claimed (the claim is kept) but never locked:
            # the session already holds it and would grant it again.
            free = run_key not in self._held
            wanted.append(free)
            if free:
                self._held[run_key] = None
                reserved.add(run_key)
            k1, k2 = advisory_key(self._prefix, run_key)
            k1s.append(k1)
            k2s.append(k2)
        try:
            rows = await session.run(
                generation, "fetch", self._tables.lock,
                keys, ticks, nonces, wanted, k1s, k2s, self.owner,
            )  # fmt: skip
        except BaseException as exc:
            for key in reserved:
                self._held.pop(key, None)
            await self._unlock_after_error(session, generation, wanted, k1s, k2s, exc)
            raise
        for row, index in zip(rows, batch, strict=True):
            key, tick, run_key = requests[index]
            if run_key in reserved:
                self._held.pop(run_key, None)
            if not row["claim_ok"]:
                assert tick is not None
                results[index] = TickClaimed(
                    key, f"tick {tick.isoformat()} is not after the last claimed tick"
                )
            elif not row["lock_ok"]:
                where = "in this process" if run_key not in reserved else "elsewhere"
                results[index] = LockHeld(key, f"held by another run {where}")
            else:
                lock = PostgresLock(
                    self, session, generation, key, tick, int(row["token"]), row["id"], run_key
                )
                # Held from here, so a session lost before lock_many returns loses it.
                self._held[run_key] = lock
                results[index] = lock

    async def _unlock_after_error(
        self,
        session: _Session,
        generation: int,
        wanted: list[bool],
        k1s: list[int],
        k2s: list[int],
        exc: BaseException,
    ) -> None:
        """Release what a failed lock statement may have locked, or drop the session.

        This process held none of the wanted keys, so at most one level of each was
        taken, and unlocking one that was not is harmless.
        """
        if generation != session.generation or session.conn is None:
            return
        pairs = [(k1, k2) for k1, k2, want in zip(k1s, k2s, wanted, strict=True) if want]
        if not pairs:
            return
        if isinstance(exc, asyncio.CancelledError):
            session.fail(generation, exc)
            return
        try:
            await session.run(
                generation,
                "execute",
                self._tables.unlock_after_error,
                [k1 for k1, _ in pairs],
                [k2 for _, k2 in pairs],
            )
        except Exception as cleanup_exc:
            session.fail(generation, cleanup_exc)

    def _abandon(self, task: asyncio.Task[list[PostgresLock | LockNotAcquired]]) -> None:
        """Release the locks of a ``lock_many`` whose caller was cancelled."""
        if task.cancelled() or task.exception() is not None:
            return
        for result in task.result():
            if isinstance(result, PostgresLock):
                self._start(result.unlock(), "release")

    def _forget(self, lock: PostgresLock) -> None:
        if self._held.get(lock._run_key) is lock:
            del self._held[lock._run_key]

    def _session_lost(self, index: int) -> Callable[[BaseException], None]:
        def lost(exc: BaseException) -> None:
            session = self._sessions[index]
            for key, lock in list(self._held.items()):
                if lock is not None and lock._session is session:
                    del self._held[key]
                    lock._lose(exc)

        return lost

    async def _started(self) -> None:
        # Connect now, so a bad DSN or a transaction-pooling proxy fails at start.
        for session in self._sessions:
            await session.ensure()
        if self._history_ttl is not None:
            self._start(self._clean_loop(), "history-cleanup")

    async def _stopping(self) -> None:
        closed = LockLostError("the PostgresLocker was closed")
        for key, lock in list(self._held.items()):
            del self._held[key]
            if lock is not None:
                lock._lose(closed)
        for session in self._sessions:
            await session.close()

    async def _clean_loop(self) -> None:
        assert self._history_ttl is not None
        period = min(self._history_ttl, timedelta(hours=1)).total_seconds()
        while True:
            try:
                deleted = await self.cleanup_history()
            except Exception as exc:
                logger.warning("cleaning the run history failed: %r", exc)
            else:
                if deleted:
                    logger.debug("removed %d old run history rows", deleted)
            await self._clock.sleep_until(self._clock.monotonic() + period)


class PostgresLeadership(Term):
    """One term of leadership held by a :class:`PostgresElector`."""

    __slots__ = ()


class PostgresElector(_PostgresBackend, ElectorListeners):
    """An :class:`~asyncron.distributed.Elector` on a session advisory lock, which also
    keeps the claim ledger (:class:`~asyncron.distributed.ClaimLedger`) and reads the
    server's time (:class:`~asyncron.distributed.ServerClock`).

    While open, a background task campaigns on a dedicated connection: one statement
    tries the advisory lock and, if taken, increments the epoch row. The leader's
    connection then has a heartbeat; when it fails, misses ``ttl`` or the connection
    closes, leadership ends at once and the task campaigns again. Closing resigns by
    closing the connection, so another instance takes over at its next attempt.

    :param dsn_or_pool: a ``postgresql://`` DSN (owned) or an ``asyncpg.Pool`` (left
        open; one connection is acquired from it and kept until close)
    :param prefix: the first part of every table name and advisory key; share it
        with the locker to share the claims
    :param name: the election; electors with the same prefix and name elect one leader
    :param ttl: how long the leader's connection may go without an answered statement
        before leadership counts as lost
    :param heartbeat: the leader's heartbeat period (default ttl/3)
    :param retry_interval: how often a follower tries to take over (default heartbeat)
    :param owner: this instance's name in the epoch row (default host:pid:random)
    :param clock: where heartbeats, retries and deadlines wait
    """

    _kind = "postgres-elector"

    def __init__(
        self,
        dsn_or_pool: Any,
        *,
        prefix: str = "asyncron",
        name: str = "default",
        ttl: float | timedelta = 30,
        heartbeat: float | timedelta | None = None,
        retry_interval: float | timedelta | None = None,
        owner: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            dsn_or_pool, prefix=prefix, ttl=ttl, heartbeat=heartbeat, owner=owner, clock=clock
        )
        if not isinstance(name, str) or not name:
            raise ConfigurationError("name", name, "a non-empty string")
        retry = as_duration("retry_interval", retry_interval, allow_zero=False, allow_none=True)
        self._retry = self._heartbeat if retry is None else retry.total_seconds()
        self._name = name
        self._keys = advisory_key(prefix, f"\x00elector\x00{name}")
        self._session = _Session(self, "elector", self._session_lost)
        self._term: PostgresLeadership | None = None
        ElectorListeners.__init__(self)

    def __repr__(self) -> str:
        return f"<PostgresElector name={self._name!r} leader={self.leadership() is not None}>"

    def leadership(self) -> PostgresLeadership | None:
        """Return the current term if this instance leads, else None; local, no I/O.

        None as soon as ``ttl`` has passed since the last answered statement was sent,
        even if the heartbeat task has not run since.
        """
        term = self._term
        if term is None or self._clock.monotonic() >= self._session.valid_until:
            return None
        return term

    async def is_leader(self) -> bool:
        """Return whether this instance leads (local state)."""
        return self.leadership() is not None

    async def claim(self, key: str, tick: datetime) -> int:
        """Claim ``(key, tick)`` in the high-water mark shared with :class:`PostgresLocker`
        and return the key's next fencing token, in one statement through the pool.

        :raises TickClaimed: ``tick`` is at or before the key's last claimed tick
        """
        self._check_usable()
        tick_us = to_us(tick)
        token = await self.pool.fetchval(
            self._tables.claim, key, tick_us, self._nonce(key, tick_us)
        )
        self._ambiguous.pop((key, tick_us), None)
        if token is None:
            raise TickClaimed(key, f"tick {tick.isoformat()} is not after the last claimed tick")
        return int(token)

    async def _started(self) -> None:
        # One attempt before returning, so a lone instance leads once it is entered.
        try:
            await self._campaign_once()
        except ConfigurationError:
            raise
        except Exception as exc:
            logger.warning("campaigning for leadership failed: %r", exc)
        self._start(self._campaign(), "campaign")

    async def _stopping(self) -> None:
        term, self._term = self._term, None
        await self._session.close()
        if term is not None:
            term._end(None)
            self._announce(None)

    async def _campaign(self) -> None:
        while True:
            await self._clock.sleep_until(self._clock.monotonic() + self._retry)
            if self._misconfigured is not None:
                logger.error("%s; the elector stops campaigning", self._misconfigured)
                return
            if self._term is not None:
                continue
            try:
                await self._campaign_once()
            except ConfigurationError as exc:
                logger.error("%s; the elector stops campaigning", exc)
                return
            except Exception as exc:
                logger.warning("campaigning for leadership failed: %r", exc)

    async def _campaign_once(self) -> None:
        generation = await self._session.ensure()
        try:
            epoch = await self._session.run(
                generation, "fetchval", self._tables.campaign, self._name, *self._keys, self.owner
            )
        except BaseException as exc:
            # The statement may have taken the lock before it failed.
            if generation == self._session.generation and self._session.conn is not None:
                try:
                    await self._session.run(
                        generation, "execute", "SELECT pg_advisory_unlock($1, $2)", *self._keys
                    )
                except Exception as cleanup_exc:
                    self._session.fail(generation, cleanup_exc)
            raise exc
        if epoch is not None and generation == self._session.generation:
            self._term = PostgresLeadership(int(epoch))
            logger.info("leading %r with epoch %d", self._name, epoch)
            self._announce(self._term)

    def _session_lost(self, exc: BaseException) -> None:
        term, self._term = self._term, None
        if term is not None:
            lost = LockLostError(f"leadership of {self._name!r} was lost: {exc}")
            lost.__cause__ = exc
            term._end(lost)
            self._announce(None)
