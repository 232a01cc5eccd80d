"""A worker process for the multi-process tests and the distributed examples.

Runs one :class:`~asyncron.Scheduler` with one coordination backend and ``--jobs``
jobs ``every(seconds=1)`` named ``job-0`` … ``job-{N-1}``, until SIGTERM (or SIGINT)
shuts it down gracefully. Each run start appends one JSON line to ``--output``::

    {"type": "run", "job": "job-3", "tick": <µs since epoch>, "pid": 123,
     "token": <fencing token>, "kind": "scheduled", "wall": <time.time()>}

Other lines: ``ready`` (the scheduler started), ``leader`` (a change of leadership
seen by the elector: ``leader`` true/false, ``epoch``), ``event`` (``LockFailed``,
``LockLost``, ``JobMissed``, and ``JobSkipped`` other than ``not_leader`` /
``tick_claimed``, with their reason), ``skew`` (the measured clock skew)
and ``exit``. Every line is flushed at once, so a SIGKILLed worker leaves whole lines.

``--offset`` shifts this process's wall clock (``now()`` = real now + offset; the
monotonic clock is untouched), to test instances whose clocks disagree.

Usage: ``python -m tests.distributed.worker --backend redis-locker --url redis://… \\
--prefix p1 --jobs 50 --output out.jsonl``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from asyncron import (
    JobMissed,
    JobSkipped,
    LockFailed,
    LockLost,
    RunContext,
    Scheduler,
    SystemClock,
    every,
)

BACKENDS = (
    "redis-locker",
    "postgres-locker",
    "redis-elector",
    "postgres-elector",
    "file-elector",
)


class OffsetClock:
    """The system clock with its wall time shifted by ``offset`` seconds.

    ``monotonic()`` and ``sleep_until()`` are the system's: only the wall clock
    disagrees with the other instances, as with a badly synchronised host.
    """

    def __init__(self, offset: float) -> None:
        self._system = SystemClock()
        self._offset = timedelta(seconds=offset)

    def now(self) -> datetime:
        """Return the real wall time plus the offset, aware, in UTC."""
        return datetime.now(UTC) + self._offset

    def monotonic(self) -> float:
        """Return the system's monotonic time (unchanged)."""
        return self._system.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        """Wait until :meth:`monotonic` reaches ``deadline``."""
        await self._system.sleep_until(deadline)


def to_us(tick: datetime) -> int:
    """A tick as integer microseconds since the epoch (the backends' encoding)."""
    delta = tick - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class Output:
    """Appends flushed JSON lines to a file."""

    def __init__(self, path: str) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")
        self.pid = os.getpid()

    def write(self, record_type: str, /, **fields: Any) -> None:
        record = {"type": record_type, "pid": self.pid, "wall": time.time(), **fields}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def build_backend(args: argparse.Namespace) -> tuple[Any, Any]:
    """Return ``(locker, elector)`` for ``--backend`` (one of them is None)."""
    ttl = args.ttl
    if args.backend == "redis-locker":
        from asyncron.distributed.redis import RedisLocker

        return RedisLocker(args.url, prefix=args.prefix, ttl=ttl), None
    if args.backend == "postgres-locker":
        from asyncron.distributed.postgres import PostgresLocker

        return PostgresLocker(args.url, prefix=args.prefix, ttl=ttl), None
    if args.backend == "redis-elector":
        from asyncron.distributed.redis import RedisElector

        return None, RedisElector(args.url, prefix=args.prefix, ttl=ttl)
    if args.backend == "postgres-elector":
        from asyncron.distributed.postgres import PostgresElector

        return None, PostgresElector(args.url, prefix=args.prefix, ttl=ttl)
    from asyncron.distributed.file import FileElector

    return None, FileElector(args.url, poll_interval=min(1.0, ttl / 3))


async def main(args: argparse.Namespace) -> None:
    out = Output(args.output)
    locker, elector = build_backend(args)
    clock = OffsetClock(args.offset)
    scheduler = Scheduler(locker=locker, elector=elector, clock=clock)
    options: dict[str, Any] = {}
    if args.misfire_grace is not None:
        options["misfire_grace"] = args.misfire_grace
    if args.no_coalesce:
        options["coalesce"] = False
    if args.overlap_wait:
        options["overlap"] = "wait"

    async def record(ctx: RunContext) -> None:
        out.write(
            "run",
            job=ctx.job.name,
            tick=to_us(ctx.tick),
            token=ctx.fencing_token,
            kind=ctx.kind.value,
        )

    for i in range(args.jobs):
        scheduler.add_job(record, every(seconds=1), name=f"job-{i}", **options)

    def on_event(event: Any) -> None:
        fields: dict[str, Any] = {"event": type(event).__name__}
        if isinstance(event, JobSkipped):
            if event.reason.value in ("not_leader", "tick_claimed"):
                return  # the normal lot of followers and of instances beaten to a tick
            fields.update(job=event.job_name, reason=event.reason.value, tick=to_us(event.tick))
        elif isinstance(event, JobMissed):
            fields.update(
                job=event.job_name,
                reason=event.reason.value,
                count=event.count,
                first=to_us(event.first_tick),
                last=to_us(event.last_tick),
            )
        else:
            fields.update(job=event.job_name, error=repr(event.exception))
        out.write("event", **fields)

    scheduler.subscribe(on_event, JobMissed, JobSkipped, LockFailed, LockLost)

    if elector is not None:

        def on_leadership(term: Any) -> None:
            out.write("leader", leader=term is not None, epoch=getattr(term, "epoch", None))

        elector.add_listener(on_leadership)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with scheduler:
            term = elector.leadership() if elector is not None else None
            # The PostgreSQL backend pids of the dedicated lock connections, so a test
            # can pg_terminate_backend exactly this worker's sessions.
            sessions = getattr(locker, "_sessions", None) or [getattr(elector, "_session", None)]
            out.write(
                "ready",
                backend=args.backend,
                offset=args.offset,
                leader=term is not None,
                epoch=getattr(term, "epoch", None),
                backend_pids=[s.pid for s in sessions if s is not None],
            )
            await stop.wait()
            skew = scheduler.clock_skew
            out.write("skew", seconds=None if skew is None else skew.total_seconds())
    finally:
        out.write("exit")
        out.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--url", required=True, help="Redis URL, PostgreSQL DSN or lock file")
    parser.add_argument("--prefix", required=True, help="a key prefix unique to the run")
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--output", required=True, help="the JSON-lines file to append to")
    parser.add_argument("--offset", type=float, default=0.0, help="wall clock offset, seconds")
    parser.add_argument("--ttl", type=float, default=3.0, help="lock / lease TTL, seconds")
    parser.add_argument("--misfire-grace", type=float, default=None, help="seconds")
    parser.add_argument("--no-coalesce", action="store_true", help="run every missed tick")
    parser.add_argument("--overlap-wait", action="store_true", help="queue overlapping ticks")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if os.environ.get("ASYNCRON_WORKER_LOG"):
        import logging

        logging.basicConfig(level=os.environ["ASYNCRON_WORKER_LOG"].upper())
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse()))
