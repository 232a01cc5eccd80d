"""The same app on several processes, coordinated by Redis: each tick runs once.

Starts N worker processes (this file with ``--worker``), each running a Scheduler
with a :class:`~asyncron.distributed.redis.RedisLocker` and three jobs every second.
Every instance schedules every job; for each (job, tick) one instance wins the claim
and runs it, the others skip it as ``tick_claimed``. Ten seconds after the first run
the workers get SIGTERM (a graceful shutdown), and the parent prints which instance
ran which tick and checks that each tick ran once::

    python examples/distributed_redis.py [--url redis://127.0.0.1:6379/0]
                                         [--instances 3] [--seconds 10]

Needs a Redis server (``redis-server --appendonly yes`` keeps the claims across a
restart) and ``pip install 'asyncron[redis]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO

from asyncron import RunContext, Scheduler, every
from asyncron.distributed.redis import RedisLocker

JOBS = ("report", "cleanup", "sync")
PREFIX = "asyncron-example"


async def worker(url: str, out: IO[str]) -> None:
    """One instance of the app: the same jobs as every other instance."""
    scheduler = Scheduler(locker=RedisLocker(url, prefix=PREFIX, ttl=10))

    async def job(ctx: RunContext) -> None:
        line = {"job": ctx.job.name, "tick": ctx.tick.isoformat(), "pid": os.getpid()}
        out.write(json.dumps({**line, "token": ctx.fencing_token}) + "\n")
        out.flush()

    for name in JOBS:
        scheduler.add_job(job, every(seconds=1), name=name)
    await scheduler.run_forever()  # until SIGTERM/SIGINT, then a graceful shutdown


def main() -> int:
    parser = argparse.ArgumentParser(description="each tick once across N processes (Redis)")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--worker", metavar="OUTPUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        with open(args.worker, "a", encoding="utf-8") as out:
            asyncio.run(worker(args.url, out))
        return 0

    directory = Path(tempfile.mkdtemp(prefix="asyncron-example-"))
    outputs = [directory / f"instance-{i}.jsonl" for i in range(args.instances)]
    procs = [
        subprocess.Popen([sys.executable, __file__, "--url", args.url, "--worker", str(out)])
        for out in outputs
    ]
    labels = {proc.pid: chr(ord("A") + i) for i, proc in enumerate(procs)}
    print(
        f"started {args.instances} instances: " + ", ".join(f"{v}={k}" for k, v in labels.items())
    )
    try:
        # Count the time from the first run: starting interpreters takes a few seconds.
        deadline = time.monotonic() + 60
        while not any(out.exists() and out.stat().st_size for out in outputs):
            if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
                print("the instances did not start: is the server up?")
                break
            time.sleep(0.1)
        else:
            time.sleep(args.seconds)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)

    runs = [
        json.loads(line)
        for out in outputs
        if out.exists()
        for line in out.read_text(encoding="utf-8").splitlines()
    ]
    by_tick: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_tick[run["tick"]][run["job"]].append(labels.get(run["pid"], str(run["pid"])))
    print(f"\n{'tick':<26}" + "".join(f"{job:>10}" for job in JOBS))
    for tick in sorted(by_tick):
        cells = ("+".join(by_tick[tick].get(job, ["-"])) for job in JOBS)
        print(f"{tick:<26}" + "".join(f"{cell:>10}" for cell in cells))
    counts = Counter((run["job"], run["tick"]) for run in runs)
    twice = [key for key, n in counts.items() if n > 1]
    share = Counter(labels.get(run["pid"], "?") for run in runs)
    print(f"\n{len(runs)} runs of {len(counts)} (job, tick) pairs; per instance: {dict(share)}")
    if twice:
        print(f"FAILED: {len(twice)} ticks ran more than once: {twice[:5]}")
        return 1
    print("each tick ran once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
