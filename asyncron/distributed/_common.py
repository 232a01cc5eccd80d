"""Plumbing the coordination backends share: callback delivery, counted ``async with``
entries, a held run lock's state, a term of leadership, and an elector's listeners."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from .protocols import Leadership

__all__ = ("CountedEntries", "ElectorListeners", "HeldLock", "Term", "deliver")

_T = TypeVar("_T")


def deliver(callbacks: Iterable[Callable[[_T], None]], value: _T) -> None:
    """Call each callback with ``value`` on the running loop's next iteration, else now.

    Deferring keeps user callbacks out of the caller's frame (a renewal task, a test
    hook, an ``unlock``) and makes every backend deliver the same way.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        for callback in callbacks:
            callback(value)
    else:
        for callback in callbacks:
            loop.call_soon(callback, value)


class Term:
    """One term of leadership: an epoch and the callbacks to call once when it ends.

    Subclasses add what their backend needs (a lease value, a deadline) in their own
    ``__slots__``.
    """

    __slots__ = ("_callbacks", "_ended", "_epoch")

    def __init__(self, epoch: int) -> None:
        self._epoch = epoch
        self._callbacks: list[Callable[[BaseException | None], None]] = []
        self._ended: tuple[BaseException | None] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} epoch={self._epoch}{' ended' if self._ended else ''}>"

    @property
    def epoch(self) -> int:
        """Grows with each change of leader; the fencing token of elector-only runs."""
        return self._epoch

    def on_lost(self, callback: Callable[[BaseException | None], None]) -> None:
        """Register ``callback``, called once in the event loop when this term ends:
        with the error that ended it, or None when leadership was given up."""
        if self._ended is not None:
            deliver((callback,), self._ended[0])
        else:
            self._callbacks.append(callback)

    def _end(self, reason: BaseException | None) -> None:
        if self._ended is not None:
            return
        self._ended = (reason,)
        callbacks, self._callbacks = self._callbacks, []
        deliver(callbacks, reason)


class ElectorListeners:
    """The ``add_listener`` half of an elector: who hears of each change of term."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[Leadership | None], None]] = []

    def add_listener(self, callback: Callable[[Leadership | None], None]) -> Callable[[], None]:
        """Call ``callback`` in the event loop with the new term when this instance
        becomes leader, and with None when it stops leading. Returns a remover."""
        self._listeners.append(callback)

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    def _announce(self, term: Any) -> None:
        deliver(list(self._listeners), term)


class CountedEntries:
    """``async with`` entries are counted: the first opens the backend, the last exit
    closes it, so a scheduler and its user can both enter one backend."""

    _kind = "backend"

    def __init__(self) -> None:
        self._entries = 0
        self._gate = asyncio.Lock()

    async def _open(self) -> None:
        """Open what the backend needs (on the first entry)."""

    async def _close(self) -> None:
        """Close what :meth:`_open` opened (on the last exit)."""

    async def __aenter__(self) -> Self:
        async with self._gate:
            if self._entries == 0:
                await self._open()
            self._entries += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with self._gate:
            if self._entries == 0:
                raise RuntimeError(f"the {self._kind} was exited more often than entered")
            self._entries -= 1
            if self._entries == 0:
                await self._close()


class HeldLock:
    """What every backend's run lock shares: its key, its fencing token, the callbacks
    to call once if it is lost, and whether it was released."""

    __slots__ = ("_callbacks", "_fencing_token", "_key", "_lost", "_released")

    #: unlock() completes the release even if the task awaiting it is cancelled (the
    #: memory backend releases at once, Redis queues the release before awaiting it,
    #: PostgreSQL shields it), so the scheduler need not shield the call itself.
    unlock_survives_cancel: ClassVar[bool] = True

    # A backend may also define ``_release_then(done, arg)``: release the lock without
    # being awaited and call ``done(arg)`` in the loop once the release is done (or has
    # failed, the TTL then frees it). The scheduler's short path for runs locked in a
    # batch uses it; a lock without it (PostgreSQL, which records the run's outcome
    # first) takes the full path.

    def __init__(self, key: str, fencing_token: int) -> None:
        self._key = key
        self._fencing_token = fencing_token
        self._callbacks: list[Callable[[BaseException], None]] = []
        self._lost: BaseException | None = None
        self._released = False

    def __repr__(self) -> str:
        state = "released" if self._released else "lost" if self._lost else "held"
        return f"<{type(self).__name__} key={self._key!r} token={self._fencing_token} {state}>"

    @property
    def key(self) -> str:
        """The coordination key this lock was taken for."""
        return self._key

    @property
    def fencing_token(self) -> int:
        """The token issued with this acquisition; strictly increasing per key."""
        return self._fencing_token

    @property
    def lost(self) -> bool:
        """Whether the lock was lost (taken, deleted, or not renewed in time)."""
        return self._lost is not None

    def on_lost(self, callback: Callable[[BaseException], None]) -> None:
        """Register ``callback``, called once in the event loop if the lock is lost.

        A lock already lost calls it on the next loop iteration; a released lock never.
        """
        if self._lost is not None:
            deliver((callback,), self._lost)
        elif not self._released:
            self._callbacks.append(callback)

    def _mark_released(self) -> bool:
        """Mark the lock released; False if it already was (unlock is idempotent)."""
        if self._released:
            return False
        self._released = True
        self._callbacks.clear()
        return True

    def _lose(self, exc: BaseException) -> None:
        """Mark the lock lost and call its callbacks, once (never after release)."""
        if self._lost is not None or self._released:
            return
        self._lost = exc
        callbacks, self._callbacks = self._callbacks, []
        deliver(callbacks, exc)
