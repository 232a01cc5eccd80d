"""In-process coordination: :class:`MemoryLocker` and :class:`MemoryElector`.

They coordinate schedulers that share one instance inside one process, which makes
them the backends for users' tests and for single-instance deployments. They follow
the same contract as the server-backed ones (claims are a high-water mark per key,
fencing tokens grow per key, callbacks run in the event loop) and add test hooks to
simulate what servers do to a scheduler: outages (:meth:`MemoryLocker.fail_with`),
lost locks (:meth:`MemoryLocker.lose`) and changes of leader
(:meth:`MemoryElector.set_leader`, :meth:`MemoryElector.lose`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

from .._time import from_us, to_us
from ..errors import LockHeld, LockLostError, LockNotAcquired, TickClaimed
from ._common import CountedEntries, ElectorListeners, HeldLock, Term
from .protocols import Leadership, Lock

__all__ = ("MemoryElector", "MemoryLeadership", "MemoryLock", "MemoryLocker")

_T = TypeVar("_T")


class MemoryLock(HeldLock):
    """A run lock held in a :class:`MemoryLocker`; :meth:`MemoryLocker.lose` loses it."""

    __slots__ = ("_locker",)

    def __init__(self, locker: MemoryLocker, key: str, fencing_token: int) -> None:
        super().__init__(key, fencing_token)
        self._locker = locker

    async def unlock(self) -> None:
        """Release the lock; idempotent, a no-op once lost or released."""
        if self._mark_released():
            self._locker._release(self)

    def _release_then(self, done: Callable[[_T], object], arg: _T) -> None:
        """Release the lock, then call ``done(arg)`` (see HeldLock: here at once)."""
        if self._mark_released():
            self._locker._release(self)
        done(arg)


class _ClaimView(Mapping[str, datetime]):
    """A live read-only view of claimed ticks, decoded from their µs encoding."""

    __slots__ = ("_claims",)

    def __init__(self, claims: dict[str, int]) -> None:
        self._claims = claims

    def __getitem__(self, key: str) -> datetime:
        return from_us(self._claims[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._claims)

    def __len__(self) -> int:
        return len(self._claims)


class MemoryLocker(CountedEntries):
    """An in-process :class:`~asyncron.distributed.BatchLocker`.

    Shared by several schedulers in one process, it runs each tick on one of them.
    Locks do not expire: they are held until unlocked or lost through :meth:`lose`.
    Entering it with ``async with`` is allowed (entries are counted) but not needed.
    """

    def __init__(self) -> None:
        CountedEntries.__init__(self)
        # Ticks are stored in their frozen integer-µs encoding, as in every backend.
        self._claims: dict[str, int] = {}
        self._holders: dict[str, MemoryLock] = {}
        self._tokens: dict[str, int] = {}
        self._failure: BaseException | None = None

    def __repr__(self) -> str:
        return f"<MemoryLocker held={len(self._holders)} claimed={len(self._claims)}>"

    @property
    def holders(self) -> Mapping[str, MemoryLock]:
        """The held run locks by key (a live read-only view)."""
        return MappingProxyType(self._holders)

    @property
    def claimed(self) -> Mapping[str, datetime]:
        """The last claimed tick of each key (a live read-only view)."""
        return _ClaimView(self._claims)

    def fail_with(self, exc: BaseException | None) -> None:
        """Test hook: while ``exc`` is set, ``lock``, ``lock_many`` and ``last_ticks``
        raise it, as a backend in an outage would; ``None`` ends the outage.

        Held locks are not affected and ``unlock`` keeps working.
        """
        self._failure = exc

    def lose(self, key: str) -> bool:
        """Test hook: lose the lock held on ``key``, as an expired lease would.

        The key is freed at once and the lock's ``on_lost`` callbacks receive a
        :class:`~asyncron.LockLostError`. Returns whether a lock was held.
        """
        holder = self._holders.pop(key, None)
        if holder is None:
            return False
        holder._lose(LockLostError(f"the run lock on {key!r} was lost"))
        return True

    async def lock(
        self, key: str, tick: datetime | None, *, run_key: str | None = None
    ) -> MemoryLock:
        """Claim ``(key, tick)`` (unless ``tick`` is None), then take the run lock on
        ``run_key`` (default: ``key``).

        :raises TickClaimed: ``tick`` is at or before the key's last claimed tick
        :raises LockHeld: another run holds the lock; the claim just made is kept
        """
        self._check_failure()
        return self._lock(key, tick, key if run_key is None else run_key)

    async def lock_many(
        self, requests: Sequence[tuple[str, datetime | None]]
    ) -> list[Lock | LockNotAcquired]:
        """Do :meth:`lock` for each request in order; refusals are returned in place."""
        self._check_failure()
        results: list[Lock | LockNotAcquired] = []
        for key, tick in requests:
            try:
                results.append(self._lock(key, tick, key))
            except LockNotAcquired as refusal:
                results.append(refusal)
        return results

    async def last_ticks(self, keys: Sequence[str]) -> dict[str, datetime]:
        """Return the last claimed tick of each key that has one."""
        self._check_failure()
        return {key: from_us(self._claims[key]) for key in keys if key in self._claims}

    def _check_failure(self) -> None:
        if self._failure is not None:
            # A fresh traceback each time, so a long simulated outage does not
            # grow one exception's traceback chain without bound.
            raise self._failure.with_traceback(None)

    def _lock(self, key: str, tick: datetime | None, run_key: str) -> MemoryLock:
        if tick is not None:
            tick_us = to_us(tick)
            last = self._claims.get(key)
            if last is not None and tick_us <= last:
                raise TickClaimed(key, f"tick {tick_us} µs is not after the last claim {last} µs")
            self._claims[key] = tick_us
        if run_key in self._holders:
            raise LockHeld(key, "another run holds the run lock")
        token = self._tokens.get(key, 0) + 1
        self._tokens[key] = token
        lock = MemoryLock(self, run_key, token)
        self._holders[run_key] = lock
        return lock

    def _release(self, lock: MemoryLock) -> None:
        # Owner-only: a lost lock must not free the key for its new holder.
        if self._holders.get(lock.key) is lock:
            del self._holders[lock.key]


class MemoryLeadership(Term):
    """One term of leadership of a :class:`MemoryElector`."""

    __slots__ = ()


class MemoryElector(CountedEntries, ElectorListeners):
    """An in-process :class:`~asyncron.distributed.Elector` whose leadership tests set.

    Every scheduler sharing it leads or follows together; there is no election.
    It keeps no claim ledger. Entering it with ``async with`` is allowed (entries
    are counted) but not needed, and closing it does not resign.

    :param leader: whether it starts as leader (the first term has epoch 1)
    """

    def __init__(self, leader: bool = True) -> None:
        CountedEntries.__init__(self)
        self._epoch = 0
        self._term: MemoryLeadership | None = None
        ElectorListeners.__init__(self)
        if leader:
            self._gain()

    def __repr__(self) -> str:
        return f"<MemoryElector epoch={self._epoch} leader={self._term is not None}>"

    @property
    def epoch(self) -> int:
        """The epoch of the latest term (0 before the first)."""
        return self._epoch

    def leadership(self) -> MemoryLeadership | None:
        """Return the current term if leading, else None."""
        return self._term

    async def is_leader(self) -> bool:
        """Return whether this elector leads."""
        return self._term is not None

    def set_leader(self, leader: bool) -> None:
        """Test hook: gain leadership (a new term, epoch + 1) or give it up (the term's
        ``on_lost`` callbacks get None). Setting the current state again does nothing."""
        if leader and self._term is None:
            self._gain()
        elif not leader and self._term is not None:
            self._end(None)

    def lose(self) -> bool:
        """Test hook: lose leadership as an expired lease would; the term's ``on_lost``
        callbacks get a :class:`~asyncron.LockLostError`. Returns whether it led."""
        if self._term is None:
            return False
        self._end(LockLostError(f"leadership of epoch {self._epoch} was lost"))
        return True

    def _gain(self) -> None:
        self._epoch += 1
        term = self._term = MemoryLeadership(self._epoch)
        self._announce(term)

    def _end(self, reason: BaseException | None) -> None:
        term, self._term = self._term, None
        assert term is not None
        term._end(reason)
        self._announce(None)


if TYPE_CHECKING:  # the classes satisfy the protocols they are documented to implement
    from .protocols import BatchLocker, Elector

    _locker: type[BatchLocker] = MemoryLocker
    _elector: type[Elector] = MemoryElector
    _lock: type[Lock] = MemoryLock
    _term: type[Leadership] = MemoryLeadership
