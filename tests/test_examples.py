"""The examples import, run, and do what their docstrings say."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from asyncron import Scheduler, SchedulerState, every, pytest_plugin
from asyncron.testing import VirtualClock

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
_fresh = itertools.count()


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a fresh module (examples keep module-level
    schedulers, and a scheduler that was shut down cannot start again)."""
    module_name = f"_asyncron_example_{name}_{next(_fresh)}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


# The pytest tests shown in the testing example run here too, with the real fixtures.
_virtual = load("testing_with_virtual_clock")
test_example_every_five_minutes = _virtual.test_every_five_minutes
test_example_suspended_laptop = _virtual.test_a_suspended_laptop_runs_the_latest_tick_once
test_example_job_waiting_on_the_clock = _virtual.test_a_job_that_waits_on_the_clock


class TestImports:
    @pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.stem)
    def test_example_imports(self, path: Path) -> None:
        """Every example imports without side effects beyond building its objects."""
        module = load(path.stem)
        assert (module.__doc__ or "").strip()


class TestTestingExample:
    async def test_main_runs_two_weeks_of_weekday_reports(self) -> None:
        """main() checks ten weekday reports across the DST change."""
        ticks = await _virtual.main()
        assert len(ticks) == 10


class TestEventsExample:
    async def test_events_listeners_and_monitor(self) -> None:
        """On a virtual clock the example's callbacks and monitor see every kind of outcome."""
        module = load("events_and_monitoring")
        clock = VirtualClock()
        scheduler, monitor, seen = module.build(clock)
        async with scheduler:
            # Ticks every second; slow runs 1-2.5 s and 3-4.5 s, skipping 2 and 4.
            await clock.advance(seconds=4.5)
        assert monitor.outcomes["ping", "succeeded"] == 4
        assert monitor.outcomes["flaky", "failed"] == 2
        assert monitor.outcomes["slow", "skipped"] == 2
        assert monitor.outcomes["slow", "succeeded"] == 2
        assert monitor.slowest["slow"] == pytest.approx(1.5)
        assert "ALERT flaky failed: RuntimeError('upstream is down')" in seen.lines
        assert "slow skipped: overlap" in seen.lines
        assert "ping returned 'pong'" in seen.lines
        assert seen.lines[0] == "scheduler: SchedulerStarted"
        assert seen.lines[-1] == "scheduler: SchedulerStopped"
        assert seen.event_types["JobAdded"] == 3

    async def test_before_run_vetoes_during_maintenance(self) -> None:
        """The example's before_run hook skips every run while in maintenance."""
        module = load("events_and_monitoring")
        clock = VirtualClock()
        scheduler, monitor, seen = module.build(clock)
        seen.maintenance = True
        async with scheduler:
            await clock.advance(seconds=2)
        assert seen.event_types["JobSkipped"] == 5
        assert "JobStarted" not in seen.event_types
        assert {status for _, status in monitor.outcomes} == {"skipped"}


class TestFastAPIExample:
    async def test_lifespan_runs_the_scheduler_and_endpoints_use_it(self) -> None:
        """The lifespan runs the scheduler; the endpoints list and run its jobs."""
        module = load("fastapi_app")
        app, scheduler = module.app, module.scheduler
        assert scheduler.state is SchedulerState.CREATED
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            assert scheduler.state is SchedulerState.RUNNING
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                jobs = (await client.get("/jobs")).json()
                assert [j["name"] for j in jobs] == ["refresh-cache", "nightly-cleanup"]
                assert jobs[0]["run_count"] == 0
                assert jobs[0]["next_run"] is not None

                ran = (await client.post("/jobs/refresh-cache/run")).json()
                assert ran["status"] == "succeeded"
                assert ran["result"] == "refreshed"
                assert ran["error"] is None
                assert scheduler.get_job("refresh-cache").run_count == 1

                missing = await client.post("/jobs/nope/run")
                assert missing.status_code == 404

                health = (await client.get("/health")).json()
                assert health == {"scheduler": "running", "waiting_runs": 0}
        assert scheduler.state is SchedulerState.SHUT_DOWN


class TestAiohttpExample:
    async def test_cleanup_context_starts_and_stops_the_scheduler(self) -> None:
        """The cleanup context runs the scheduler for the app's lifetime."""
        module = load("aiohttp_app")
        app = module.create_app()
        scheduler = app[module.SCHEDULER]
        assert scheduler.state is SchedulerState.CREATED
        async with TestClient(TestServer(app)) as client:
            assert scheduler.state is SchedulerState.RUNNING
            response = await client.get("/jobs")
            body = await response.json()
            assert body["state"] == "running"
            assert [j["name"] for j in body["jobs"]] == ["poll-upstream", "daily-report"]
        assert scheduler.state is SchedulerState.SHUT_DOWN

    async def test_cleanup_context_by_hand(self) -> None:
        """Entering the cleanup-context generator by hand starts and stops the scheduler."""
        module = load("aiohttp_app")
        app = module.create_app()
        scheduler = app[module.SCHEDULER]
        context = module.scheduler_context(app)
        await anext(context)
        assert scheduler.state is SchedulerState.RUNNING
        assert scheduler.get_job("poll-upstream").next_run is not None
        with pytest.raises(StopAsyncIteration):
            await anext(context)
        assert scheduler.state is SchedulerState.SHUT_DOWN


class TestPytestFixtures:
    @pytest.fixture
    def asyncron_clock_start(self) -> datetime:
        """Overrides the plugin's start time for this class."""
        return datetime(2026, 3, 23, 6, tzinfo=UTC)

    async def test_fixtures_share_the_clock_and_honour_the_start(
        self, asyncron_clock: VirtualClock, asyncron_scheduler: Scheduler
    ) -> None:
        """The scheduler fixture runs on the clock fixture, from asyncron_clock_start."""
        assert asyncron_clock.now() == datetime(2026, 3, 23, 6, tzinfo=UTC)
        assert asyncron_scheduler.clock is asyncron_clock
        assert asyncron_scheduler.state is SchedulerState.RUNNING

    async def test_teardown_with_a_run_waiting_on_the_clock(self) -> None:
        """Teardown moves the clock through stop_timeout when a run waits on the clock."""
        clock = VirtualClock()
        # The fixture's own async generator, driven the way pytest-asyncio drives it.
        fixture = pytest_plugin.asyncron_scheduler.__wrapped__(clock)
        scheduler = await anext(fixture)
        cancelled: list[bool] = []

        async def long_export() -> None:
            try:
                await clock.sleep_until(clock.monotonic() + 3600)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        job = scheduler.add_job(long_export, every(minutes=1))
        await clock.advance(minutes=1)
        assert job.running == 1
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(fixture), 10)
        assert scheduler.state is SchedulerState.SHUT_DOWN
        assert cancelled == [True]


class TestLimitsExample:
    async def test_the_limits_example_shows_each_rule_at_work(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A minute of the limits example skips overlaps, coalesces waits and times out."""
        await load("limits_and_overlap").main()
        out = capsys.readouterr().out
        assert "skip      JobSkipped  overlap" in out
        assert "wait      JobMissed   coalesced" in out
        assert "timeout   JobFailed   run of timeout" in out
        assert "waiting ticks now: 2" in out
