"""``python -m benchmarks.instructions add_job|locked|refused|unlocked``: CPU instructions
per unit of work, counted by valgrind (callgrind), so a change can be compared on a
machine whose timings swing 2x from one minute to the next.

Each workload runs twice under ``valgrind --tool=callgrind`` with a small and a large
count; the difference of the two totals divided by the difference of the counts is the
cost of one unit, start-up and imports cancelled out.

- ``add_job``: one ``add_job(f, every(seconds=60), name=..., args=(j,), start_at=...)``
  on a running scheduler, as in the add_cost scenario.
- ``locked``: one run of 1,000 jobs a tick under a ``RedisLocker`` that wins every
  lock (dispatch, lock request, reply, run, release), on a ``VirtualClock``.
- ``refused``: the same, every tick already claimed: one refusal per job and tick.
- ``unlocked``: the same jobs and ticks without a locker.
- ``burst``: one one-off job (``once(at=...)``, all due at the same instant, as in the
  burst scenario) dispatched, run and retired, on a ``VirtualClock`` (the cost of
  adding them, counted alone, is taken off); ``burst_floor``: one ``loop.call_at``
  timer that starts a task (the floor adapter's one-offs), fired and run (the adds
  taken off alike).

The last three need Redis (``ASYNCRON_REDIS_URL``, default ``redis://127.0.0.1:6379/0``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .runner import _forget

REDIS_URL = os.environ.get("ASYNCRON_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Small and large count of each workload (jobs added; ticks of 1,000 jobs).
COUNTS = {
    "add_job": (2_000, 12_000),
    "locked": (2, 6),
    "refused": (2, 6),
    "unlocked": (2, 6),
    "burst": (2_000, 12_000),
    "burst_floor": (2_000, 12_000),
}
JOBS_PER_TICK = 1_000


async def _add_job(n: int) -> None:
    from asyncron import Scheduler, every

    def body(job: int) -> None:
        pass

    async with Scheduler() as scheduler:
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
        for job in range(n):
            scheduler.add_job(body, every(seconds=60), name=f"j{job}", args=(job,), start_at=start)


async def _burst(n: int, fire: bool = True) -> None:
    from asyncron import Scheduler, once
    from asyncron.testing import VirtualClock

    async def body(job: int) -> None:
        pass

    clock = VirtualClock(datetime.now(UTC).replace(microsecond=0))
    async with Scheduler(clock=clock) as scheduler:
        due = once(at=clock.now() + timedelta(seconds=1))
        for job in range(n):
            scheduler.add_job(body, due, name=f"j{job}", args=(job,))
        if not fire:
            return
        idle = scheduler._idle = asyncio.Event()
        await clock.advance(seconds=1)
        if scheduler._tasks:
            await idle.wait()
        assert not scheduler.jobs


async def _burst_floor(n: int, fire: bool = True) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    left = [n]
    tasks = set()

    async def body(job: int) -> None:  # the floor's body, plus telling when all ran
        left[0] -= 1
        if not left[0]:
            done.set()

    def start(job: int) -> None:
        task = loop.create_task(body(job))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    due = loop.time() + 0.01
    timers = [loop.call_at(due, start, job) for job in range(n)]
    if not fire:
        for timer in timers:
            timer.cancel()
        return
    await done.wait()


async def _ticks(kind: str, ticks: int, prefix: str) -> None:
    from asyncron import Scheduler, every
    from asyncron.distributed.redis import RedisLocker
    from asyncron.testing import VirtualClock

    async def body(job: int) -> None:
        pass

    clock = VirtualClock(datetime.now(UTC).replace(microsecond=0))
    async with RedisLocker(REDIS_URL, clock=clock) as locker:
        if kind == "refused":  # every tick is claimed already: each request is refused
            claims = {f"asyncron:{{{prefix}j{j}}}:claim": 10**17 for j in range(JOBS_PER_TICK)}
            await locker.client.mset(claims)
        options: dict[str, Any] = {} if kind == "unlocked" else {"locker": locker}
        async with Scheduler(clock=clock, **options) as scheduler:
            for job in range(JOBS_PER_TICK):
                scheduler.add_job(body, every(seconds=1), name=f"{prefix}j{job}", args=(job,))
            for _ in range(ticks):
                # The scheduler sets _idle once its run table is empty: the tick's batch
                # and runs are over (a locked run stays in the table until its release
                # is done).
                idle = scheduler._idle = asyncio.Event()
                await clock.advance(seconds=1)
                if scheduler._tasks:
                    await idle.wait()


def _instructions(workload: str, count: int) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--inner",
        workload,
        str(count),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr}")
    return int(found.group(1))


def main(argv: list[str]) -> None:
    """Print the instructions per unit of each named workload (all when none)."""
    if argv[:1] == ["--inner"]:
        workload, count = argv[1], int(argv[2])
        if workload == "add_job":
            asyncio.run(_add_job(count))
        elif workload.startswith("burst"):
            # "burst_adds" and "burst_floor_adds": the adds alone, taken off the burst's count.
            burst = _burst_floor if workload.startswith("burst_floor") else _burst
            asyncio.run(burst(count, fire=not workload.endswith("_adds")))
        else:
            # Job names under a fresh prefix, whose keys the benchmark runner's cleanup
            # deletes afterwards (as after a distributed measurement).
            prefix = f"instr{uuid.uuid4().hex[:8]}-"
            try:
                asyncio.run(_ticks(workload, count, prefix))
            finally:
                _forget("redis", prefix, Path(os.devnull))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind not found: install it (Debian: apt-get install valgrind)")
    for workload in argv or list(COUNTS):
        if workload not in COUNTS:
            sys.exit(f"unknown workload {workload!r}: one of {', '.join(COUNTS)}")
        small, large = COUNTS[workload]
        per = (_instructions(workload, large) - _instructions(workload, small)) / (large - small)
        if workload.startswith("burst"):
            adds = f"{workload}_adds"
            added = _instructions(adds, large) - _instructions(adds, small)
            per -= added / (large - small)
        unit = {"add_job": "add", "burst": "one-off", "burst_floor": "one-off"}.get(workload, "run")
        if unit == "run":
            per /= JOBS_PER_TICK
        print(f"{workload:10} {per:10,.0f} instructions per {unit}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
