"""One leader among the processes of one host: :class:`FileElector` (``fcntl.flock``).

For ``uvicorn --workers 4`` or ``gunicorn -w 4``: every worker runs a scheduler
with a ``FileElector`` on the same path, and only the worker holding an exclusive
``flock`` on it runs coordinated jobs. No server is involved; the kernel releases
the lock when its holder exits or is killed, and a follower takes over at its next
poll. The file holds the epoch counter, read, incremented and written back by each
new leader while it holds the lock.

``flock`` locks belong to an *open file description*: two electors in one process
open the file separately and so exclude each other, but a process that forks after
entering an elector shares the lock with its child. Enter it in each worker after
the fork (FastAPI's lifespan does). ``flock`` is unreliable on NFS; use a local path.
This elector keeps no claim ledger: a tick may run again across a change of leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from datetime import timedelta

from .._clock import Clock, SystemClock
from .._time import as_duration
from ..errors import ConfigurationError, LockLostError
from ._common import CountedEntries, ElectorListeners, Term

__all__ = ("FileElector", "FileLeadership")

logger = logging.getLogger("asyncron")


class FileLeadership(Term):
    """One term of leadership held by a :class:`FileElector`."""

    __slots__ = ()


class FileElector(CountedEntries, ElectorListeners):
    """An :class:`~asyncron.distributed.Elector` on ``fcntl.flock(LOCK_EX | LOCK_NB)``.

    While open, a follower retries the lock every ``poll_interval``; the leader
    checks as often that the path still names the file it locked (a lock on a
    removed file excludes nobody). Leadership does not expire: the kernel holds the
    lock until the elector closes (resigning) or its process dies.

    :param path: the lock file, created if missing; its directory must exist
    :param poll_interval: how often followers try to take over and the leader checks
        the path
    :param clock: where the polls wait
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_interval: float | timedelta = 1.0,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ConfigurationError("path", path, "a file path")
        interval = as_duration("poll_interval", poll_interval, allow_zero=False)
        assert interval is not None
        self._path = os.fspath(path)
        self._interval = interval.total_seconds()
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._fd: int | None = None
        self._term: FileLeadership | None = None
        ElectorListeners.__init__(self)
        CountedEntries.__init__(self)
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<FileElector path={self._path!r} leader={self._term is not None}>"

    @property
    def path(self) -> str:
        """The lock file's path."""
        return self._path

    def leadership(self) -> FileLeadership | None:
        """Return the current term if this process leads, else None; no I/O."""
        return self._term

    async def is_leader(self) -> bool:
        """Return whether this elector leads (local state)."""
        return self._term is not None

    async def _open(self) -> None:
        self._reopen()
        self._campaign_once()
        self._task = asyncio.get_running_loop().create_task(
            self._poll(), name="asyncron.file-elector.poll"
        )

    async def _close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        term, self._term = self._term, None
        # Closing the descriptor releases the lock; resign first so nothing acts on it.
        if term is not None:
            term._end(None)
            self._announce(None)
        self._close_fd()

    def _reopen(self) -> None:
        self._close_fd()
        try:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise ConfigurationError(
                "path", self._path, f"a file that can be created and written ({exc})"
            ) from exc

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _names_our_file(self) -> bool:
        """Whether the path still names the open file (not removed or replaced)."""
        assert self._fd is not None
        try:
            path_stat = os.stat(self._path)
        except FileNotFoundError:
            return False
        fd_stat = os.fstat(self._fd)
        return (path_stat.st_dev, path_stat.st_ino) == (fd_stat.st_dev, fd_stat.st_ino)

    def _campaign_once(self) -> None:
        if self._fd is None or not self._names_our_file():
            self._reopen()
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        # Between our open and our lock the previous holder may have found the path
        # replaced and left; a lock on an orphaned file would exclude nobody.
        if not self._names_our_file():
            self._reopen()
            return
        try:
            epoch = self._bump_epoch()
        except BaseException:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            raise
        self._term = FileLeadership(epoch)
        logger.info("leading through %s with epoch %d", self._path, epoch)
        self._announce(self._term)

    def _bump_epoch(self) -> int:
        """Read the epoch in the file, write it back plus one, and return that."""
        assert self._fd is not None
        raw = os.pread(self._fd, 64, 0).split()
        try:
            epoch = int(raw[0]) + 1 if raw else 1
        except ValueError:
            logger.warning("%s held no epoch (%r); starting again at 1", self._path, raw[0])
            epoch = 1
        # The pid is for people reading the file; only the first field is read back.
        data = f"{epoch} {os.getpid()}\n".encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        # Durable, so a host crash cannot hand a later leader an epoch already used.
        os.fsync(self._fd)
        return epoch

    async def _poll(self) -> None:
        while True:
            await self._clock.sleep_until(self._clock.monotonic() + self._interval)
            try:
                if self._term is None:
                    self._campaign_once()
                elif not self._names_our_file():
                    self._lose(LockLostError(f"the lock file {self._path} was removed or replaced"))
            except Exception as exc:
                logger.warning("file elector on %s: %r", self._path, exc)

    def _lose(self, reason: BaseException) -> None:
        term, self._term = self._term, None
        if term is None:
            return
        logger.warning("lost leadership: %s", reason)
        self._close_fd()
        term._end(reason)
        self._announce(None)
