"""``python -m benchmarks.cases SCHEDULER SCENARIO PARAMS_JSON``: run one case, print JSON."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
from typing import Any


async def _run_scheduler_case(scheduler: str, scenario: str, params: dict[str, Any]) -> Any:
    from .adapters import load_adapter
    from .scenarios import SCENARIOS

    adapter = load_adapter(scheduler, params.get("adapter", {}))
    result = await SCENARIOS[scenario](adapter, params)
    result["version"] = adapter.version()
    return result


def _emit(result: dict[str, Any]) -> None:
    """Print the result line and leave at once.

    ``os._exit`` skips interpreter shutdown: an overloaded scheduler's leftover tasks
    and threads must not hold the measurement hostage once its numbers are out.
    """
    result["python"] = platform.python_version()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str]) -> int:
    """Run the case named by ``argv`` and print its result as one JSON line."""
    scheduler, scenario, raw_params = argv
    params: dict[str, Any] = json.loads(raw_params)
    if scenario == "cron_next":
        from .cron_next import run_cron_next

        result = run_cron_next(scheduler, params)
    else:
        result = asyncio.run(_run_scheduler_case(scheduler, scenario, params))
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
