"""Run cases in fresh interpreters, interleaving repeats round-robin across schedulers."""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .cases.measure import lateness_stats
from .envs import REPO_DIR, python_for
from .plan import Case

__all__ = ("iter_runs", "run_one")


def _command(scheduler: str, scenario: str, params: dict[str, Any]) -> list[str]:
    interpreter = sys.executable if scenario == "cron_next" else str(python_for(scheduler))
    return [interpreter, "-m", "benchmarks.cases", scheduler, scenario, json.dumps(params)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_DIR)
    env.pop("PYTHONSTARTUP", None)
    return env


def _finish(proc: subprocess.Popen[str], timeout: float, log: Path) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n[bench] killed after {timeout:.0f} s"
    with log.open("a") as f:
        f.write(f"$ {proc.args!s:.300}\n{err}\n")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        result: dict[str, Any] = json.loads(lines[-1])
        return result
    tail = (err.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail[:300]}"}


def _start_window(procs: list[subprocess.Popen[str]], timeout: float) -> None:
    """Wait until every instance is READY, then send them all one window start.

    An instance that dies or says nothing within ``timeout`` s stops the wait; the
    others still get a window, and ``_finish`` reports what went wrong.
    """
    deadline = time.monotonic() + timeout
    for proc in procs:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else ""  # "" if it died
        if line.strip() != "READY":
            break
    window_start = math.ceil(time.time() + 1.0)
    for proc in procs:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write(f"{window_start}\n")
            proc.stdin.flush()


def _merge_instances(case: Case, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the runs of several instances of one distributed measurement."""
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"error": errors[0]}
    runs = [tuple(run) for r in results for run in r.pop("raw_runs")]
    merged: dict[str, Any] = dict(
        lateness_stats(
            runs, int(case.params["n"]), results[0]["window_start"], case.params["window"]
        )
    )
    merged["cpu_pct"] = sum(r["cpu_pct"] for r in results) / len(results)
    merged["cpu_pct_total"] = sum(r["cpu_pct"] for r in results)
    merged["instance_runs"] = [r["runs"] for r in results]
    # Negative: some instance was still adding jobs when the shared window opened.
    merged["adds_done_before_window_s"] = min(r["adds_done_before_window_s"] for r in results)
    merged["version"] = results[0].get("version")
    return merged


def _forget(locker: str | None, job_prefix: str, log: Path) -> None:
    """Delete what one distributed measurement left behind (its jobs' claims, tokens and
    run history), so that every measurement starts from the same server state rather
    than from a Redis or a table grown by the ones before it."""
    from .cases.adapters.asyncron_ import POSTGRES_DSN, REDIS_URL

    try:
        if locker == "redis":
            import redis

            with redis.Redis.from_url(REDIS_URL) as client:
                keys = list(client.scan_iter(match=f"asyncron:{{{job_prefix}*", count=1000))
                for i in range(0, len(keys), 1000):
                    client.delete(*keys[i : i + 1000])
        elif locker == "postgres":
            import asyncio

            import asyncpg

            async def purge() -> None:
                conn = await asyncpg.connect(POSTGRES_DSN)
                try:
                    like = f"{job_prefix}%"
                    await conn.execute("DELETE FROM asyncron_claims WHERE key LIKE $1", like)
                    await conn.execute("DELETE FROM asyncron_tokens WHERE key LIKE $1", like)
                    await conn.execute("DELETE FROM asyncron_runs WHERE job LIKE $1", like)
                finally:
                    await conn.close()

            asyncio.run(purge())
    except Exception as exc:  # a leftover slows later runs a little; it is no failure
        with log.open("a") as f:
            f.write(f"[bench] could not clean up after {job_prefix!r}: {exc!r}\n")


def run_one(case: Case, scheduler: str, log: Path) -> dict[str, Any]:
    """Run one measurement of ``case`` for ``scheduler`` and return its result dict."""
    params = dict(case.params)
    if case.scenario == "distributed":
        # Several processes share keys (one prefix per measurement) and one window,
        # which starts once every instance has had time to start and add its jobs.
        adapter = {**params.get("adapter", {}), "prefix": f"b{uuid.uuid4().hex[:8]}-"}
        params["adapter"] = adapter
        params["raw"] = True
        params["sync"] = True
    procs = [
        subprocess.Popen(
            _command(scheduler, case.scenario, params),
            cwd=REPO_DIR,
            env=_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(case.instances)
    ]
    if params.get("sync"):
        _start_window(procs, case.timeout / 2)
    results = [_finish(p, case.timeout, log) for p in procs]
    if case.scenario == "distributed":
        _forget(params["adapter"].get("locker"), params["adapter"]["prefix"], log)
        return _merge_instances(case, results)
    return results[0]


def iter_runs(
    cases: list[Case], log: Path
) -> Iterator[tuple[int, Case, str, dict[str, Any], float]]:
    """Yield ``(repeat, case, scheduler, result, seconds)`` round-robin.

    Each repeat walks every case; within a case every scheduler runs once, in an order
    rotated by the repeat number, so slow drifts in machine load hit all alike.
    """
    max_repeats = max((c.repeats for c in cases), default=0)
    for repeat in range(max_repeats):
        for case in cases:
            if repeat >= case.repeats:
                continue
            k = repeat % len(case.schedulers)
            order = case.schedulers[k:] + case.schedulers[:k]
            for scheduler in order:
                t0 = time.perf_counter()
                result = run_one(case, scheduler, log)
                yield repeat, case, scheduler, result, time.perf_counter() - t0
