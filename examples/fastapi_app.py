"""A FastAPI app whose lifespan runs an asyncron scheduler.

The scheduler starts with the app and shuts down gracefully with it (running jobs get
``stop_timeout`` to finish). Run it with ``uvicorn examples.fastapi_app:app`` (uvicorn
is not a dependency of asyncron: ``pip install uvicorn``), then try::

    curl localhost:8000/jobs
    curl -X POST localhost:8000/jobs/refresh-cache/run
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, HTTPException

from asyncron import JobLookupError, Scheduler, cron, every

scheduler = Scheduler(tz="UTC")

# Jobs can be added before the app starts; they begin running when the lifespan starts.
cache: dict[str, datetime] = {}


@scheduler.job(every(minutes=5), name="refresh-cache", tags={"cache"})
async def refresh_cache() -> str:
    """An async job: it runs on the event loop, next to the request handlers."""
    cache["refreshed_at"] = datetime.now(UTC)
    return "refreshed"


@scheduler.job(cron("0 3 * * *"), name="nightly-cleanup", tags={"maintenance"})
def nightly_cleanup() -> None:
    """A plain function: asyncron runs it in a worker thread (its own limiter, not the
    one FastAPI uses for sync endpoints), so it may block."""


# FastAPI calls scheduler.lifespan(app) as an async context manager: start on startup,
# graceful shutdown on shutdown.
app = FastAPI(lifespan=scheduler.lifespan)


@app.get("/jobs")
async def list_jobs() -> list[dict[str, Any]]:
    """Every job with its next and last tick."""
    return [
        {
            "id": str(job.id),
            "name": job.name,
            "tags": sorted(job.tags),
            "next_run": job.next_run,
            "last_run": job.last_run,
            "run_count": job.run_count,
        }
        for job in scheduler.jobs
    ]


@app.post("/jobs/{name}/run")
async def run_job(name: str) -> dict[str, Any]:
    """Run a job now. Its own rules still apply (a run in progress makes it "skipped"),
    and a failure is reported in the outcome, not raised."""
    try:
        job = scheduler.get_job(name)
    except JobLookupError:
        raise HTTPException(status_code=404, detail=f"no job named {name!r}") from None
    outcome = await job.run_now()
    return {
        "status": outcome.status.value,
        "reason": outcome.reason,
        "start": outcome.start,
        "end": outcome.end,
        "error": repr(outcome.exception) if outcome.exception else None,
        "result": outcome.return_value,
    }


@app.get("/health")
async def health() -> dict[str, Any]:
    """The scheduler's state and how many ticks wait for a slot."""
    return {"scheduler": scheduler.state.value, "waiting_runs": scheduler.waiting_runs}


if __name__ == "__main__":
    try:
        import uvicorn
    except ImportError:
        raise SystemExit("pip install uvicorn, then: uvicorn examples.fastapi_app:app") from None
    uvicorn.run(app)
