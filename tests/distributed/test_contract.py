"""The coordination contract (design §4), run against every backend.

Lockers: memory, Redis, PostgreSQL. Electors: Redis and PostgreSQL (two electors
elect one leader); the memory elector, which does not elect, has its own class.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from asyncron._time import to_us
from asyncron.distributed import BatchLocker, Leadership, Lock, MemoryElector, MemoryLocker
from asyncron.errors import LockHeld, LockLostError, LockNotAcquired, TickClaimed
from tests._services import fresh_prefix

from .conftest import Backend, OffsetClock

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def tick(seconds: float) -> datetime:
    """The tick ``seconds`` after 2030-01-01T00:00Z."""
    return T0 + timedelta(seconds=seconds)


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` until true, failing after ``within`` seconds."""
    async with asyncio.timeout(within):
        # Polling: the state belongs to backend tasks that signal nothing we could await.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


class TestLockerContract:
    """What every Locker guarantees."""

    async def test_mutual_exclusion(self, backend: Backend) -> None:
        """Only one of many concurrent acquisitions of a key succeeds, across instances."""
        other = await backend.new_locker()
        attempts = [
            (backend.locker if i % 2 else other).lock("job", tick(i % 3 + 1)) for i in range(10)
        ]
        results = await asyncio.gather(*attempts, return_exceptions=True)
        locks = [r for r in results if isinstance(r, Lock)]
        assert len(locks) == 1, results
        assert all(isinstance(r, (Lock, LockNotAcquired)) for r in results), results
        with pytest.raises(LockHeld):
            await other.lock("job", None)
        await locks[0].unlock()

    async def test_once_per_tick_after_unlock(self, backend: Backend) -> None:
        """After unlock, the same and earlier ticks are refused as claimed; a later one runs."""
        lock = await backend.locker.lock("job", tick(10))
        await lock.unlock()
        with pytest.raises(TickClaimed):
            await backend.locker.lock("job", tick(10))
        with pytest.raises(TickClaimed):
            await backend.locker.lock("job", tick(5))
        later = await backend.locker.lock("job", tick(11))
        await later.unlock()

    async def test_lock_held_keeps_the_claim(self, backend: Backend) -> None:
        """A claim refused with LockHeld stays made: the tick never runs afterwards."""
        holder = await backend.locker.lock("job", None)
        other = await backend.new_locker()
        with pytest.raises(LockHeld):
            await other.lock("job", tick(1))
        await holder.unlock()
        with pytest.raises(TickClaimed):
            await other.lock("job", tick(1))
        assert await other.last_ticks(["job"]) == {"job": tick(1)}

    async def test_run_key_locks_each_tick_apart_under_one_claim(self, backend: Backend) -> None:
        """With run_key (max_instances > 1), runs of one key hold separate run locks while
        claims and fencing tokens stay per key."""
        other = await backend.new_locker()
        first = await backend.locker.lock("job", tick(1), run_key="job@1")
        second = await other.lock("job", tick(2), run_key="job@2")
        assert second.fencing_token > first.fencing_token
        with pytest.raises(TickClaimed):
            await backend.locker.lock("job", tick(2), run_key="job@2b")
        with pytest.raises(LockHeld):
            await backend.locker.lock("job", tick(3), run_key="job@2")
        assert await other.last_ticks(["job"]) == {"job": tick(3)}
        plain = await backend.locker.lock("job", None)  # the job key's own lock is free
        for lock in (first, second, plain):
            await lock.unlock()

    async def test_many_locks_released_together_are_all_free(self, backend: Backend) -> None:
        """Hundreds of unlocks at once (runs ending on one tick) all release their key."""
        keys = [f"many-{i}" for i in range(300)]
        locks = [await backend.locker.lock(key, tick(1)) for key in keys]
        await asyncio.gather(*(lock.unlock() for lock in locks))
        other = await backend.new_locker()
        again = await asyncio.gather(*(other.lock(key, tick(2)) for key in keys))
        assert all(isinstance(lock, Lock) for lock in again)
        await asyncio.gather(*(lock.unlock() for lock in again))

    async def test_tick_none_takes_only_the_run_lock(self, backend: Backend) -> None:
        """lock(key, None) claims nothing and ignores claims, but still excludes."""
        lock = await backend.locker.lock("job", None)
        with pytest.raises(LockHeld):
            await backend.locker.lock("job", None)
        await lock.unlock()
        assert await backend.locker.last_ticks(["job"]) == {}
        claimed = await backend.locker.lock("job", tick(1))
        await claimed.unlock()
        again = await backend.locker.lock("job", None)
        await again.unlock()
        assert await backend.locker.last_ticks(["job"]) == {"job": tick(1)}

    async def test_owner_only_release(self, backend: Backend) -> None:
        """Unlocking a lost lock does not release the lock its key's new holder took."""
        lost = await backend.locker.lock("job", None)
        await backend.force_loss("job")
        other = await backend.new_locker()
        # A server may need a moment to see the loss (a terminated session).
        holder = await _retry_while_held(lambda: other.lock("job", None))
        await lost.unlock()
        third = await backend.new_locker()
        with pytest.raises(LockHeld):
            await third.lock("job", None)
        await holder.unlock()

    async def test_unlock_is_idempotent(self, backend: Backend) -> None:
        """unlock() twice, or after a loss, neither raises nor frees someone else's lock."""
        lock = await backend.locker.lock("job", None)
        await lock.unlock()
        await lock.unlock()
        again = await backend.locker.lock("job", None)
        await backend.force_loss("job")
        await again.unlock()
        await again.unlock()

    async def test_fencing_tokens_strictly_increase(self, backend: Backend) -> None:
        """Each acquisition of a key, by any instance, gets a larger token."""
        other = await backend.new_locker()
        tokens = []
        for i in range(6):
            locker = backend.locker if i % 2 else other
            lock = await locker.lock("job", tick(i) if i % 3 else None)
            tokens.append(lock.fencing_token)
            await lock.unlock()
        assert tokens == sorted(set(tokens)), tokens
        assert all(isinstance(token, int) for token in tokens)

    async def test_last_ticks(self, backend: Backend) -> None:
        """last_ticks returns the latest claim of each key that has one, aware in UTC."""
        for key, seconds in (("a", 1), ("a", 7), ("b", 3)):
            await (await backend.locker.lock(key, tick(seconds))).unlock()
        got = await backend.locker.last_ticks(["a", "b", "never"])
        assert got == {"a": tick(7), "b": tick(3)}
        assert all(when.utcoffset() == timedelta(0) for when in got.values())
        assert await backend.locker.last_ticks([]) == {}

    async def test_lock_many_mixed_results(self, backend: Backend) -> None:
        """lock_many answers each request in order: locks, LockHeld and TickClaimed in place."""
        if not isinstance(backend.locker, BatchLocker):
            pytest.skip(f"{backend.name} locker has no lock_many")
        held = await backend.locker.lock("held", None)
        await (await backend.locker.lock("claimed", tick(5))).unlock()
        results = await backend.locker.lock_many(
            [("free", tick(1)), ("held", tick(1)), ("claimed", tick(5)), ("free", None)]
        )
        assert isinstance(results[0], Lock)
        assert isinstance(results[1], LockHeld)
        assert isinstance(results[2], TickClaimed)
        assert isinstance(results[3], LockHeld)  # the batch's own first request holds it
        assert await backend.locker.last_ticks(["held"]) == {"held": tick(1)}
        assert await backend.locker.lock_many([]) == []
        await results[0].unlock()
        await held.unlock()

    async def test_lock_many_of_a_thousand_answers_each_in_place(self, backend: Backend) -> None:
        """A batch larger than one server call takes (Redis cuts it per 500) keeps each
        answer at its request's place, and its locks release together."""
        if not isinstance(backend.locker, BatchLocker):
            pytest.skip(f"{backend.name} locker has no lock_many")
        keys = [f"big-{i}" for i in range(1_200)]
        held = await backend.locker.lock_many([(key, None) for key in keys[::3]])
        results = await backend.locker.lock_many([(key, tick(5)) for key in keys])
        assert [isinstance(r, LockHeld) for r in results] == [i % 3 == 0 for i in range(1_200)]
        assert all(isinstance(r, Lock) for i, r in enumerate(results) if i % 3)
        for lock in [*held, *results]:
            if isinstance(lock, Lock):
                await lock.unlock()
        again = await backend.locker.lock_many([(key, tick(5)) for key in keys])
        assert all(isinstance(r, TickClaimed) for r in again)  # refused ones kept the claim

    async def test_renewal_keeps_a_lock_past_its_ttl(self, backend: Backend) -> None:
        """A lock held for three TTLs stays held and exclusive, with no loss reported."""
        holder_locker = await backend.new_locker(ttl=1)
        other = await backend.new_locker(ttl=1)
        lock = await holder_locker.lock("job", None)
        lost: list[BaseException] = []
        lock.on_lost(lost.append)
        for _ in range(6):
            await asyncio.sleep(0.5)
            with pytest.raises(LockHeld):
                await other.lock("job", None)
        assert lost == []
        await lock.unlock()
        await (await other.lock("job", None)).unlock()

    async def test_lock_loss_fires_on_lost(self, backend: Backend) -> None:
        """A lost lock calls each on_lost callback once with a LockLostError, even late ones."""
        locker = await backend.new_locker(ttl=1)
        lock = await locker.lock("job", None)
        calls: list[BaseException] = []
        lock.on_lost(calls.append)
        await backend.force_loss("job")
        await wait_for(lambda: len(calls) == 1)
        late: list[BaseException] = []
        lock.on_lost(late.append)
        await wait_for(lambda: len(late) == 1)
        await asyncio.sleep(0.5)
        assert len(calls) == 1
        assert isinstance(calls[0], LockLostError)
        await lock.unlock()

    async def test_outage_raises_a_backend_error_then_recovers(
        self, outage_backend: Backend
    ) -> None:
        """During an outage calls raise backend errors, not LockNotAcquired; claims
        made before it survive and locking works again once it ends."""
        locker = outage_backend.locker
        await (await locker.lock("job", tick(1))).unlock()
        async with outage_backend.outage():
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: locker.lock("job", tick(2)),
                lambda: locker.last_ticks(["job"]),
            ]
            for call in calls:
                with pytest.raises(Exception) as caught:  # any backend error
                    await call()
                assert not isinstance(caught.value, LockNotAcquired), caught.value
            if isinstance(locker, BatchLocker):
                with pytest.raises(Exception) as caught:
                    await locker.lock_many([("job", tick(2))])
                assert not isinstance(caught.value, LockNotAcquired), caught.value
        lock = await _retry_on_backend_error(lambda: locker.lock("job", tick(2)))
        await lock.unlock()
        with pytest.raises(TickClaimed):
            await locker.lock("job", tick(1))
        assert await locker.last_ticks(["job"]) == {"job": tick(2)}

    async def test_held_lock_is_lost_by_its_deadline_in_an_outage(
        self, outage_backend: Backend
    ) -> None:
        """A held lock whose server goes away reports its loss within its TTL."""
        if outage_backend.name == "memory":
            pytest.skip("a memory outage (fail_with) spares held locks")
        locker = await outage_backend.new_locker(ttl=1)
        lock = await locker.lock("job", None)
        lost: list[BaseException] = []
        lock.on_lost(lost.append)
        async with outage_backend.outage():
            await wait_for(lambda: len(lost) == 1, within=1.5)
        assert isinstance(lost[0], LockLostError)
        await lock.unlock()

    async def test_ticks_are_encoded_as_integer_microseconds(self, backend: Backend) -> None:
        """A tick is compared as integer µs since the epoch: zones do not matter,
        one µs does, and what is stored is that integer."""
        berlin = datetime(2030, 6, 1, 12, 0, 0, 123456, tzinfo=ZoneInfo("Europe/Berlin"))
        await (await backend.locker.lock("job", berlin)).unlock()
        raw = await backend.raw_claim("job")
        # 10:00 UTC (Berlin is UTC+2 in June), from the POSIX timestamp, not from to_us
        expected = int(datetime(2030, 6, 1, 10, tzinfo=UTC).timestamp()) * 1_000_000 + 123456
        assert to_us(berlin) == expected
        assert raw is None or raw == expected
        with pytest.raises(TickClaimed):
            await backend.locker.lock("job", berlin.astimezone(UTC))
        got = (await backend.locker.last_ticks(["job"]))["job"]
        assert got == berlin and got.utcoffset() == timedelta(0)
        await (await backend.locker.lock("job", berlin + timedelta(microseconds=1))).unlock()


