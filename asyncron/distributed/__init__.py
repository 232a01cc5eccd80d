"""Coordination backends. Server-backed ones live in their own modules
(``asyncron.distributed.redis``, ``.postgres``, ``.file``) and are never imported here."""

from .memory import MemoryElector as MemoryElector
from .memory import MemoryLocker as MemoryLocker
from .protocols import BatchLocker as BatchLocker
from .protocols import ClaimLedger as ClaimLedger
from .protocols import Elector as Elector
from .protocols import Leadership as Leadership
from .protocols import Lock as Lock
from .protocols import Locker as Locker
from .protocols import ServerClock as ServerClock

__all__ = (
    "BatchLocker",
    "ClaimLedger",
    "Elector",
    "Leadership",
    "Lock",
    "Locker",
    "MemoryElector",
    "MemoryLocker",
    "ServerClock",
)
