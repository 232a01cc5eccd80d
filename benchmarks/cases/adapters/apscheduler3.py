"""APScheduler 3.x: ``AsyncIOScheduler`` with its defaults (memory store, asyncio executor)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from .base import Adapter, JobFunc

__all__ = ("APScheduler3Adapter",)


class APScheduler3Adapter(Adapter):
    """Jobs are added the documented way: ``add_job(func, "interval"|"date", ...)``."""

    def version(self) -> str:
        import apscheduler  # type: ignore[import-not-found]

        return f"APScheduler {apscheduler.__version__}"

    async def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-not-found]

        self.scheduler = AsyncIOScheduler()
        self.scheduler.start()

    async def stop(self) -> None:
        # Shutting down cancels the runs in flight, and APScheduler logs each one.
        logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
        self.scheduler.shutdown(wait=False)

    async def add_every(self, func: JobFunc, jobs: range, seconds: int, first: int) -> None:
        add_job = self.scheduler.add_job
        start = datetime.fromtimestamp(first, UTC)
        for job in jobs:
            add_job(func, "interval", seconds=seconds, start_date=start, args=(job,))

    async def add_once(self, func: JobFunc, jobs: range, at: float) -> None:
        add_job = self.scheduler.add_job
        when = datetime.fromtimestamp(at, UTC)
        for job in jobs:
            add_job(func, "date", run_date=when, args=(job,))
