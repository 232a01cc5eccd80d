"""The same app on several processes, coordinated by PostgreSQL: each tick runs once.

Starts N worker processes (this file with ``--worker``), each running a Scheduler
with a :class:`~asyncron.distributed.postgres.PostgresLocker` and three jobs every second.
Every instance schedules every job; for each (job, tick) one instance wins the claim
and runs it, the others skip it as ``tick_claimed``. Ten seconds after the first run
the workers get SIGTERM (a graceful shutdown), and the parent prints which instance
ran which tick and checks that each tick ran once::

    python examples/distributed_postgres.py [--dsn postgresql://postgres@127.0.0.1:5432/test]
                                            [--instances 3] [--seconds 10]

Needs a PostgreSQL server (the locker creates its tables ``asyncron_example_*`` on
first use) and ``pip install 'asyncron[postgres]'``.
"""

from __future__ import annotations

import os
import sys

from asyncron.distributed.postgres import PostgresLocker

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the shared demo harness
from _cluster_demo import run_demo


def make_locker(target: str) -> PostgresLocker:
    """This example's coordination backend."""
    return PostgresLocker(target, prefix="asyncron_example", ttl=10)


if __name__ == "__main__":
    sys.exit(
        run_demo(
            __file__,
            make_locker,
            server="PostgreSQL",
            option="--dsn",
            default="postgresql://postgres@127.0.0.1:5432/test",
        )
    )
