"""An aiohttp app that runs an asyncron scheduler in its cleanup context.

A cleanup context is an async generator: the code before ``yield`` runs on startup,
the code after it on cleanup, so ``async with scheduler: yield`` starts the scheduler
with the app and shuts it down gracefully with it. Run it with
``python examples/aiohttp_app.py``, then ``curl localhost:8080/jobs``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from asyncron import Scheduler, daily, every

SCHEDULER = web.AppKey("scheduler", Scheduler)


async def poll_upstream() -> None:
    """An async job polling something every 30 seconds."""


def write_daily_report() -> None:
    """A plain function: it runs in a worker thread."""


async def scheduler_context(app: web.Application) -> AsyncIterator[None]:
    """Run the app's scheduler for as long as the app runs."""
    async with app[SCHEDULER]:
        yield


async def list_jobs(request: web.Request) -> web.Response:
    """Every job with its next tick."""
    scheduler = request.app[SCHEDULER]
    return web.json_response(
        {
            "state": scheduler.state.value,
            "jobs": [
                {
                    "name": job.name,
                    "next_run": job.next_run.isoformat() if job.next_run else None,
                    "run_count": job.run_count,
                }
                for job in scheduler.jobs
            ],
        }
    )


def create_app() -> web.Application:
    """Build the app: one scheduler per app, started and stopped by the cleanup context."""
    scheduler = Scheduler(tz="Europe/Berlin")
    scheduler.add_job(poll_upstream, every(seconds=30), name="poll-upstream")
    scheduler.add_job(write_daily_report, daily(at="07:30"), name="daily-report")
    app = web.Application()
    app[SCHEDULER] = scheduler
    app.cleanup_ctx.append(scheduler_context)
    app.router.add_get("/jobs", list_jobs)
    return app


if __name__ == "__main__":
    web.run_app(create_app())
