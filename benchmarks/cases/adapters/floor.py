"""The floor: plain asyncio, one ``loop.call_at`` per job that starts a task and re-arms."""

from __future__ import annotations

import asyncio
import platform
import time
from collections.abc import Callable

from .base import Adapter, JobFunc

__all__ = ("FloorAdapter",)


class _Every:
    """One periodic job: a timer handle that starts the body and re-arms itself."""

    __slots__ = ("func", "job", "loop", "offset", "period", "tick")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        offset: float,
        func: JobFunc,
        job: int,
        period: int,
        first: int,
    ) -> None:
        self.loop = loop
        self.offset = offset
        self.func = func
        self.job = job
        self.period = period
        self.tick = first
        loop.call_at(first + offset, self.fire)

    def fire(self) -> None:
        self.loop.create_task(self.func(self.job))
        self.tick += self.period
        self.loop.call_at(self.tick + self.offset, self.fire)


def _start(create_task: Callable[..., object], func: JobFunc, job: int) -> None:
    create_task(func(job))


class FloorAdapter(Adapter):
    """What asyncio itself can do: no registry, no bookkeeping beyond the timer."""

    loop: asyncio.AbstractEventLoop
    offset: float

    def version(self) -> str:
        return f"asyncio (Python {platform.python_version()})"

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        # Wall (epoch) time -> loop time, measured once.
        self.offset = self.loop.time() - time.time()

    async def stop(self) -> None:
        return None

    async def add_every(self, func: JobFunc, jobs: range, seconds: int, first: int) -> None:
        loop, offset = self.loop, self.offset
        for job in jobs:
            _Every(loop, offset, func, job, seconds, first)

    async def add_once(self, func: JobFunc, jobs: range, at: float) -> None:
        loop = self.loop
        when = at + self.offset
        create_task = loop.create_task
        for job in jobs:
            loop.call_at(when, _start, create_task, func, job)
