"""Measurement helpers shared by every scenario: job bodies, RSS, CPU, loop draining."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections.abc import Sequence

__all__ = (
    "COUNTS",
    "RUNS",
    "count",
    "drain_loop",
    "lateness_stats",
    "percentile",
    "record",
    "rss_bytes",
    "sleep_until",
    "window_from_parent",
)

#: Every run of :func:`record`: ``(job, time.time())`` at the start of the body.
RUNS: list[tuple[int, float]] = []
#: One counter for :func:`count` (the soak body, which must not grow memory).
COUNTS: list[int] = [0]

_PAGE = os.sysconf("SC_PAGE_SIZE")


async def record(job: int) -> None:
    """The job body of every scenario but soak: note which job started, and when."""
    RUNS.append((job, time.time()))


async def count(job: int) -> None:
    """The soak body: count the run without allocating anything that lives on."""
    COUNTS[0] += 1


def rss_bytes() -> int:
    """Resident set size of this process, from ``/proc/self/statm``."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


async def drain_loop(max_seconds: float = 1.0) -> int:
    """Yield to the event loop until it has no ready callbacks left; return the turns.

    Adds may queue work on the loop (``call_soon``, tasks); add_cost counts it, so the
    clock stops only once the ready queue stays empty for three turns in a row. A
    scheduler busy running jobs never empties it, so the wait ends after
    ``max_seconds`` whatever happens.
    """
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    deadline = time.perf_counter() + max_seconds
    quiet = turns = 0
    while quiet < 3 and time.perf_counter() < deadline:
        await asyncio.sleep(0)
        turns += 1
        quiet = quiet + 1 if ready is None or not ready else 0
    return turns


async def sleep_until(when: float) -> None:
    """Sleep until the wall clock reads ``when`` (epoch seconds)."""
    delay = when - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def window_from_parent() -> int:
    """Tell the parent this instance is ready; return the window start it sends back.

    Used to line up several instances: the parent waits for every ``READY`` line,
    then writes one epoch second to each instance's stdin.
    """
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return int(line)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0…1) of sorted ``values`` by the nearest-rank method."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(q * len(values)))
    return values[min(rank, len(values)) - 1]


def lateness_stats(
    runs: Sequence[tuple[int, float]], n_jobs: int, window_start: int, window: int
) -> dict[str, float | int | list[int]]:
    """Lateness of the runs whose start falls in ``[window_start, window_start + window)``.

    A run's tick is the latest whole second at or before its start (every job ticks
    each second), so lateness is ``start - floor(start)``. A job-tick is missed when no
    run of that job starts within that second; a second run of one job in one second
    is a duplicate (it is also what a run more than a second late looks like).
    """
    end = window_start + window
    lateness: list[float] = []
    seen: set[tuple[int, int]] = set()
    for job, t in runs:
        if window_start <= t < end:
            tick = math.floor(t)
            lateness.append(t - tick)
            seen.add((job, tick))
    lateness.sort()
    expected = n_jobs * window
    per_tick = [0] * window
    for _, tick in seen:
        per_tick[tick - window_start] += 1
    return {
        "runs": len(lateness),
        "expected": expected,
        "missed": expected - len(seen),
        "duplicates": len(lateness) - len(seen),
        "p50_ms": percentile(lateness, 0.50) * 1e3,
        "p99_ms": percentile(lateness, 0.99) * 1e3,
        "max_ms": (lateness[-1] if lateness else math.nan) * 1e3,
        "jobs_run_per_tick": per_tick,
    }
