"""The exceptions asyncron raises.

::

    AsyncronError
    ├── ConfigurationError(ValueError)
    │   └── InvalidScheduleError
    ├── ConflictingJobError(ValueError)
    ├── InvalidJobError(TypeError)          non-callable, signature mismatch
    ├── JobLookupError(LookupError)
    ├── SchedulerStateError(RuntimeError)
    ├── LockNotAcquired
    │   ├── TickClaimed
    │   └── LockHeld
    ├── LockLostError
    └── RunTimeout(TimeoutError)

Messages are built from the offending value: the field, the value and what is valid.
"""

from __future__ import annotations

from typing import Any

__all__ = (
    "AsyncronError",
    "ConfigurationError",
    "ConflictingJobError",
    "InvalidJobError",
    "InvalidScheduleError",
    "JobLookupError",
    "LockHeld",
    "LockLostError",
    "LockNotAcquired",
    "RunTimeout",
    "SchedulerStateError",
    "TickClaimed",
)


class AsyncronError(Exception):
    """Base class of every exception asyncron raises."""


class ConfigurationError(AsyncronError, ValueError):
    """An option was given a value that is not valid."""

    def __init__(self, field: str, value: Any, valid: str) -> None:
        self.field = field
        self.value = value
        self.valid = valid
        super().__init__(f"{field}={value!r} is not valid: {valid}")


class InvalidScheduleError(ConfigurationError):
    """A schedule was given a value that is not valid."""


class ConflictingJobError(AsyncronError, ValueError):
    """A job with the same name or id already exists in this scheduler."""

    def __init__(self, field: str, value: Any) -> None:
        self.field = field
        self.value = value
        super().__init__(f"a job with {field}={value!r} already exists in this scheduler")


class InvalidJobError(AsyncronError, TypeError):
    """The job function is not callable, or its arguments do not fit its signature."""


class JobLookupError(AsyncronError, LookupError):
    """No job with the given id or name exists (or it was removed)."""

    def __init__(self, key: Any) -> None:
        self.key = key
        super().__init__(f"no job with id or name {key!r} in this scheduler")


class SchedulerStateError(AsyncronError, RuntimeError):
    """The scheduler is in a state that does not allow this call."""

    def __init__(self, action: str, state: Any, valid: str) -> None:
        self.action = action
        self.state = state
        super().__init__(
            f"cannot {action}: the scheduler is {getattr(state, 'value', state)!s} ({valid})"
        )


class LockNotAcquired(AsyncronError):
    """A lock or claim was refused."""

    def __init__(self, key: str, detail: str = "") -> None:
        self.key = key
        super().__init__(f"{key}: {detail}" if detail else key)


class TickClaimed(LockNotAcquired):
    """The tick is not after the key's last claimed tick: another run has claimed it."""


class LockHeld(LockNotAcquired):
    """Another run holds the run lock on the key."""


class LockLostError(AsyncronError):
    """A held run lock or leadership was lost while a run was in progress."""


class RunTimeout(AsyncronError, TimeoutError):
    """A run took longer than its job's ``timeout``."""
