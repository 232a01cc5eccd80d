"""The scheduler scenarios of issue 5, each run once per fresh interpreter.

Every scenario takes an :class:`~.adapters.Adapter` and its parameters and returns a
flat dict of numbers (plus ``raw_runs`` when asked for, so the parent can merge the
runs of several instances).
"""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import measure
from .adapters import Adapter

__all__ = ("SCENARIOS",)

Result = dict[str, Any]


def _phase(name: str) -> None:
    """Note a phase on stderr (kept in the run's log), to see where a case got stuck."""
    sys.stderr.write(f"[case] {time.time():.3f} {name}\n")
    sys.stderr.flush()


STOP_TIMEOUT = 15.0


async def _stop(adapter: Adapter) -> None:
    """Stop the scheduler, giving up after STOP_TIMEOUT s (the results are already taken)."""
    _phase("stop")
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await adapter.stop()
    except TimeoutError:
        _phase(f"stop timed out after {STOP_TIMEOUT} s")


async def _lead_for(adapter: Adapter, n: int, min_lead: float) -> float:
    """Seconds to leave before the first tick so that adding ``n`` jobs ends before it.

    Times 200 one-offs due an hour later (they never fire during a case) and returns
    ``max(min_lead, 0.5 + 1.5 x estimated add time)``: ticks falling due while jobs are
    still being added would measure the adds, not the scheduling (APScheduler 3, for
    one, re-scans every due job on each add's wake-up).
    """
    calib = 200
    t0 = time.perf_counter()
    await adapter.add_once(measure.record, range(-calib, 0), time.time() + 3600)
    await measure.drain_loop(max_seconds=10)
    per_job = (time.perf_counter() - t0) / calib
    return max(min_lead, 0.5 + 1.5 * per_job * n)


async def add_cost(adapter: Adapter, p: dict[str, Any]) -> Result:
    """Add ``n`` jobs "every 60 s" to a running scheduler: µs and RSS bytes per job.

    The clock covers the adds and the work they queue on the loop (drained until the
    ready queue stays empty). The first tick is a minute away, so nothing fires.
    """
    n = int(p["n"])
    await adapter.start()
    await measure.drain_loop()
    gc.collect()
    rss0 = measure.rss_bytes()
    first = math.ceil(time.time()) + 60
    t0 = time.perf_counter()
    await adapter.add_every(measure.record, range(n), 60, first)
    turns = await measure.drain_loop(max_seconds=120)
    elapsed = time.perf_counter() - t0
    gc.collect()
    rss1 = measure.rss_bytes()
    fired = len(measure.RUNS)
    await _stop(adapter)
    return {
        "us_per_job": elapsed / n * 1e6,
        "bytes_per_job": (rss1 - rss0) / n,
        "drain_turns": turns,
        "fired_during_adds": fired,
    }


async def lateness(adapter: Adapter, p: dict[str, Any]) -> Result:
    """``n`` jobs every 1 s on whole seconds; lateness, misses and CPU over a window.

    Jobs start ticking at ``first``, set after the estimated end of the adds; the
    window begins at the first whole second at least 0.3 s after the adds are done
    (with ``sync``, when the parent says, once every instance has added its jobs) and
    lasts ``window`` seconds.
    """
    n, window = int(p["n"]), int(p["window"])
    await adapter.start()
    first = math.ceil(time.time() + await _lead_for(adapter, n, 1.0))
    t0 = time.perf_counter()
    await adapter.add_every(measure.record, range(n), 1, first)
    await measure.drain_loop()
    adds_s = time.perf_counter() - t0
    gc.collect()  # the adds' collection debt is not the window's (see README)
    done = time.time()
    _phase("added")
    if p.get("sync"):
        window_start = await measure.window_from_parent()
    else:
        window_start = max(first, math.ceil(done + 0.3))
    await measure.sleep_until(window_start)
    _phase("window")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await measure.sleep_until(window_start + window)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    _phase("window end")
    await _stop(adapter)
    result: Result = measure.lateness_stats(measure.RUNS, n, window_start, window)
    result.update(
        cpu_pct=(cpu1 - cpu0) / (wall1 - wall0) * 100,
        adds_s=adds_s,
        adds_done_before_window_s=window_start - done,
        window_start=window_start,
    )
    if p.get("raw"):
        end = window_start + window
        result["raw_runs"] = [(j, t) for j, t in measure.RUNS if window_start <= t < end]
    return result