async def _retry_while_held(acquire: Callable[[], Awaitable[Any]], within: float = 5.0) -> Any:
    async with asyncio.timeout(within):
        while True:
            try:
                return await acquire()
            except LockHeld:
                await asyncio.sleep(0.05)


async def _retry_on_backend_error(
    acquire: Callable[[], Awaitable[Any]], within: float = 5.0
) -> Any:
    # The scheduler retries a deferred tick the same way; a reconnect may take a try.
    async with asyncio.timeout(within):
        while True:
            try:
                return await acquire()
            except LockNotAcquired:
                raise
            except Exception:
                await asyncio.sleep(0.1)


class TestElectorContract:
    """What every server-backed Elector guarantees, with two electors in one election."""

    async def test_one_leader_among_two(self, elector_backend: Backend) -> None:
        """Two electors settle on exactly one leader, and it stays one."""
        assert elector_backend.new_elector is not None
        first = await elector_backend.new_elector()
        second = await elector_backend.new_elector()
        await wait_for(lambda: (first.leadership() is None) != (second.leadership() is None))
        for _ in range(10):
            await asyncio.sleep(0.15)
            assert (first.leadership() is None) != (second.leadership() is None)
        assert await first.is_leader() != await second.is_leader()

    async def test_resign_on_close_hands_over_with_a_larger_epoch(
        self, elector_backend: Backend
    ) -> None:
        """Closing the leader ends its term with None and the other takes over, within
        one TTL, with a larger epoch."""
        assert elector_backend.new_elector is not None
        first = await elector_backend.new_elector()
        await wait_for(lambda: first.leadership() is not None)
        second = await elector_backend.new_elector()
        term = first.leadership()
        assert term is not None
        ended: list[BaseException | None] = []
        term.on_lost(ended.append)
        await elector_backend.close(first)
        assert first.leadership() is None
        await wait_for(lambda: second.leadership() is not None, within=1.0)
        assert second.leadership().epoch > term.epoch
        await wait_for(lambda: ended == [None])

    async def test_add_listener_reports_gain_and_loss(self, elector_backend: Backend) -> None:
        """A listener gets the new term on gain and None on loss; its remover stops it."""
        assert elector_backend.new_elector is not None
        first = await elector_backend.new_elector()
        await wait_for(lambda: first.leadership() is not None)
        second = await elector_backend.new_elector()
        events: list[Leadership | None] = []
        remove = second.add_listener(events.append)
        await elector_backend.close(first)
        await wait_for(lambda: len(events) == 1)
        assert events[0] is second.leadership()
        await elector_backend.close(second)
        await wait_for(lambda: len(events) == 2)
        assert events[1] is None
        remove()
        remove()

    async def test_leadership_ends_at_the_deadline_without_the_renewal_task(
        self, elector_backend: Backend, offset_clock: OffsetClock
    ) -> None:
        """Once the local deadline passes, leadership() is None at once, before any task
        runs, and the term ends with a LockLostError."""
        assert elector_backend.new_elector is not None
        elector = await elector_backend.new_elector(clock=offset_clock)
        await wait_for(lambda: elector.leadership() is not None)
        term = elector.leadership()
        assert term is not None
        ended: list[BaseException | None] = []
        term.on_lost(ended.append)
        offset_clock.jump(1.0)  # the TTL: as if the process had been stopped that long
        assert elector.leadership() is None
        assert not await elector.is_leader()
        await wait_for(lambda: len(ended) == 1, within=2.0)
        assert isinstance(ended[0], LockLostError)
        assert elector.leadership() is not term

    async def test_outage_ends_leadership_and_recovery_restores_it(
        self, outage_backend: Backend
    ) -> None:
        """A leader cut off from its server stops leading by its deadline and leads
        again, with a larger epoch, once the server is back."""
        if outage_backend.new_elector is None or outage_backend.name == "memory":
            pytest.skip(f"{outage_backend.name} has no server-backed elector")
        elector = await outage_backend.new_elector()
        await wait_for(lambda: elector.leadership() is not None)
        term = elector.leadership()
        async with outage_backend.outage():
            await wait_for(lambda: elector.leadership() is None, within=1.5)
        await wait_for(lambda: elector.leadership() is not None, within=5.0)
        assert elector.leadership().epoch > term.epoch


