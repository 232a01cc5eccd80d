"""aiocron: one ``crontab`` per job (cron expressions only, seconds field first).

aiocron has neither intervals nor one-off jobs, so "every N s" becomes the cron
expression that fires on the same aligned instants, and a one-off becomes a cron
matching only that second of the year (a user's only option).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from .base import Adapter, JobFunc

__all__ = ("AiocronAdapter",)


def every_spec(seconds: int, first: int) -> str:
    """The 6-field (seconds first) cron expression for "every ``seconds``" from ``first``."""
    at = datetime.fromtimestamp(first, UTC)
    if seconds == 1:
        return "* * * * * *"
    if seconds == 60:
        return f"{at.second} * * * * *"
    if seconds == 3600:
        return f"{at.second} {at.minute} * * * *"
    raise ValueError(f"no cron expression for every {seconds} s")


class AiocronAdapter(Adapter):
    """Crons are created with ``aiocron.crontab(spec, func, args, start=True, tz=UTC)``."""

    crontab: Any

    def version(self) -> str:
        from importlib.metadata import version

        return f"aiocron {version('aiocron')}"

    async def start(self) -> None:
        import aiocron  # type: ignore[import-not-found]

        self.crontab = aiocron.crontab
        self.loop = asyncio.get_running_loop()
        self.crons: list[Any] = []

    async def stop(self) -> None:
        for cron in self.crons:
            cron.stop()

    async def add_every(self, func: JobFunc, jobs: range, seconds: int, first: int) -> None:
        spec = every_spec(seconds, first)
        keep, loop, crontab = self.crons.append, self.loop, self.crontab
        for job in jobs:
            keep(crontab(spec, func=func, args=(job,), start=True, loop=loop, tz=UTC))

    async def add_once(self, func: JobFunc, jobs: range, at: float) -> None:
        t = datetime.fromtimestamp(at, UTC)
        spec = f"{t.second} {t.minute} {t.hour} {t.day} {t.month} *"
        keep, loop, crontab = self.crons.append, self.loop, self.crontab
        for job in jobs:
            keep(crontab(spec, func=func, args=(job,), start=True, loop=loop, tz=UTC))
