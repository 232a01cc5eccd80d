"""The cluster demo behind ``distributed_redis.py`` and ``distributed_postgres.py``:
start N instances of one app, let them run, then show which instance ran each tick.

Every instance adds the same jobs; the locker lets one instance run each tick. The
table printed at the end has a row per tick and the instance (A, B, C…) that ran each
job, and the demo fails if any tick ran twice.
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
from collections.abc import Callable
from pathlib import Path
from typing import IO

from asyncron import RunContext, Scheduler, every
from asyncron.distributed import Locker

JOBS = ("report", "cleanup", "sync")


async def worker(make_locker: Callable[[str], Locker], target: str, out: IO[str]) -> None:
    """One instance of the app: the same jobs as every other instance."""
    scheduler = Scheduler(locker=make_locker(target))

    async def job(ctx: RunContext) -> None:
        line = {"job": ctx.job.name, "tick": ctx.tick.isoformat(), "pid": os.getpid()}
        out.write(json.dumps({**line, "token": ctx.fencing_token}) + "\n")
        out.flush()

    for name in JOBS:
        scheduler.add_job(job, every(seconds=1), name=name)
    await scheduler.run_forever()  # until SIGTERM/SIGINT, then a graceful shutdown


def run_demo(
    script: str,
    make_locker: Callable[[str], Locker],
    *,
    server: str,
    option: str,
    default: str,
) -> int:
    """Run ``script`` as N worker processes for a while, then show who ran which tick.

    :param script: the example file, started again with ``--worker`` for each instance
    :param make_locker: builds the instance's locker from the server address
    :param server: the server's name, for the help text
    :param option: the command-line option of the address (``--url``, ``--dsn``)
    :param default: the address used when the option is not given
    """
    parser = argparse.ArgumentParser(description=f"each tick once across N processes ({server})")
    parser.add_argument(option, dest="target", default=default)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--worker", metavar="OUTPUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        with open(args.worker, "a", encoding="utf-8") as out:
            asyncio.run(worker(make_locker, args.target, out))
        return 0

    directory = Path(tempfile.mkdtemp(prefix="asyncron-example-"))
    outputs = [directory / f"instance-{i}.jsonl" for i in range(args.instances)]
    procs = [
        subprocess.Popen([sys.executable, script, option, args.target, "--worker", str(out)])
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