class TestMemoryElector:
    """The in-process elector: leadership is set by tests, with the same callbacks."""

    async def test_set_leader_moves_epochs_and_ends_terms_with_none(self) -> None:
        """Each gain is a new term with epoch + 1; giving up ends the term with None."""
        elector = MemoryElector()
        events: list[Leadership | None] = []
        elector.add_listener(events.append)
        first = elector.leadership()
        assert first is not None and first.epoch == 1
        ended: list[BaseException | None] = []
        first.on_lost(ended.append)
        elector.set_leader(False)
        assert elector.leadership() is None and not await elector.is_leader()
        elector.set_leader(True)
        second = elector.leadership()
        assert second is not None and second.epoch == 2
        await asyncio.sleep(0)
        assert ended == [None]
        assert events == [None, second]

    async def test_lose_ends_the_term_with_lock_lost_error(self) -> None:
        """lose() ends the term as an expired lease would; a follower has nothing to lose."""
        elector = MemoryElector(leader=False)
        assert elector.leadership() is None and not elector.lose()
        elector.set_leader(True)
        term = elector.leadership()
        assert term is not None
        assert elector.lose()
        late: list[BaseException | None] = []
        term.on_lost(late.append)
        await asyncio.sleep(0)
        assert len(late) == 1 and isinstance(late[0], LockLostError)