async def burst(adapter: Adapter, p: dict[str, Any]) -> Result:
    """``n`` one-off jobs due at the same instant: first/median/last start, starts/s.

    The due instant must come after the last add, and adding takes from milliseconds
    (floor) to seconds (a loaded machine, a slow scheduler): see :func:`_lead_for`.
    """
    n = int(p["n"])
    await adapter.start()
    due = math.ceil(time.time() + await _lead_for(adapter, n, float(p.get("lead", 2))))
    await adapter.add_once(measure.record, range(n), due)
    await measure.drain_loop(max_seconds=10)
    gc.collect()  # the adds' collection debt is not the burst's (see README)
    margin = due - time.time()
    await measure.sleep_until(due)
    # Poll rather than signal from the body, so the body stays the same everywhere.
    for _ in range(int(float(p.get("timeout", 20)) / 0.05)):
        if len(measure.RUNS) >= n:
            break
        await asyncio.sleep(0.05)
    await _stop(adapter)
    starts = sorted(t - due for _, t in measure.RUNS)
    if not starts:
        return {"started": 0, "adds_margin_s": margin}
    drain = starts[-1]
    return {
        "started": len(starts),
        "first_ms": starts[0] * 1e3,
        "median_ms": measure.percentile(starts, 0.5) * 1e3,
        "drain_ms": drain * 1e3,
        "starts_per_s": len(starts) / drain if drain > 0 else math.inf,
        "adds_margin_s": margin,
    }


async def idle_cpu(adapter: Adapter, p: dict[str, Any]) -> Result:
    """``n`` hourly jobs (first an hour away); CPU % of one core over an idle window."""
    n, window = int(p["n"]), float(p["window"])
    await adapter.start()
    await adapter.add_every(measure.record, range(n), 3600, math.ceil(time.time()) + 3600)
    await measure.drain_loop()
    await asyncio.sleep(float(p.get("settle", 1)))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(window)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    await _stop(adapter)
    return {"cpu_pct": (cpu1 - cpu0) / (wall1 - wall0) * 100, "fired": len(measure.RUNS)}


async def soak(adapter: Adapter, p: dict[str, Any]) -> Result:
    """``n`` jobs every second for ``duration`` s: RSS after warm-up vs at the end, runs.

    The body only bumps a counter (appending would grow memory by itself). Runs are
    counted between ``first - 0.05`` and ``first + duration - 0.05``.
    """
    n, duration, warmup = int(p["n"]), int(p["duration"]), int(p["warmup"])
    await adapter.start()
    first = math.ceil(time.time() + await _lead_for(adapter, n, 1.0))
    await adapter.add_every(measure.count, range(n), 1, first)
    await measure.drain_loop()
    first = max(first, math.ceil(time.time()))
    await measure.sleep_until(first - 0.05)
    c0 = measure.COUNTS[0]
    await measure.sleep_until(first + warmup - 0.05)
    gc.collect()
    rss_warm = measure.rss_bytes()
    samples = [rss_warm]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for k in range(warmup + 10, duration, 10):
        await measure.sleep_until(first + k - 0.05)
        samples.append(measure.rss_bytes())
    await measure.sleep_until(first + duration - 0.05)
    c1 = measure.COUNTS[0]
    cpu1, wall1 = time.process_time(), time.perf_counter()
    gc.collect()
    rss_end = measure.rss_bytes()
    samples.append(rss_end)
    await _stop(adapter)
    expected = n * duration
    return {
        "rss_warm_mb": rss_warm / 2**20,
        "rss_end_mb": rss_end / 2**20,
        "rss_growth_pct": (rss_end - rss_warm) / rss_warm * 100,
        "runs": c1 - c0,
        "expected": expected,
        "lost": expected - (c1 - c0),
        "cpu_pct": (cpu1 - cpu0) / (wall1 - wall0) * 100,
        "rss_samples_mb": [s / 2**20 for s in samples],
    }


SCENARIOS: dict[str, Callable[[Adapter, dict[str, Any]], Awaitable[Result]]] = {
    "add_cost": add_cost,
    "lateness": lateness,
    "distributed": lateness,
    "burst": burst,
    "idle_cpu": idle_cpu,
    "soak": soak,
}
