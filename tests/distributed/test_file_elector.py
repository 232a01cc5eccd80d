"""FileElector: one leader among the processes of a host, through ``fcntl.flock``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from asyncron.distributed import Elector, Leadership
from asyncron.distributed.file import FileElector
from asyncron.errors import ConfigurationError, LockLostError
from asyncron.testing import VirtualClock

REPO = Path(__file__).resolve().parents[2]
FAST = 0.02


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` until true, failing after ``within`` seconds."""
    for _ in range(round(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    assert predicate(), f"not true within {within} s"


class TestFileElector:
    """Electors in one process: each opens the file itself, so their locks conflict."""

    async def test_implements_the_elector_protocol(self, tmp_path: Path) -> None:
        """A FileElector is an Elector and its terms are Leaderships."""
        async with FileElector(tmp_path / "lock") as elector:
            assert isinstance(elector, Elector)
            assert isinstance(elector.leadership(), Leadership)

    async def test_a_lone_elector_leads_once_entered_with_epoch_one(self, tmp_path: Path) -> None:
        """Entering takes the lock at once; the epoch is written to the file with the pid."""
        path = tmp_path / "lock"
        async with FileElector(path) as elector:
            term = elector.leadership()
            assert term is not None and term.epoch == 1
            assert await elector.is_leader()
            assert path.read_text() == f"1 {os.getpid()}\n"
        assert elector.leadership() is None

    async def test_two_electors_on_one_path_elect_one(self, tmp_path: Path) -> None:
        """The second elector on the same path follows while the first leads."""
        path = tmp_path / "lock"
        async with FileElector(path, poll_interval=FAST) as first:
            async with FileElector(path, poll_interval=FAST) as second:
                for _ in range(5):
                    await asyncio.sleep(FAST)
                    assert first.leadership() is not None
                    assert second.leadership() is None

    async def test_closing_the_leader_hands_over_with_a_larger_epoch(self, tmp_path: Path) -> None:
        """Closing resigns (the term ends with None); a follower leads at its next poll
        with the next epoch, read from the file."""
        path = tmp_path / "lock"
        first = FileElector(path, poll_interval=FAST)
        second = FileElector(path, poll_interval=FAST)
        await first.__aenter__()
        async with second:
            term = first.leadership()
            assert term is not None and second.leadership() is None
            ended: list[BaseException | None] = []
            term.on_lost(ended.append)
            await first.__aexit__(None, None, None)
            assert first.leadership() is None
            await wait_for(lambda: second.leadership() is not None)
            new_term = second.leadership()
            assert new_term is not None and new_term.epoch == term.epoch + 1
            await wait_for(lambda: ended == [None])

    async def test_listeners_report_gain_and_loss(self, tmp_path: Path) -> None:
        """A listener gets the new term on gain and None on resignation; its remover
        (idempotent) stops it."""
        path = tmp_path / "lock"
        events: list[Leadership | None] = []
        leader = FileElector(path, poll_interval=FAST)
        follower = FileElector(path, poll_interval=FAST)
        await leader.__aenter__()
        await follower.__aenter__()
        remove = follower.add_listener(events.append)
        await leader.__aexit__(None, None, None)
        await wait_for(lambda: len(events) == 1)
        assert events[0] is follower.leadership()
        await follower.__aexit__(None, None, None)
        await wait_for(lambda: len(events) == 2)
        assert events[1] is None
        remove()
        remove()

    async def test_entries_are_counted(self, tmp_path: Path) -> None:
        """Only the last exit resigns."""
        elector = FileElector(tmp_path / "lock")
        async with elector:
            async with elector:
                assert elector.leadership() is not None
            assert elector.leadership() is not None
        assert elector.leadership() is None

    async def test_reopening_after_close_leads_again(self, tmp_path: Path) -> None:
        """A closed elector can be entered again and starts a new term."""
        elector = FileElector(tmp_path / "lock")
        async with elector:
            pass
        async with elector:
            term = elector.leadership()
            assert term is not None and term.epoch == 2

    async def test_a_removed_file_ends_the_term(self, tmp_path: Path) -> None:
        """A lock on a removed file excludes nobody: the leader notices at its next
        poll, ends its term with LockLostError and campaigns on the new file."""
        path = tmp_path / "lock"
        async with FileElector(path, poll_interval=FAST) as elector:
            term = elector.leadership()
            assert term is not None
            ended: list[BaseException | None] = []
            term.on_lost(ended.append)
            path.unlink()
            await wait_for(lambda: len(ended) == 1)
            assert isinstance(ended[0], LockLostError)
            await wait_for(lambda: elector.leadership() is not None)
            assert path.exists()

    async def test_unreadable_epoch_starts_again_at_one(self, tmp_path: Path) -> None:
        """A file whose first field is not a number is taken as epoch 0."""
        path = tmp_path / "lock"
        path.write_text("garbage\n")
        async with FileElector(path) as elector:
            term = elector.leadership()
            assert term is not None and term.epoch == 1

    async def test_polls_wait_on_the_clock(self, tmp_path: Path) -> None:
        """A follower retries only when its clock reaches the next poll."""
        clock = VirtualClock()
        path = tmp_path / "lock"
        leader = FileElector(path, poll_interval=5, clock=clock)
        follower = FileElector(path, poll_interval=5, clock=clock)
        await leader.__aenter__()
        async with follower:
            await leader.__aexit__(None, None, None)
            await clock.advance(4.9)
            assert follower.leadership() is None
            await clock.advance(0.1)
            assert follower.leadership() is not None

    def test_bad_options_raise_configuration_error(self, tmp_path: Path) -> None:
        """An empty path or a non-positive poll interval is refused at construction."""
        with pytest.raises(ConfigurationError, match="path"):
            FileElector("")
        with pytest.raises(ConfigurationError, match="poll_interval"):
            FileElector(tmp_path / "lock", poll_interval=0)

    async def test_a_missing_directory_fails_at_entry(self, tmp_path: Path) -> None:
        """A path that cannot be created raises ConfigurationError naming it."""
        elector = FileElector(tmp_path / "missing" / "lock")
        with pytest.raises(ConfigurationError, match="missing"):
            await elector.__aenter__()


# Each worker prints one line per change: "leader <epoch>" or "follower".
_WORKER = """
import asyncio, sys
from asyncron.distributed.file import FileElector

async def main(path):
    async with FileElector(path, poll_interval=0.05) as elector:
        def report(term):
            print("leader", term.epoch if term else "-", flush=True) if term else print(
                "follower", flush=True)
        elector.add_listener(report)
        report(elector.leadership())
        await asyncio.Event().wait()

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.multiprocess
class TestFileElectorAcrossProcesses:
    """Real worker processes, as under ``uvicorn --workers 3``."""

    async def test_one_leader_among_three_and_takeover_after_sigkill(self, tmp_path: Path) -> None:
        """Exactly one of three processes leads; when it is SIGKILLed, another leads
        with a larger epoch within a bounded time."""
        path = str(tmp_path / "lock")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _WORKER,
                path,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                cwd=str(REPO),
            )
            for _ in range(3)
        ]
        state: dict[int, tuple[str, int]] = {}

        async def follow(proc: asyncio.subprocess.Process) -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                role, _, epoch = line.decode().strip().partition(" ")
                state[proc.pid] = (role, int(epoch) if role == "leader" else 0)

        readers = [asyncio.create_task(follow(proc)) for proc in procs]

        def leaders() -> list[int]:
            return [pid for pid, (role, _) in state.items() if role == "leader"]

        try:
            await wait_for(lambda: len(state) == 3 and len(leaders()) == 1, within=30)
            for _ in range(10):
                await asyncio.sleep(0.05)
                assert len(leaders()) == 1, state
            (leader,) = leaders()
            old_epoch = state[leader][1]
            killed_at = time.monotonic()
            os.kill(leader, signal.SIGKILL)
            del state[leader]
            await wait_for(lambda: len(leaders()) == 1, within=10)
            assert time.monotonic() - killed_at < 10
            (successor,) = leaders()
            assert successor != leader
            assert state[successor][1] > old_epoch
            for _ in range(5):
                await asyncio.sleep(0.05)
                assert leaders() == [successor], state
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
