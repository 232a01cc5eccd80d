"""APScheduler 4.0 (alpha): ``AsyncScheduler`` with the memory data store.

Its tasks default to ``max_running_jobs=1``, which would serialise every job sharing
the one body function; the adapter sets ``TaskDefaults(max_running_jobs=None)``
(unlimited) and otherwise keeps the defaults (``max_concurrent_jobs=100``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .base import Adapter, JobFunc

__all__ = ("APScheduler4Adapter",)


class APScheduler4Adapter(Adapter):
    """Schedules are added with ``await add_schedule(func, trigger, args=...)``."""

    scheduler: Any

    def version(self) -> str:
        from importlib.metadata import version

        return f"APScheduler {version('apscheduler')}"

    async def start(self) -> None:
        from apscheduler import AsyncScheduler, TaskDefaults  # type: ignore[import-not-found]

        self.scheduler = AsyncScheduler(task_defaults=TaskDefaults(max_running_jobs=None))
        await self.scheduler.__aenter__()
        await self.scheduler.start_in_background()

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.scheduler.__aexit__(None, None, None)

    async def add_every(self, func: JobFunc, jobs: range, seconds: int, first: int) -> None:
        from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-not-found]

        add_schedule = self.scheduler.add_schedule
        start = datetime.fromtimestamp(first, UTC)
        for job in jobs:
            await add_schedule(
                func, IntervalTrigger(seconds=seconds, start_time=start), args=(job,)
            )

    async def add_once(self, func: JobFunc, jobs: range, at: float) -> None:
        from apscheduler.triggers.date import DateTrigger  # type: ignore[import-not-found]

        add_schedule = self.scheduler.add_schedule
        when = datetime.fromtimestamp(at, UTC)
        for job in jobs:
            await add_schedule(func, DateTrigger(when), args=(job,))
