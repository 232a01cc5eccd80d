"""Redis coordination: :class:`RedisLocker` and :class:`RedisElector` (``redis.asyncio``).

Key layout, for ``prefix`` P and coordination key K (the ``{…}`` hash tag keeps a
job's keys in one slot; batches touch many jobs' keys, so Redis Cluster is not
supported)::

    P:{K}:claim             last claimed tick, integer µs since the epoch (no expiry)
    P:{K}:fence             fencing-token counter, INCR'd on each acquisition or claim
    P:{K}:lock              run lock, "<owner>:<token>", PX ttl, renewed every ttl/3
    P:elector:{N}:lease     leadership lease of elector N, "<owner>:<epoch>", PX ttl
    P:elector:{N}:epoch     epoch counter, INCR'd on each acquisition of the lease

Claims are a high-water mark: a tick is claimed only if it is after the stored one,
by compare-and-set inside the same script that takes the run lock, so the marks
must survive a Redis restart: the backends warn at open when neither AOF nor RDB
persistence is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .._clock import Clock, SystemClock, resolve_none
from .._time import as_duration, from_us, to_us
from ..errors import ConfigurationError, LockHeld, LockLostError, LockNotAcquired, TickClaimed
from ._common import CountedEntries, ElectorListeners, HeldLock, Term
from .protocols import Leadership, Lock

try:
    from redis import exceptions as redis_errors
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.connection import AbstractConnection, parse_url
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "asyncron.distributed.redis needs the redis driver: install asyncron[redis]"
    ) from exc

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - redis without its hiredis extra
    _hiredis_pack = None

__all__ = ("RedisElector", "RedisLeadership", "RedisLock", "RedisLocker")

#: Connections per backend opened from a URL (a client passed in keeps its own pool).
_POOL_SIZE = 32

logger = logging.getLogger("asyncron")

# The other scripts are written against K (keys) and A (arguments): run alone one reads
# KEYS and ARGV; _many() wraps it in a loop over the key and argument groups of many
# calls, so a batch (releases, renewals of runs that end or live together) is one
# command: on a thousand runs per tick the client's per-command cost was the bottleneck.

# Locks many runs in one command (lock() is the batch of one). KEYS: each request's key
# base '<prefix>:{<job key>}'; its claim, lock and fence keys are the base plus
# ':claim', the lock suffix and ':fence' (one hash tag, so one cluster slot). ARGV:
# ttl ms, the lock suffix (':lock', or ':lock:<run key>'), then per request its tick µs
# ('' = no claim) and owner. Two reply items per request (a flat list: no list per
# request for the client to build): 1, token (locked); 0, last tick (TickClaimed); or
# 2, pttl (LockHeld). A flat loop with ttl and suffix once and one
# MGET per request: each redis.call costs Redis ~1 µs, and a thousand runs lock per tick.
# A lock already holding this request's owner means the script ran before and only
# the reply was lost (a client retry): answer as then, so a re-run is harmless.
# Lua compares ticks as doubles, exact for integer µs up to 2^53 (the year 2255).
_LOCK = """
local ttl, suffix = ARGV[1], ARGV[2]
local out = {}
for i = 1, #KEYS do
  local base, tick, owner = KEYS[i], ARGV[2 * i + 1], ARGV[2 * i + 2]
  local lock = base .. suffix
  local got = redis.call('MGET', lock, base .. ':claim')
  local held, last = got[1], got[2]
  local token = held and string.match(held, '^' .. owner .. ':(%d+)$')
  if token then
    out[2 * i - 1], out[2 * i] = 1, tonumber(token)
  elseif tick ~= '' and last and tonumber(last) >= tonumber(tick) then
    out[2 * i - 1], out[2 * i] = 0, last
  else
    if tick ~= '' then redis.call('SET', base .. ':claim', tick) end
    if held then
      out[2 * i - 1], out[2 * i] = 2, redis.call('PTTL', lock)
    else
      token = redis.call('INCR', base .. ':fence')
      redis.call('SET', lock, owner .. ':' .. token, 'PX', ttl)
      out[2 * i - 1], out[2 * i] = 1, token
    end
  end