class TestMemoryLockerHooks:
    """The test hooks MemoryLocker ships for users' tests."""

    async def test_views_and_fail_with(self) -> None:
        """holders and claimed are live read-only views; fail_with raises until cleared."""
        locker = MemoryLocker()
        lock = await locker.lock("job", tick(1))
        assert dict(locker.holders) == {"job": lock}
        assert dict(locker.claimed) == {"job": tick(1)}
        with pytest.raises(TypeError):
            locker.holders["x"] = lock  # type: ignore[index]
        locker.fail_with(ConnectionError("down"))
        with pytest.raises(ConnectionError):
            await locker.lock("other", None)
        await lock.unlock()  # unlock keeps working during an outage
        assert dict(locker.holders) == {}
        locker.fail_with(None)
        await (await locker.lock("other", None)).unlock()


@pytest.mark.external_service
@pytest.mark.parametrize(
    "command",
    [
        ("EVALSHA", "ab" * 20, 2, "p:{job}", "p:{other}", 30000, ":lock", 1_780_000_000_000_000),
        ("SCRIPT LOAD", "return redis.call('GET', KEYS[1])"),
        ("SET", "k", b"\x00bytes", "PX", 100),
        ("MGET", "é", bytearray(b"ba"), memoryview(b"mv")),
        ("SET", "n", -5, "f", 0.1, "big", 2**70, "e", 1e20),
    ],
    ids=["evalsha", "two-word-name", "bytes", "buffers", "numbers"],
)
def test_hiredis_packing_sends_the_bytes_redis_py_sends(command: tuple[Any, ...]) -> None:
    """A RedisLocker opened from a URL packs commands with hiredis: byte for byte what
    redis-py's own asyncio packer produces."""
    hiredis = pytest.importorskip("hiredis")
    from redis.asyncio.connection import Connection

    from asyncron.distributed.redis import _hiredis_packing

    packing = _hiredis_packing(Connection, hiredis.pack_command)()
    assert b"".join(packing.pack_command(*command)) == b"".join(Connection().pack_command(*command))


