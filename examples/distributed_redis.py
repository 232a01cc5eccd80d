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

import os
import sys

from asyncron.distributed.redis import RedisLocker

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the shared demo harness
from _cluster_demo import run_demo


def make_locker(target: str) -> RedisLocker:
    """This example's coordination backend."""
    return RedisLocker(target, prefix="asyncron-example", ttl=10)


if __name__ == "__main__":
    sys.exit(
        run_demo(
            __file__,
            make_locker,
            server="Redis",
            option="--url",
            default="redis://127.0.0.1:6379/0",
        )
    )