end
return out
"""
# K: claim, fence. A: tick µs. Returns {1, token} or {0, last tick}.
_CLAIM_BODY = """
local last = redis.call('GET', K[1])
if last and tonumber(last) >= tonumber(A[1]) then return {0, last} end
redis.call('SET', K[1], A[1])
return {1, redis.call('INCR', K[2])}
"""
# K: lease, epoch. A: owner, ttl ms. Returns {1, epoch} or {0, pttl}.
_ACQUIRE_BODY = """
local held = redis.call('GET', K[1])
if held then
  local epoch = string.match(held, '^' .. A[1] .. ':(%d+)$')
  if epoch then return {1, tonumber(epoch)} end
  return {0, redis.call('PTTL', K[1])}
end
local epoch = redis.call('INCR', K[2])
redis.call('SET', K[1], A[1] .. ':' .. epoch, 'NX', 'PX', A[2])
return {1, epoch}
"""
# K: key. A: value, ttl ms. Compare-and-pexpire: 1 renewed, 0 gone or taken.
_RENEW_BODY = """
if redis.call('GET', K[1]) == A[1] then return redis.call('PEXPIRE', K[1], A[2]) end
return 0
"""
# K: key. A: value. Compare-and-delete, so only the owner releases.
_RELEASE_BODY = """
if redis.call('GET', K[1]) == A[1] then return redis.call('DEL', K[1]) end
return 0
"""


def _single(body: str) -> str:
    return "local K, A = KEYS, ARGV\n" + body


def _many(body: str) -> str:
    """The script for many calls of one key each: KEYS = each call's key, ARGV = args
    per call, then each call's args in order. Returns one reply per call."""
    return (
        "local function one(K, A)\n" + body + "end\n"
        "local na = tonumber(ARGV[1])\n"
        "local out = {}\n"
        "for i = 1, #KEYS do\n"
        "  local A = {}\n"
        "  for j = 1, na do A[j] = ARGV[1 + (i - 1) * na + j] end\n"
        "  out[i] = one({KEYS[i]}, A)\n"
        "end\n"
        "return out\n"
    )


_CLAIM, _ACQUIRE, _RENEW, _RELEASE = (
    _single(body) for body in (_CLAIM_BODY, _ACQUIRE_BODY, _RENEW_BODY, _RELEASE_BODY)
)
#: Single script -> its many-calls form (for the scripts run in batches).
_MANY = {
    _RENEW: _many(_RENEW_BODY),
    _RELEASE: _many(_RELEASE_BODY),
}
_SHA = {
    source: hashlib.sha1(source.encode()).hexdigest()
    for source in (_LOCK, _CLAIM, _ACQUIRE, _RENEW, _RELEASE, *_MANY.values())
}
#: Calls per command of a many-calls script: Redis runs a script without interleaving
#: other clients, so a huge batch is cut to keep each pause short.
_MANY_CHUNK = 500

_T = TypeVar("_T")


# Errors after which a command may or may not have run on the server.
_AMBIGUOUS = (redis_errors.ConnectionError, redis_errors.TimeoutError)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _hiredis_packing(
    cls: type[AbstractConnection], pack: Callable[[tuple[Any, ...]], bytes]
) -> type[AbstractConnection]:
    """``cls`` packing its commands with hiredis (C), as redis-py's synchronous client
    does, instead of the asyncio client's pure-Python packer: one lock script for 500
    runs has 1,000+ arguments, which that packer took ~1 ms to encode. Same bytes
    (tested against redis-py's packer)."""

    class HiredisPacking(cls):  # type: ignore[valid-type,misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            if isinstance(args[0], str):  # 'SCRIPT LOAD' is two arguments on the wire
                args = (*args[0].encode().split(), *args[1:])
            elif b" " in args[0]:
                args = (*args[0].split(), *args[1:])
            try:
                return [pack(args)]
            except TypeError:  # hiredis takes neither bytearray nor bool: convert, or fail
                pass
            args = tuple(bytes(a) if isinstance(a, (bytearray, memoryview)) else a for a in args)
            try:
                return [pack(args)]
            except TypeError as exc:
                raise redis_errors.DataError(str(exc)) from exc

    HiredisPacking.__name__ = HiredisPacking.__qualname__ = f"HiredisPacking{cls.__name__}"
    return HiredisPacking


class _Expiring(Protocol):
    _deadline: float

    def _expire(self) -> None: ...


