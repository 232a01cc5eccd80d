"""``python -m benchmarks.run --quick|--full [--only SCENARIO ...] [--schedulers NAME ...]``.

Runs every case of the plan in fresh interpreters, round-robin across schedulers, and
writes ``benchmarks/results/latest.{json,md}`` (or ``--tag``), plus a dated raw copy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

from .envs import BENCH_DIR, REPO_DIR, ensure_env
from .plan import PEERS, SCENARIO_NAMES, SCHEDULERS, build_plan
from .report import render_markdown, summarise
from .runner import iter_runs

RESULTS_DIR = BENCH_DIR / "results"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smoke run, under 3 minutes")
    mode.add_argument("--full", action="store_true", help="the issue's sizes (default)")
    parser.add_argument("--only", nargs="+", choices=SCENARIO_NAMES, metavar="SCENARIO")
    parser.add_argument("--schedulers", nargs="+", choices=SCHEDULERS, metavar="NAME")
    parser.add_argument("--tag", default="latest", help="results file name (default: latest)")
    return parser.parse_args(argv)


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _asyncron_status() -> str | None:
    """None when asyncron's public API imports, else the error."""
    code = "from asyncron import Scheduler, every, once"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_DIR, capture_output=True, text=True, check=False
    )
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1]


def _versions(measurements: list[dict[str, Any]]) -> dict[str, str]:
    versions: dict[str, str] = {}
    for m in measurements:
        version = m["result"].get("version")
        if version:
            versions.setdefault(m["scheduler"], version)
    return versions


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark suite; return the exit status."""
    args = _parse(argv)
    quick = bool(args.quick)
    only = set(args.only) if args.only else None
    scheds = set(args.schedulers) if args.schedulers else None
    cases = build_plan(quick, only, scheds)
    notes: list[str] = []
    if quick:
        notes.append(
            "Quick mode: 1 repeat; add_cost N ≤ 10k; lateness N ≤ 1k and 2 s windows; "
            "burst N=5k; idle 2 s; cron_next 10,000 fires; distributed N=100, 2 s; soak 30 s "
            "(asyncron only). Largest sizes skipped: not comparable with full runs."
        )
    used = {s for c in cases if c.scenario != "cron_next" for s in c.schedulers}
    for peer in sorted(used & set(PEERS)):
        ensure_env(peer)
    if "asyncron" in used or any(c.scenario == "cron_next" for c in cases):
        problem = _asyncron_status()
        if problem:
            notes.append(f"asyncron did not import at the start of this run: {problem}")
            print(f"[bench] warning: asyncron does not import: {problem}", file=sys.stderr)

    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    log = RESULTS_DIR / f"{args.tag}.log"
    raw_path = RESULTS_DIR / f"raw-{stamp}.json"
    log.write_text("")
    meta: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.run", *(argv or sys.argv[1:])]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "loadavg_before": _loadavg(),
        "only": sorted(only) if only else None,
        "schedulers": sorted(scheds) if scheds else None,
        "notes": notes,
    }
    measurements: list[dict[str, Any]] = []
    total = sum(c.repeats * len(c.schedulers) for c in cases)
    t0 = time.perf_counter()
    for i, (repeat, case, scheduler, result, secs) in enumerate(iter_runs(cases, log), 1):
        status = f"error: {result['error']}" if "error" in result else "ok"
        print(
            f"[bench] {i}/{total} r{repeat} {case.scenario} {case.label} {scheduler}: "
            f"{status} ({secs:.1f} s)",
            file=sys.stderr,
        )
        measurements.append(
            {
                "scenario": case.scenario,
                "label": case.label,
                "keys": case.keys,
                "params": case.params,
                "instances": case.instances,
                "scheduler": scheduler,
                "repeat": repeat,
                "seconds": secs,
                "loadavg": _loadavg(),
                "result": result,
            }
        )
        # Keep what is measured so far, should the run be interrupted.
        raw_path.write_text(json.dumps({"meta": meta, "measurements": measurements}, default=str))
    meta["duration_s"] = time.perf_counter() - t0
    meta["loadavg_after"] = _loadavg()
    meta["versions"] = _versions(measurements)
    rows = summarise(measurements)
    document = {"meta": meta, "measurements": measurements, "summary": rows}
    text = json.dumps(document, indent=1, default=str)
    raw_path.write_text(text)
    (RESULTS_DIR / f"{args.tag}.json").write_text(text)
    markdown = render_markdown(meta, rows)
    (RESULTS_DIR / f"{args.tag}.md").write_text(markdown)
    print(markdown)
    print(f"[bench] wrote {RESULTS_DIR / (args.tag + '.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
