"""asyncron, from the project's own environment (design §1 API).

Options: ``locker`` (``None``, ``"redis"`` or ``"postgres"``; URLs from
``ASYNCRON_REDIS_URL`` / ``ASYNCRON_POSTGRES_DSN``) and ``prefix`` (job names are
``f"{prefix}j{job}"``, so instances of one distributed case share keys and separate
cases never do).
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from .base import Adapter, JobFunc

__all__ = ("AsyncronAdapter",)

REDIS_URL = os.environ.get("ASYNCRON_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("ASYNCRON_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


class AsyncronAdapter(Adapter):
    """Jobs are added with ``scheduler.add_job(func, every(seconds=...), name=..., args=...)``."""

    scheduler: Any

    def version(self) -> str:
        return f"asyncron {version('asyncron')}"

    async def _make_locker(self, stack: AsyncExitStack) -> Any:
        kind = self.options.get("locker")
        if kind is None:
            return None
        if kind == "redis":
            from asyncron.distributed.redis import RedisLocker

            return await stack.enter_async_context(RedisLocker(REDIS_URL))
        if kind == "postgres":
            from asyncron.distributed.postgres import PostgresLocker

            return await stack.enter_async_context(PostgresLocker(POSTGRES_DSN))
        raise ValueError(f"unknown locker {kind!r}")

    async def start(self) -> None:
        from asyncron import Scheduler

        self.stack = AsyncExitStack()
        locker = await self._make_locker(self.stack)
        kwargs = {} if locker is None else {"locker": locker}
        self.scheduler = Scheduler(**kwargs)
        await self.stack.enter_async_context(self.scheduler)
        self.prefix = str(self.options.get("prefix", ""))

    async def stop(self) -> None:
        await self.stack.aclose()

    async def add_every(self, func: JobFunc, jobs: range, seconds: int, first: int) -> None:
        from asyncron import every

        add_job, prefix = self.scheduler.add_job, self.prefix
        start = datetime.fromtimestamp(first, UTC)
        for job in jobs:
            add_job(
                func, every(seconds=seconds), name=f"{prefix}j{job}", args=(job,), start_at=start
            )

    async def add_once(self, func: JobFunc, jobs: range, at: float) -> None:
        from asyncron import once

        add_job, prefix = self.scheduler.add_job, self.prefix
        when = datetime.fromtimestamp(at, UTC)
        for job in jobs:
            add_job(func, once(at=when), name=f"{prefix}j{job}", args=(job,))