class _DeadlineWatch:
    """Fires ``_expire()`` on each watched item once its local deadline passes.

    A task of its own, so a renewal stuck on a hung server cannot delay the loss.
    Deadlines only grow (renewals) and later items get later deadlines (one TTL per
    backend), so sleeping until the earliest deadline seen is enough.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._items: dict[_Expiring, None] = {}
        self._wake = asyncio.Event()

    def add(self, item: _Expiring) -> None:
        self._items[item] = None
        self._wake.set()

    def wake(self) -> None:
        """Look at the items again (after adding some to ``_items`` directly)."""
        self._wake.set()

    def discard(self, item: _Expiring) -> None:
        self._items.pop(item, None)

    async def run(self) -> None:
        while True:
            if not self._items:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = self._clock.monotonic()
            expired = [item for item in self._items if item._deadline <= now]
            for item in expired:
                self.discard(item)
                item._expire()
            if not expired:
                await self._clock.sleep_until(min(item._deadline for item in self._items))


class _RedisBackend(CountedEntries):
    """Client ownership, counted entries, scripts, timings and ``server_time``."""

    _kind = "backend"

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        prefix: str,
        ttl: float | timedelta,
        margin: float | timedelta | None,
        clock: Clock | None,
    ) -> None:
        if not isinstance(url_or_client, (str, Redis)):
            raise ConfigurationError(
                "url_or_client", url_or_client, "a redis:// URL or a redis.asyncio.Redis"
            )
        if isinstance(url_or_client, str):
            try:
                parse_url(url_or_client)  # a bad URL fails here, not at start
            except ValueError as exc:
                raise ConfigurationError(
                    "url_or_client", url_or_client, "a redis://, rediss:// or unix:// URL"
                ) from exc
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError("prefix", prefix, "a non-empty string")
        ttl_delta = as_duration("ttl", ttl, allow_zero=False)
        assert ttl_delta is not None
        self._ttl = ttl_delta.total_seconds()
        self._ttl_ms = round(self._ttl * 1000)
        if self._ttl_ms < 30:
            raise ConfigurationError("ttl", ttl, "at least 30 ms")
        margin_delta = as_duration("margin", margin, allow_none=True)
        self._margin = self._ttl / 10 if margin_delta is None else margin_delta.total_seconds()
        # The deadline must leave room for a second renewal at 2·ttl/3 after a failed one.
        if self._margin >= self._ttl / 3:
            raise ConfigurationError("margin", margin, f"less than ttl/3 ({self._ttl / 3:g} s)")
        self._interval = self._ttl / 3
        # Bounds a call to a hung server: long enough for a busy one, short enough for
        # the scheduler to defer the tick well within a typical grace.
        self._io_timeout = max(1.0, min(5.0, self._interval))
        self._prefix = prefix
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._source = url_or_client
        self._client: Redis | None = url_or_client if isinstance(url_or_client, Redis) else None
        CountedEntries.__init__(self)
        self._is_open = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def client(self) -> Redis:
        """The Redis client in use; only while the backend is open."""
        if self._client is None or not self._is_open:
            raise RuntimeError(f"the {self._kind} is not open: enter it with `async with` first")
        return self._client

    async def server_time(self) -> datetime:
        """Return the Redis server's current time (``TIME``), aware, in UTC."""
        seconds, micros = await self.client.time()
        return from_us(int(seconds) * 1_000_000 + int(micros))

    async def _open(self) -> None:
        if isinstance(self._source, str):
            # No client-side retries: a script re-sent after a lost reply must be our
            # decision (we read the key back), and a dead server must fail fast so the
            # scheduler can defer the tick. URL parameters still override these.
            # A blocking pool: when every connection is busy (a thousand runs ending at
            # once each release their lock), callers wait their turn for up to the I/O
            # timeout instead of failing with "Too many connections".
            pool = BlockingConnectionPool.from_url(
                self._source,
                max_connections=_POOL_SIZE,
                timeout=self._io_timeout,
                retry=Retry(NoBackoff(), 0),
                socket_timeout=self._io_timeout,
                socket_connect_timeout=self._io_timeout,
            )
            if _hiredis_pack is not None:
                pool.connection_class = _hiredis_packing(pool.connection_class, _hiredis_pack)
            self._client = Redis.from_pool(pool)
        self._is_open = True
        try:
            await self._check_persistence()
        except BaseException:
            await self._close()
            raise
        self._started()

    async def _close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self._stopping()
        finally:
            self._is_open = False
            if isinstance(self._source, str) and self._client is not None:
                client, self._client = self._client, None
                await client.aclose()

    def _started(self) -> None:
        """Start the background tasks (subclasses)."""

    async def _stopping(self) -> None:
        """Give up what is held, after the background tasks stopped (subclasses)."""

    def _start(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"asyncron.{self._kind}.{name}")
        self._tasks.append(task)

    async def _check_persistence(self) -> None:
        try:
            aof = await self.client.config_get("appendonly")
            rdb = await self.client.config_get("save")
        except redis_errors.ResponseError as exc:  # CONFIG renamed or forbidden (managed Redis)
            logger.debug("cannot check Redis persistence (%s); assuming it is configured", exc)
            return
        except redis_errors.RedisError as exc:
            # Opening must not need the server: a scheduler starting during an outage
            # defers its ticks and recovers, as it would from an outage later on.
            logger.warning("Redis is unreachable at open (%s); persistence not checked", exc)
            return
        aof_on = _text(next(iter(aof.values()), "no")) == "yes"
        rdb_on = bool(_text(next(iter(rdb.values()), "")).strip())
        if not aof_on and not rdb_on:
            logger.warning(
                "Redis has neither AOF nor RDB persistence on: a restart forgets the "
                "claimed ticks, so a tick could run twice; enable appendonly"
            )

    async def _eval(self, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        client = self.client
        try:
            return await client.evalsha(_SHA[source], len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            await client.script_load(source)  # after a restart or SCRIPT FLUSH
            return await client.evalsha(_SHA[source], len(keys), *keys, *args)

    async def _eval_many(
        self, source: str, keys: Sequence[str], *arg_lists: Sequence[Any]
    ) -> list[Any]:
        """Run one script for many calls, call i with ``keys[i]`` and the i-th item of
        each of ``arg_lists``, through its many-calls form (see _many)."""
        # ARGV of the many-calls form: args per call, then the args of each call in turn.
        flat = [a for group in zip(*arg_lists, strict=True) for a in group]
        na = len(arg_lists)
        return await self._eval_chunks(_MANY[source], keys, [na], flat, na)

    async def _eval_chunks(
        self,
        source: str,
        keys: Sequence[str],
        head: Sequence[Any],
        args: Sequence[Any],
        per_call: int,
    ) -> list[Any]:
        """Run ``source`` on many calls (one key and ``per_call`` of ``args`` each), one
        command per _MANY_CHUNK calls whose ARGV starts with ``head``, all in one
        pipeline (one round trip); the commands' replies concatenated. Flat lists: no
        objects per call."""
        step = _MANY_CHUNK
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for i in range(0, len(keys), step):
                chunk = keys[i : i + step]
                pipe.evalsha(
                    _SHA[source],
                    len(chunk),
                    *chunk,
                    *head,
                    *args[i * per_call : (i + step) * per_call],
                )
            replies = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, redis_errors.NoScriptError) for r in replies):
                await self.client.script_load(source)  # after a restart or SCRIPT FLUSH
                continue
            results: list[Any] = []
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
                results.extend(reply)
            return results
        raise AssertionError("unreachable")  # pragma: no cover

    def _base(self, key: str) -> str:
        """The part every Redis key of job ``key`` starts with (its hash tag)."""
        return f"{self._prefix}:{{{key}}}"

    def _job_keys(self, key: str) -> tuple[str, str]:
        """The claim and fence keys of job ``key``."""
        base = self._base(key)
        return f"{base}:claim", f"{base}:fence"

    async def _claimed(self, keys: Sequence[str]) -> dict[str, datetime]:
        if not keys:
            return {}
        values = await self.client.mget([self._job_keys(key)[0] for key in keys])
        return {key: from_us(int(v)) for key, v in zip(keys, values, strict=True) if v is not None}


