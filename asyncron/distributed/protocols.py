"""The interfaces that coordination backends implement (design §4).

A :class:`Locker` lets every instance schedule every job while each tick runs on
one instance only; an :class:`Elector` picks one leader that runs every
coordinated job. Backends are async context managers whose entries are counted:
the first ``__aenter__`` opens them, the last ``__aexit__`` closes them, so a
scheduler given a backend enters it at start and users may enter it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from ..errors import LockNotAcquired

__all__ = (
    "BatchLocker",
    "ClaimLedger",
    "Elector",
    "Leadership",
    "Lock",
    "Locker",
    "ServerClock",
)


@runtime_checkable
class Lock(Protocol):
    """A held run lock, returned by :meth:`Locker.lock`."""

    @property
    def fencing_token(self) -> int:
        """The token issued with this acquisition; strictly increasing per key."""
        ...

    def on_lost(self, callback: Callable[[BaseException], None]) -> None:
        """Register ``callback``, called once (in the event loop) if the lock is lost.

        The backend calls it no later than its local monotonic deadline: TTL minus a
        safety margin, counted from when the last renewal was sent. If the lock is
        already lost, the callback is called soon after registration.
        """
        ...

    async def unlock(self) -> None:
        """Release the lock; idempotent, and never raises because the lock was lost.

        Shutdown may cancel the run awaiting it, so the scheduler shields the call
        (``asyncio.shield``) unless the lock's class sets ``unlock_survives_cancel =
        True``: a promise that the release completes even if the awaiting task is
        cancelled (the built-in backends' locks keep it).
        """
        ...


@runtime_checkable
class Locker(Protocol):
    """Claims (key, tick) pairs and takes run locks, so each tick runs once in a cluster."""

    async def lock(self, key: str, tick: datetime | None, *, run_key: str | None = None) -> Lock:
        """Claim ``(key, tick)``, then take the run lock on ``run_key`` (default ``key``),
        in one round trip.

        The scheduler passes ``run_key=f"{key}@{tick_us}"`` only for jobs with
        ``max_instances > 1``, whose concurrent runs each need their own run lock; the
        claim and the fencing token stay per ``key``. ``tick=None`` takes the run lock
        only, with no claim. Raises
        :class:`~asyncron.TickClaimed` if ``tick`` is at or before the key's last
        claimed tick; :class:`~asyncron.LockHeld` if another run holds the run lock
        (a claim already made is kept). Any other exception is a backend failure.
        """
        ...

    async def last_ticks(self, keys: Sequence[str]) -> dict[str, datetime]:
        """Return the last claimed tick of each key that has one (the catch-up ledger)."""
        ...


@runtime_checkable
class BatchLocker(Locker, Protocol):
    """A locker that can take many locks in one round trip; used when provided."""

    async def lock_many(
        self, requests: Sequence[tuple[str, datetime | None]]
    ) -> list[Lock | LockNotAcquired]:
        """Do :meth:`Locker.lock` for each request, in order, in one round trip.

        Refusals are returned in place (not raised); a backend failure raises for
        the whole batch.
        """
        ...


@runtime_checkable
class Leadership(Protocol):
    """One term of leadership held by this instance."""

    @property
    def epoch(self) -> int:
        """Grows with each change of leader; the fencing token of elector-only runs."""
        ...

    def on_lost(self, callback: Callable[[BaseException | None], None]) -> None:
        """Register ``callback``, called once when this term ends (None: resigned)."""
        ...


@runtime_checkable
class Elector(Protocol):
    """Elects one leader among instances; only the leader runs coordinated jobs."""

    def leadership(self) -> Leadership | None:
        """Return the current term if this instance leads, else None; local, no I/O.

        Returns None as soon as the local monotonic deadline of the lease passes,
        even before the renewal task notices.
        """
        ...

    async def is_leader(self) -> bool:
        """Return whether this instance leads (gocron parity)."""
        ...

    def add_listener(self, callback: Callable[[Leadership | None], None]) -> Callable[[], None]:
        """Call ``callback`` in the event loop on each change: the new term when this
        instance becomes leader, None when it stops leading. Returns a remover."""
        ...


@runtime_checkable
class ClaimLedger(Protocol):
    """A high-water mark per key; server-backed electors keep one so a tick never
    runs twice across a change of leader."""

    async def claim(self, key: str, tick: datetime) -> int:
        """Claim ``(key, tick)`` and return a fencing token; raise TickClaimed if taken."""
        ...

    async def last_ticks(self, keys: Sequence[str]) -> dict[str, datetime]:
        """Return the last claimed tick of each key that has one."""
        ...


@runtime_checkable
class ServerClock(Protocol):
    """A backend that can read its server's clock, for skew detection."""

    async def server_time(self) -> datetime:
        """Return the server's current time, aware, in UTC."""
        ...
