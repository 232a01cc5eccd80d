"""cron_next: µs per successive next-fire time in asyncron, croniter and cronsim.

All three start from the same instant (UTC) and walk ``fires`` successive fire times;
the result carries the last one and a digest of the whole sequence, so the parent can
check that every implementation produced the same times.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

__all__ = ("IMPLEMENTATIONS", "run_cron_next")

START = datetime(2026, 1, 1, tzinfo=UTC)


def _croniter(expr: str) -> Callable[[], datetime]:
    from croniter import croniter

    it = croniter(expr, START)
    return lambda: it.get_next(datetime)


def _cronsim(expr: str) -> Callable[[], datetime]:
    from cronsim import CronSim

    it: Iterator[datetime] = CronSim(expr, START)
    return it.__next__


def _asyncron(expr: str) -> Callable[[], datetime]:
    from asyncron._schedules import cron

    try:
        schedule = cron(expr, tz="UTC")
    except TypeError:
        schedule = cron(expr)
    state = [START]

    def step() -> datetime:
        nxt: datetime | None = schedule.next_fire(state[0])
        if nxt is None:
            raise RuntimeError(f"{expr!r} stopped firing after {state[0]}")
        state[0] = nxt
        return nxt

    return step


#: Implementation name -> (factory of a "next fire" callable, distribution name).
IMPLEMENTATIONS: dict[str, tuple[Callable[[str], Callable[[], datetime]], str]] = {
    "croniter": (_croniter, "croniter"),
    "cronsim": (_cronsim, "cronsim"),
    "asyncron": (_asyncron, "asyncron"),
}


def run_cron_next(impl: str, p: dict[str, Any]) -> dict[str, Any]:
    """Time ``p["fires"]`` successive next-fire computations of ``p["expr"]``."""
    factory, dist = IMPLEMENTATIONS[impl]
    expr, fires = str(p["expr"]), int(p["fires"])
    step = factory(expr)
    times: list[datetime] = [START] * fires
    t0 = time.perf_counter()
    for i in range(fires):
        times[i] = step()
    elapsed = time.perf_counter() - t0
    digest = hashlib.sha256()
    for t in times:
        digest.update(str(int(t.timestamp())).encode())
    return {
        "us_per_fire": elapsed / fires * 1e6,
        "last": times[-1].astimezone(UTC).isoformat(),
        "digest": digest.hexdigest()[:16],
        "version": f"{dist} {version(dist)}",
    }