class RedisLock(HeldLock):
    """A run lock held in Redis by a :class:`RedisLocker`, renewed in the background;
    it counts as lost no later than its local deadline (TTL - margin from the last
    renewal sent)."""

    __slots__ = ("_deadline", "_locker", "_redis_key", "_sent", "_value")

    def __init__(
        self, locker: RedisLocker, key: str, redis_key: str, value: str, token: int, sent: float
    ) -> None:
        super().__init__(key, token)
        self._locker = locker
        self._redis_key = redis_key
        self._value = value
        self._sent = sent
        self._deadline = sent + locker._ttl - locker._margin

    async def unlock(self) -> None:
        """Release the lock by compare-and-delete; idempotent, never raises.

        A Redis error is logged, not raised: the lock then expires by its TTL.
        """
        if self._mark_released():
            await self._locker._release(self)

    def _release_then(self, done: Callable[[_T], object], arg: _T) -> None:
        """Queue the release with the others of this loop iteration and call
        ``done(arg)`` once it is done (see HeldLock)."""
        if self._mark_released():
            self._locker._release_later(self, done, arg)
        else:
            done(arg)

    def _expire(self) -> None:
        self._lose(LockLostError(f"the run lock on {self._key!r} was not renewed in time"))

    def _lose(self, exc: BaseException) -> None:
        if self._lost is None and not self._released:
            self._locker._forget(self)
        super()._lose(exc)


