"""Test helpers for asyncron users: a virtual clock (and, through the pytest plugin
``asyncron.pytest_plugin``, the ``asyncron_clock`` and ``asyncron_scheduler`` fixtures).

``VirtualClock`` runs a week of schedule in milliseconds on the same code path as real
time: ``await clock.advance(hours=1)`` moves to each due instant in order, lets what
became due run, and returns once every dispatched run has finished or waits on
something other than the clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from . import _runner
from .errors import ConfigurationError

__all__ = ("VirtualClock",)


class VirtualClock:
    """A clock that only moves when told to.

    :param start: the initial wall time (aware; default 2026-01-01T00:00:00Z)
    """

    #: The scheduler's timer trusts this clock's wall time (it only jumps via ``step``).
    wall_recheck_interval: float | None = None

    #: Real seconds :meth:`settle` waits for a busy worker thread (a plain job) before
    #: taking it as blocked on something other than the clock (an event the test sets).
    thread_wait: float = 1.0

    def __init__(self, start: datetime | None = None) -> None:
        if start is None:
            start = datetime(2026, 1, 1, tzinfo=UTC)
        if not isinstance(start, datetime) or start.tzinfo is None:
            raise ConfigurationError("start", start, "an aware datetime")
        self._wall0 = start.astimezone(UTC)
        self._mono = 0.0
        self._wall_offset = timedelta(0)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._wall_listeners: list[Callable[[], None]] = []

    # --- the Clock protocol
    def now(self) -> datetime:
        """The virtual wall time (aware UTC)."""
        return self._wall0 + timedelta(seconds=self._mono) + self._wall_offset

    def monotonic(self) -> float:
        """The virtual monotonic time in seconds."""
        return self._mono

    async def sleep_until(self, deadline: float) -> None:
        """Wait until the virtual monotonic time reaches ``deadline``."""
        if deadline <= self._mono:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), future))
        await future

    # --- moving time
    async def advance(self, delta: timedelta | float | None = None, /, **units: float) -> None:
        """Move forward by ``delta`` (a timedelta or seconds) or unit keywords
        (``hours=1``), stopping at every due instant on the way."""
        if delta is not None and units:
            raise ConfigurationError("delta", delta, "a delta or unit keywords, not both")
        if delta is None:
            try:
                delta = timedelta(**units)
            except TypeError as exc:
                raise ConfigurationError("units", units, "timedelta keywords") from exc
        elif not isinstance(delta, timedelta):
            if isinstance(delta, bool) or not isinstance(delta, (int, float)):
                raise ConfigurationError("delta", delta, "a timedelta or a number of seconds")
            delta = timedelta(seconds=delta)
        if delta < timedelta(0):
            raise ConfigurationError("delta", delta, ">= 0 (use step() to move the wall back)")
        await self._advance_mono(self._mono + delta.total_seconds())

    async def advance_to(self, when: datetime) -> None:
        """Move forward until the wall time is ``when`` (aware)."""
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise ConfigurationError("when", when, "an aware datetime")
        delta = when - self.now()
        if delta < timedelta(0):
            raise ConfigurationError("when", when, f"a time at or after now ({self.now()})")
        await self.advance(delta)

    def step(self, delta: timedelta | float) -> None:
        """Move the wall clock alone (an NTP step, a suspend, a manual change);
        monotonic time does not move. Negative steps move it back."""
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        self._wall_offset += delta
        for listener in list(self._wall_listeners):
            listener()

    def add_wall_step_listener(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after each :meth:`step`; returns a remover (used by the
        scheduler's timer, which otherwise trusts this clock's wall time)."""
        self._wall_listeners.append(callback)

        def remove() -> None:
            if callback in self._wall_listeners:
                self._wall_listeners.remove(callback)

        return remove

    async def settle(self) -> None:
        """Yield until nothing is ready to run and no worker thread is busy (for at most
        :attr:`thread_wait` real seconds: a thread may wait for the test itself)."""
        loop = asyncio.get_running_loop()
        idle = 0
        give_up = time.monotonic() + self.thread_wait
        while idle < 3:
            await asyncio.sleep(0)
            ready = getattr(loop, "_ready", None)
            threads = _runner.threads_in_flight and time.monotonic() < give_up
            if ready or threads:
                idle = 0
                if threads and not ready:
                    await asyncio.sleep(0.001)
            else:
                idle += 1

    async def _advance_mono(self, target: float) -> None:
        await self.settle()
        sleepers = self._sleepers
        while True:
            while sleepers and sleepers[0][2].done():
                heapq.heappop(sleepers)
            if not sleepers or sleepers[0][0] > target:
                break
            deadline = sleepers[0][0]
            self._mono = max(self._mono, deadline)
            while sleepers and sleepers[0][0] <= self._mono:
                _, _, future = heapq.heappop(sleepers)
                if not future.done():
                    future.set_result(None)
            await self.settle()
        self._mono = max(self._mono, target)
        await self.settle()
