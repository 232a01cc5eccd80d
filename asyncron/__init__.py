"""asyncron: asyncio-native job scheduling — cron, intervals, one-offs — that runs each
tick exactly once across many instances."""

from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._context import RunContext as RunContext
from ._context import current_run as current_run
from ._events import ClockSkewDetected as ClockSkewDetected
from ._events import Event as Event
from ._events import JobAdded as JobAdded
from ._events import JobEvent as JobEvent
from ._events import JobFailed as JobFailed
from ._events import JobMissed as JobMissed
from ._events import JobRemoved as JobRemoved
from ._events import JobSkipped as JobSkipped
from ._events import JobStarted as JobStarted
from ._events import JobSucceeded as JobSucceeded
from ._events import JobUpdated as JobUpdated
from ._events import LeadershipChanged as LeadershipChanged
from ._events import LockFailed as LockFailed
from ._events import LockLost as LockLost
from ._events import MissReason as MissReason
from ._events import Monitor as Monitor
from ._events import RemovalReason as RemovalReason
from ._events import RunEvent as RunEvent
from ._events import RunKind as RunKind
from ._events import RunOutcome as RunOutcome
from ._events import RunStatus as RunStatus
from ._events import SchedulerStarted as SchedulerStarted
from ._events import SchedulerStopped as SchedulerStopped
from ._events import SkipReason as SkipReason
from ._events import Subscription as Subscription
from ._job import NAMESPACE as NAMESPACE
from ._job import Job as Job
from ._job import JobOptions as JobOptions
from ._scheduler import Scheduler as Scheduler
from ._scheduler import SchedulerState as SchedulerState
from ._schedules import CronSchedule as CronSchedule
from ._schedules import DailySchedule as DailySchedule
from ._schedules import EverySchedule as EverySchedule
from ._schedules import MonthlySchedule as MonthlySchedule
from ._schedules import OnceSchedule as OnceSchedule
from ._schedules import RandomEverySchedule as RandomEverySchedule
from ._schedules import Schedule as Schedule
from ._schedules import WeeklySchedule as WeeklySchedule
from ._schedules import cron as cron
from ._schedules import daily as daily
from ._schedules import every as every
from ._schedules import monthly as monthly
from ._schedules import once as once
from ._schedules import parse_schedule as parse_schedule
from ._schedules import random_every as random_every
from ._schedules import weekly as weekly
from .errors import AsyncronError as AsyncronError
from .errors import ConfigurationError as ConfigurationError
from .errors import ConflictingJobError as ConflictingJobError
from .errors import InvalidJobError as InvalidJobError
from .errors import InvalidScheduleError as InvalidScheduleError
from .errors import JobLookupError as JobLookupError
from .errors import LockHeld as LockHeld
from .errors import LockLostError as LockLostError
from .errors import LockNotAcquired as LockNotAcquired
from .errors import RunTimeout as RunTimeout
from .errors import SchedulerStateError as SchedulerStateError
from .errors import TickClaimed as TickClaimed

__version__ = "0.1.0.dev0"

__all__ = (
    "NAMESPACE",
    "AsyncronError",
    "Clock",
    "ClockSkewDetected",
    "ConfigurationError",
    "ConflictingJobError",
    "CronSchedule",
    "DailySchedule",
    "Event",
    "EverySchedule",
    "InvalidJobError",
    "InvalidScheduleError",
    "Job",
    "JobAdded",
    "JobEvent",
    "JobFailed",
    "JobLookupError",
    "JobMissed",
    "JobOptions",
    "JobRemoved",
    "JobSkipped",
    "JobStarted",
    "JobSucceeded",
    "JobUpdated",
    "LeadershipChanged",
    "LockFailed",
    "LockHeld",
    "LockLost",
    "LockLostError",
    "LockNotAcquired",
    "MissReason",
    "Monitor",
    "MonthlySchedule",
    "OnceSchedule",
    "RandomEverySchedule",
    "RemovalReason",
    "RunContext",
    "RunEvent",
    "RunKind",
    "RunOutcome",
    "RunStatus",
    "RunTimeout",
    "Schedule",
    "Scheduler",
    "SchedulerStarted",
    "SchedulerState",
    "SchedulerStateError",
    "SchedulerStopped",
    "SkipReason",
    "Subscription",
    "SystemClock",
    "TickClaimed",
    "WeeklySchedule",
    "cron",
    "current_run",
    "daily",
    "every",
    "monthly",
    "once",
    "parse_schedule",
    "random_every",
    "weekly",
)