class RedisLocker(_RedisBackend):
    """A :class:`~asyncron.distributed.BatchLocker` on Redis, with skew detection.

    :param url_or_client: a ``redis://`` URL (the locker owns that client) or a
        ``redis.asyncio.Redis`` (left open; its own retry policy applies)
    :param prefix: the first part of every key
    :param ttl: the run-lock TTL; locks are renewed every ttl/3
    :param margin: how long before the TTL a lock not renewed counts as lost
        (default ttl/10)
    :param clock: where renewals and deadlines wait
    """

    _kind = "redis-locker"

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        prefix: str = "asyncron",
        ttl: float | timedelta = 30,
        margin: float | timedelta | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(url_or_client, prefix=prefix, ttl=ttl, margin=margin, clock=clock)
        self._held: dict[RedisLock, None] = {}
        # Releases asked for in one loop iteration go out as one pipeline.
        self._releasing: list[tuple[RedisLock, Callable[[Any], object], Any]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._watch = _DeadlineWatch(self._clock)
        self._renew_wake = asyncio.Event()
        # Owners of (key, tick µs) requests whose outcome is unknown (reply and read-back
        # lost), kept so that a retry presents the same owner.
        self._unanswered: dict[tuple[str, int], str] = {}

    def __repr__(self) -> str:
        return f"<RedisLocker prefix={self._prefix!r} ttl={self._ttl:g}s held={len(self._held)}>"

    async def lock(
        self, key: str, tick: datetime | None, *, run_key: str | None = None
    ) -> RedisLock:
        """Claim ``(key, tick)`` (unless ``tick`` is None) and take the run lock on
        ``run_key`` (default: ``key``), in one script call.

        :raises TickClaimed: ``tick`` is at or before the key's last claimed tick
        :raises LockHeld: another run holds the lock; the claim just made is kept
        :raises redis.exceptions.RedisError: Redis failed; nothing is known to be held
        """
        result = (await self._lock_batch([(key, tick)], run_key=run_key))[0]
        if isinstance(result, LockNotAcquired):
            raise result
        return result

    async def lock_many(
        self, requests: Sequence[tuple[str, datetime | None]]
    ) -> list[Lock | LockNotAcquired]:
        """Do :meth:`lock` for each request in order, in one pipeline; refusals are
        returned in place, a Redis failure raises for the whole batch."""
        return list(await self._lock_batch(requests)) if requests else []

    async def last_ticks(self, keys: Sequence[str]) -> dict[str, datetime]:
        """Return the last claimed tick of each key that has one (one ``MGET``)."""
        return await self._claimed(keys)

    async def _lock_batch(
        self,
        requests: Sequence[tuple[str, datetime | None]],
        *,
        run_key: str | None = None,
    ) -> list[RedisLock | LockNotAcquired]:
        # A fresh owner per request: it tells this acquisition from any other (a random
        # nonce per batch, then the request's index; hex only, the script matches it in a
        # pattern). Except a retry of a (key, tick) whose outcome was lost: it reuses that
        # owner, so the script recognises the lock it may have taken then (a fresh owner
        # would find the tick claimed, and the tick would never run).
        unanswered = self._unanswered
        nonce = secrets.token_hex(8)
        base_of = self._base
        owners: list[str] = []
        bases: list[str] = []
        # ARGV after ttl and suffix: tick, owner of each request in turn.
        pairs: list[Any] = []
        last: datetime | None = None
        tick_arg: int | str = ""  # the requests of a batch mostly share one tick
        for i, (key, tick) in enumerate(requests):
            if tick != last:  # equal ticks are distinct objects (one per job)
                last, tick_arg = tick, "" if tick is None else to_us(tick)
            owner = (
                unanswered.pop((key, to_us(tick)), "") if unanswered and tick is not None else ""
            ) or f"{nonce}{i:x}"
            owners.append(owner)
            bases.append(base_of(key))
            pairs += (tick_arg, owner)
        # A run lock on another key than the job's (one per tick when max_instances > 1)
        # keeps the job's hash tag.
        suffix = ":lock" if run_key is None or run_key == requests[0][0] else f":lock:{run_key}"
        sent = self._clock.monotonic()
        try:
            replies = await self._eval_chunks(_LOCK, bases, [self._ttl_ms, suffix], pairs, 2)
        except _AMBIGUOUS as exc:
            # The scripts may have run with only the replies lost: a lock holding our
            # owner is ours; otherwise the error stands and a retry will see the claim.
            try:
                replies = await self._read_back([base + suffix for base in bases], owners, exc)
            except BaseException:
                for (key, tick), owner in zip(requests, owners, strict=True):
                    if tick is not None:
                        if len(unanswered) >= 10_000:
                            del unanswered[next(iter(unanswered))]
                        unanswered[key, to_us(tick)] = owner
                raise
        results = [
            self._result(key, base + suffix, owner, status, value, sent)
            for (key, _), base, owner, status, value in zip(
                requests, bases, owners, replies[::2], replies[1::2], strict=True
            )
        ]
        if self._held:
            self._watch.wake()
            self._renew_wake.set()
        return results

    async def _read_back(
        self, lock_keys: Sequence[str], owners: Sequence[str], error: Exception
    ) -> list[Any]:
        try:
            values = await self.client.mget(lock_keys)
        except _AMBIGUOUS:
            raise error from None
        tokens: list[int | None] = []
        for owner, value in zip(owners, values, strict=True):
            held, _, token = _text(value).partition(":") if value is not None else ("", "", "")
            tokens.append(int(token) if held == owner else None)
        if None in tokens:
            # Some outcome is unknown, so the batch fails; locks that did land are
            # handed back (their ticks stay claimed: at most once, never twice).
            for lock_key, owner, landed in zip(lock_keys, owners, tokens, strict=True):
                if landed is not None:
                    with contextlib.suppress(redis_errors.RedisError):
                        await self._eval(_RELEASE, [lock_key], [f"{owner}:{landed}"])
            raise error
        return [x for token in tokens for x in (1, token)]  # as the script's replies

    def _result(
        self, key: str, lock_key: str, owner: str, status: Any, value: Any, sent: float
    ) -> RedisLock | LockNotAcquired:
        # (The caller wakes the deadline watch and the renewals once per batch.)
        status = int(status)
        if status == 0:
            # Most refusals of a busy tick land here (N - 1 of N instances): a message
            # without date formatting keeps them cheap.
            return TickClaimed(key, f"the last claimed tick is {int(value)} us since the epoch")
        if status == 2:
            return LockHeld(key, f"another run holds the run lock (expires in {int(value)} ms)")
        token = int(value)
        lock = RedisLock(self, key, lock_key, f"{owner}:{token}", token, sent)
        self._held[lock] = None
        self._watch._items[lock] = None
        return lock

    def _forget(self, lock: RedisLock) -> None:
        self._held.pop(lock, None)
        self._watch.discard(lock)

    async def _release(self, lock: RedisLock) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._release_later(lock, resolve_none, done)
        await done

    def _release_later(self, lock: RedisLock, done: Callable[[_T], object], arg: _T) -> None:
        self._forget(lock)
        if not self._is_open:
            done(arg)  # closing released it already
            return
        self._releasing.append((lock, done, arg))
        if len(self._releasing) == 1:
            # Runs that end together (a thousand jobs on one tick) release together: the
            # flush runs after this iteration's other runs have queued their releases.
            task = asyncio.get_running_loop().create_task(
                self._flush_releases(), name="asyncron.redis-locker.release"
            )
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush_releases(self) -> None:
        batch, self._releasing = self._releasing, []
        try:
            await self._eval_many(
                _RELEASE,
                [lock._redis_key for lock, _, _ in batch],
                [lock._value for lock, _, _ in batch],
            )
        except Exception as exc:  # a release never fails its caller: the TTL frees it
            logger.warning(
                "could not release %d run lock(s) (%s); they expire by TTL", len(batch), exc
            )
        finally:
            for _, done, arg in batch:
                try:
                    done(arg)
                except Exception:  # pragma: no cover - the callers' own bug
                    logger.exception("a callback after a lock release failed")

    def _started(self) -> None:
        self._start(self._watch.run(), "deadlines")
        self._start(self._renew_loop(), "renew")

    async def _stopping(self) -> None:
        # Runs still holding locks must not believe they are exclusive any longer.
        held = list(self._held)
        for lock in held:
            lock._lose(LockLostError(f"the locker was closed while {lock.key!r} was held"))
        if held:
            with contextlib.suppress(redis_errors.RedisError):
                await self._eval_many(
                    _RELEASE, [lock._redis_key for lock in held], [lock._value for lock in held]
                )

    async def _renew_loop(self) -> None:
        """Renew every held lock in one pipeline, ttl/3 after the oldest renewal."""
        while True:
            if not self._held:
                self._renew_wake.clear()
                await self._renew_wake.wait()
                continue
            due = min(lock._sent for lock in self._held) + self._interval
            if due > self._clock.monotonic():
                await self._clock.sleep_until(due)
                continue
            batch = list(self._held)
            sent = self._clock.monotonic()
            try:
                replies = await self._eval_many(
                    _RENEW,
                    [lock._redis_key for lock in batch],
                    [lock._value for lock in batch],
                    [self._ttl_ms] * len(batch),
                )
            except redis_errors.RedisError as exc:
                # Deadlines stay where they are; the watch loses the locks if Redis
                # does not answer before them.
                logger.warning("could not renew %d run lock(s): %s", len(batch), exc)
                await self._clock.sleep_until(self._clock.monotonic() + self._interval / 3)
                continue
            now = self._clock.monotonic()
            for lock, renewed in zip(batch, replies, strict=True):
                if lock not in self._held:
                    continue  # released or lost while the renewal was in flight
                if now >= lock._deadline:
                    # Too late: callers may already have seen it lost; it stays lost.
                    lock._expire()
                elif int(renewed) == 1:
                    lock._sent = sent
                    lock._deadline = sent + self._ttl - self._margin
                else:
                    lock._lose(LockLostError(f"the run lock on {lock.key!r} was deleted or taken"))


class RedisLeadership(Term):
    """One term of leadership of a :class:`RedisElector`."""

    __slots__ = ("_deadline", "_elector", "_sent", "_value")

    def __init__(self, elector: RedisElector, epoch: int, value: str, sent: float) -> None:
        super().__init__(epoch)
        self._elector = elector
        self._value = value
        self._sent = sent
        self._deadline = sent + elector._ttl - elector._margin

    def _expire(self) -> None:
        self._elector._end(self, LockLostError(f"the lease of epoch {self._epoch} ran out"))


class RedisElector(_RedisBackend, ElectorListeners):
    """An :class:`~asyncron.distributed.Elector` on a Redis lease, which also keeps
    the claim ledger (:class:`~asyncron.distributed.ClaimLedger`) and reads the
    server's time (:class:`~asyncron.distributed.ServerClock`).

    While open, a background task holds or campaigns for the lease key: ``SET NX PX``
    with a new epoch from ``INCR``, renewed every ttl/3 by compare-and-pexpire.
    Closing resigns (compare-and-delete) so another instance takes over at once.

    :param url_or_client: a ``redis://`` URL (the elector owns that client) or a
        ``redis.asyncio.Redis`` (left open)
    :param prefix: the first part of every key; share it with the locker to share
        the claims
    :param name: the election; electors with the same prefix and name elect one leader
    :param ttl: the lease TTL: how long a crashed leader keeps the others waiting
    :param margin: how long before the TTL an unrenewed lease counts as lost
        (default ttl/10)
    :param clock: where renewals, retries and deadlines wait
    """

    _kind = "redis-elector"

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        prefix: str = "asyncron",
        name: str = "default",
        ttl: float | timedelta = 30,
        margin: float | timedelta | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(url_or_client, prefix=prefix, ttl=ttl, margin=margin, clock=clock)
        if not isinstance(name, str) or not name:
            raise ConfigurationError("name", name, "a non-empty string")
        base = f"{prefix}:elector:{{{name}}}"
        self._lease_key, self._epoch_key = f"{base}:lease", f"{base}:epoch"
        self._term: RedisLeadership | None = None
        ElectorListeners.__init__(self)
        self._watch = _DeadlineWatch(self._clock)

    def __repr__(self) -> str:
        return f"<RedisElector key={self._lease_key!r} leader={self.leadership() is not None}>"

    def leadership(self) -> RedisLeadership | None:
        """Return the current term if this instance leads, else None; local, no I/O.

        None as soon as the local deadline passes, even if the renewal task has not
        run since (a process resumed from SIGSTOP acts on nothing).
        """
        term = self._term
        if term is None or self._clock.monotonic() >= term._deadline:
            return None
        return term

    async def is_leader(self) -> bool:
        """Return whether this instance leads (local state)."""
        return self.leadership() is not None

    async def claim(self, key: str, tick: datetime) -> int:
        """Claim ``(key, tick)`` in the high-water mark shared with :class:`RedisLocker`
        and return a fencing token.

        :raises TickClaimed: ``tick`` is at or before the key's last claimed tick
        :raises redis.exceptions.RedisError: Redis failed (the claim may have landed;
            a retry then raises TickClaimed, so the tick runs at most once)
        """
        claim_key, fence_key = self._job_keys(key)
        status, value = await self._eval(_CLAIM, [claim_key, fence_key], [to_us(tick)])
        if int(status) == 0:
            raise TickClaimed(key, f"the last claimed tick is {from_us(int(value)).isoformat()}")
        return int(value)

    async def last_ticks(self, keys: Sequence[str]) -> dict[str, datetime]:
        """Return the last claimed tick of each key that has one (one ``MGET``)."""
        return await self._claimed(keys)

    def _started(self) -> None:
        self._start(self._watch.run(), "deadlines")
        self._start(self._campaign(), "campaign")

    async def _stopping(self) -> None:
        term = self._term
        if term is None:
            return
        self._end(term, None)
        try:
            await self._eval(_RELEASE, [self._lease_key], [term._value])
        except redis_errors.RedisError as exc:
            logger.warning("could not resign leadership (%s); the lease expires by TTL", exc)

    def _end(self, term: RedisLeadership, reason: BaseException | None) -> None:
        if self._term is not term:
            return
        self._term = None
        self._watch.discard(term)
        term._end(reason)
        self._announce(None)

    async def _campaign(self) -> None:
        """Hold the lease while leading, campaign for it while following."""
        while True:
            term = self._term
            if term is None:
                delay = await self._acquire()
            elif term._sent + self._interval > self._clock.monotonic():
                await self._clock.sleep_until(term._sent + self._interval)
                continue
            else:
                delay = await self._renew(term)
            if delay:
                await self._clock.sleep_until(self._clock.monotonic() + delay)

    async def _acquire(self) -> float:
        owner = secrets.token_hex(8)
        sent = self._clock.monotonic()
        try:
            try:
                status, value = await self._eval(
                    _ACQUIRE, [self._lease_key, self._epoch_key], [owner, self._ttl_ms]
                )
            except _AMBIGUOUS:
                # The lease may be ours with only the reply lost: read it back.
                held = await self.client.get(self._lease_key)
                held_owner, _, held_epoch = _text(held).partition(":") if held else ("", "", "")
                if held_owner != owner:
                    raise
                status, value = 1, int(held_epoch)
        except redis_errors.RedisError as exc:
            logger.warning("could not campaign for leadership: %s", exc)
            return self._interval / 3
        if status != 1:
            # Someone leads: try again when its lease would run out, or at the cadence
            # (also when the lease has no TTL, PTTL -1, which only a human can cause).
            pttl = int(value) / 1000
            return min(self._interval, pttl) if pttl > 0 else self._interval
        epoch = int(value)
        term = self._term = RedisLeadership(self, epoch, f"{owner}:{epoch}", sent)
        self._watch.add(term)
        logger.info("became leader of %r with epoch %d", self._lease_key, epoch)
        self._announce(term)
        return 0

    async def _renew(self, term: RedisLeadership) -> float:
        sent = self._clock.monotonic()
        try:
            renewed = await self._eval(_RENEW, [self._lease_key], [term._value, self._ttl_ms])
        except redis_errors.RedisError as exc:
            # The watch ends the term at its deadline if Redis stays away.
            logger.warning("could not renew leadership: %s", exc)
            return self._interval / 3
        if self._term is term:
            if self._clock.monotonic() >= term._deadline:
                # leadership() already said None: a term never comes back.
                term._expire()
            elif int(renewed) == 1:
                term._sent = sent
                term._deadline = sent + self._ttl - self._margin
            else:
                self._end(term, LockLostError(f"the lease of epoch {term.epoch} was taken"))
        return 0


if TYPE_CHECKING:  # the classes satisfy the protocols they are documented to implement
    from .protocols import BatchLocker, ClaimLedger, Elector, ServerClock

    _locker: type[BatchLocker] = RedisLocker
    _locker_clock: type[ServerClock] = RedisLocker
    _elector: type[Elector] = RedisElector
    _ledger: type[ClaimLedger] = RedisElector
    _elector_clock: type[ServerClock] = RedisElector
    _lock: type[Lock] = RedisLock
    _term: type[Leadership] = RedisLeadership