class TestRedisSpecifics:
    """Redis behaviour behind the contract: lost replies, scripts, layout, lifecycle."""

    @pytest.fixture
    async def redis(self, redis_url: str) -> AsyncIterator[Any]:
        """An admin client on the test server."""
        from redis.asyncio import Redis

        client = Redis.from_url(redis_url)
        yield client
        await client.aclose()

    @pytest.fixture
    def prefix(self) -> str:
        """A fresh key prefix."""
        return fresh_prefix("t")

    async def test_lost_reply_is_resolved_by_reading_the_lock_back(
        self, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A script that ran but whose reply was lost yields the lock it took; one that
        was refused raises the backend error, and the retry sees the claim."""
        from redis.exceptions import ConnectionError as RedisConnectionError

        from asyncron.distributed.redis import RedisLocker

        async with RedisLocker(redis_url, prefix=prefix) as locker:
            real_chunks = locker._eval_chunks

            async def lossy(*args: Any) -> Any:  # lock and lock_many send their scripts here
                await real_chunks(*args)
                raise RedisConnectionError("reply lost")

            monkeypatch.setattr(locker, "_eval_chunks", lossy)
            lock = await locker.lock("job", tick(1))
            (batched,) = await locker.lock_many([("batch", tick(1))])
            with pytest.raises(RedisConnectionError):
                await locker.lock("job", tick(2))  # refused as held, reply lost
            monkeypatch.undo()
            assert isinstance(batched, Lock)
            with pytest.raises(LockHeld):
                await locker.lock("job", None)
            await lock.unlock()
            with pytest.raises(TickClaimed):
                await locker.lock("job", tick(2))
            await batched.unlock()

    async def test_rerun_of_the_same_request_is_harmless(self, redis_url: str, prefix: str) -> None:
        """Re-sending one lock request (a client-side retry) returns the same lock."""
        from asyncron.distributed.redis import _LOCK, RedisLocker

        async with RedisLocker(redis_url, prefix=prefix) as locker:
            keys, args = [locker._base("job")], (5000, ":lock", to_us(tick(1)), "abc123")
            first = await locker._eval(_LOCK, keys, args)
            second = await locker._eval(_LOCK, keys, args)
            assert [int(x) for x in first] == [int(x) for x in second] == [1, 1]

    async def test_scripts_are_reloaded_after_a_flush(
        self, redis_url: str, prefix: str, redis: Any
    ) -> None:
        """After SCRIPT FLUSH (as after a restart) lock, lock_many and renewals work."""
        from asyncron.distributed.redis import RedisLocker

        async with RedisLocker(redis_url, prefix=prefix) as locker:
            await redis.script_flush()
            await (await locker.lock("a", tick(1))).unlock()
            await redis.script_flush()
            locks = await locker.lock_many([("a", tick(2)), ("b", None)])
            assert all(isinstance(lock, Lock) for lock in locks)
            for lock in locks:
                assert isinstance(lock, Lock)
                await lock.unlock()

    async def test_key_layout(self, redis_url: str, prefix: str, redis: Any) -> None:
        """A job's keys share the hash tag {key}; the lock expires, the claim does not."""
        from asyncron.distributed.redis import RedisLocker

        async with RedisLocker(redis_url, prefix=prefix, ttl=5) as locker:
            lock = await locker.lock("job", tick(1))
            base = f"{prefix}:{{job}}"
            assert await redis.get(f"{base}:claim") == str(to_us(tick(1))).encode()
            assert await redis.get(f"{base}:fence") == b"1"
            assert (await redis.get(f"{base}:lock")).endswith(b":1")
            assert 0 < await redis.pttl(f"{base}:lock") <= 5000
            assert await redis.pttl(f"{base}:claim") == -1
            await lock.unlock()
            assert await redis.exists(f"{base}:lock") == 0

    async def test_lock_is_lost_at_its_deadline_without_renewal(
        self, redis_url: str, prefix: str, offset_clock: OffsetClock
    ) -> None:
        """Once the local deadline passes, on_lost fires and a late renewal revives nothing."""
        from asyncron.distributed.redis import RedisLocker

        async with RedisLocker(redis_url, prefix=prefix, ttl=1, clock=offset_clock) as locker:
            lock = await locker.lock("job", None)
            lost: list[BaseException] = []
            lock.on_lost(lost.append)
            offset_clock.jump(1.0)
            await wait_for(lambda: len(lost) == 1, within=1.5)
            assert isinstance(lost[0], LockLostError)
            await lock.unlock()

    async def test_entries_are_counted_and_a_given_client_is_left_open(
        self, prefix: str, redis: Any
    ) -> None:
        """Only the last exit closes the locker, and it never closes a client it was given."""
        from asyncron.distributed.redis import RedisLocker

        locker = RedisLocker(redis, prefix=prefix)
        with pytest.raises(RuntimeError, match="not open"):
            await locker.lock("job", None)
        async with locker:
            async with locker:
                pass
            await (await locker.lock("job", None)).unlock()
        with pytest.raises(RuntimeError, match="not open"):
            await locker.lock("job", None)
        assert await redis.ping()

    async def test_persistence_is_checked_at_open(
        self, redis_url: str, prefix: str, redis: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Opening warns exactly when neither AOF nor RDB persistence is on."""
        from asyncron.distributed.redis import RedisLocker

        aof = (await redis.config_get("appendonly")).get("appendonly")
        save = (await redis.config_get("save")).get("save")
        unsafe = aof in ("no", b"no") and not (save or "").strip()
        with caplog.at_level("WARNING", logger="asyncron"):
            async with RedisLocker(redis_url, prefix=prefix):
                pass
        assert any("persistence" in r.getMessage() for r in caplog.records) == unsafe

    async def test_elector_ledger_shares_the_lockers_marks(
        self, redis_url: str, prefix: str
    ) -> None:
        """RedisElector.claim uses the same high-water mark and token counter as the locker."""
        from asyncron.distributed.redis import RedisElector, RedisLocker

        async with (
            RedisElector(redis_url, prefix=prefix) as elector,
            RedisLocker(redis_url, prefix=prefix) as locker,
        ):
            token = await elector.claim("job", tick(1))
            with pytest.raises(TickClaimed):
                await elector.claim("job", tick(1))
            with pytest.raises(TickClaimed):
                await locker.lock("job", tick(1))
            lock = await locker.lock("job", tick(2))
            assert lock.fencing_token > token
            await lock.unlock()
            assert await elector.last_ticks(["job", "none"]) == {"job": tick(2)}
            now = datetime.now(UTC)
            assert abs((await elector.server_time() - now).total_seconds()) < 5
            assert abs((await locker.server_time() - now).total_seconds()) < 5

    async def test_opens_while_redis_is_down_and_raises_backend_errors(self) -> None:
        """Entering needs no server (a scheduler may start during an outage); calls then
        raise the driver's error, and bad options fail at construction."""
        from redis.exceptions import RedisError

        from asyncron.distributed.redis import RedisElector, RedisLocker
        from asyncron.errors import ConfigurationError
        from tests._services import free_port

        url = f"redis://127.0.0.1:{free_port()}/0"
        async with RedisLocker(url, ttl=1) as locker, RedisElector(url, ttl=1) as elector:
            with pytest.raises(RedisError):
                await locker.lock("job", tick(1))
            assert elector.leadership() is None
        for options in ({"ttl": 0}, {"ttl": 3, "margin": 1}, {"prefix": ""}):
            with pytest.raises(ConfigurationError):
                RedisLocker(url, **options)
        with pytest.raises(ConfigurationError, match="URL"):
            RedisLocker("http://example.com")
