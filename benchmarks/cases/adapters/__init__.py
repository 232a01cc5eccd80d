"""One adapter per scheduler, behind the small :class:`~.base.Adapter` interface."""

from __future__ import annotations

import importlib
from typing import Any

from .base import Adapter, JobFunc

__all__ = ("ADAPTERS", "Adapter", "JobFunc", "load_adapter")

#: Scheduler name -> ``module:class`` of its adapter (imported lazily: each module
#: imports a scheduler that only exists in that scheduler's environment).
ADAPTERS: dict[str, str] = {
    "floor": "floor:FloorAdapter",
    "asyncron": "asyncron_:AsyncronAdapter",
    "apscheduler3": "apscheduler3:APScheduler3Adapter",
    "apscheduler4": "apscheduler4:APScheduler4Adapter",
    "aiocron": "aiocron_:AiocronAdapter",
}


def load_adapter(name: str, options: dict[str, Any]) -> Adapter:
    """Import and build the adapter for scheduler ``name``."""
    module_name, _, class_name = ADAPTERS[name].partition(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    cls: type[Adapter] = getattr(module, class_name)
    return cls(options)
