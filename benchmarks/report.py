"""Turn raw measurements into medians, ratios and markdown tables."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .plan import CRON_IMPLS, FLOOR, SCHEDULERS

__all__ = ("Metric", "render_markdown", "summarise")

BASELINE = "apscheduler3"
NAMES = {
    "floor": "floor (asyncio)",
    "asyncron": "asyncron",
    "apscheduler3": "APScheduler 3",
    "apscheduler4": "APScheduler 4",
    "aiocron": "aiocron",
    "croniter": "croniter",
    "cronsim": "cronsim",
}


@dataclass(frozen=True)
class Metric:
    """A column: result key, header, format, and whether it gets ratio columns."""

    key: str
    header: str
    fmt: str = "{:.1f}"
    ratio: bool = False


METRICS: dict[str, list[Metric]] = {
    "add_cost": [
        Metric("us_per_job", "µs/job", "{:.2f}", ratio=True),
        Metric("bytes_per_job", "B/job", "{:.0f}", ratio=True),
    ],
    "lateness": [
        Metric("p50_ms", "p50 ms"),
        Metric("p99_ms", "p99 ms", ratio=True),
        Metric("max_ms", "max ms"),
        Metric("missed", "missed", "{:.0f}"),
        Metric("duplicates", "dups", "{:.0f}"),
        Metric("cpu_pct", "CPU %", ratio=True),
    ],
    "burst": [
        Metric("started", "started", "{:.0f}"),
        Metric("first_ms", "first ms"),
        Metric("median_ms", "median ms"),
        Metric("drain_ms", "drain ms"),
        Metric("starts_per_s", "starts/s", "{:,.0f}", ratio=True),
    ],
    "idle_cpu": [Metric("cpu_pct", "CPU %", "{:.3f}", ratio=True)],
    "cron_next": [Metric("us_per_fire", "µs/fire", "{:.2f}", ratio=True)],
    "distributed": [
        Metric("p50_ms", "p50 ms"),
        Metric("p99_ms", "p99 ms", ratio=True),
        Metric("max_ms", "max ms"),
        Metric("missed", "missed", "{:.0f}"),
        Metric("duplicates", "dups", "{:.0f}"),
        Metric("cpu_pct", "CPU %/inst"),
    ],
    "soak": [
        Metric("rss_warm_mb", "RSS warm MB"),
        Metric("rss_end_mb", "RSS end MB"),
        Metric("rss_growth_pct", "growth %", "{:.2f}"),
        Metric("runs", "runs", "{:.0f}"),
        Metric("expected", "expected", "{:.0f}"),
        Metric("lost", "lost", "{:.0f}"),
        Metric("cpu_pct", "CPU %"),
    ],
}

#: Per scenario: the reference rows of the ratio columns, as (column title, pick).
Row = dict[str, Any]
RatioRefs = list[tuple[str, Callable[[Row, list[Row]], Row | None]]]


def _same_case(scheduler: str) -> Callable[[Row, list[Row]], Row | None]:
    def pick(row: Row, rows: list[Row]) -> Row | None:
        return next(
            (r for r in rows if r["label"] == row["label"] and r["scheduler"] == scheduler), None
        )

    return pick


def _no_locker(row: Row, rows: list[Row]) -> Row | None:
    return next(
        (
            r
            for r in rows
            if r["keys"].get("locker") == "none" and r["keys"].get("N") == row["keys"].get("N")
        ),
        None,
    )


RATIO_REFS: dict[str, RatioRefs] = {
    "cron_next": [("vs croniter", _same_case("croniter")), ("vs cronsim", _same_case("cronsim"))],
    "distributed": [("vs no locker", _no_locker)],
    "soak": [],
}
DEFAULT_REFS: RatioRefs = [("vs floor", _same_case(FLOOR)), ("vs APS3", _same_case(BASELINE))]


def _median(values: Sequence[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, int | float) and not math.isnan(float(v))]
    return statistics.median(nums) if nums else None


def summarise(measurements: list[dict[str, Any]]) -> list[Row]:
    """Group raw measurements by (scenario, label, scheduler) and take medians."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for m in measurements:
        groups.setdefault((m["scenario"], m["label"], m["scheduler"]), []).append(m)
    rows: list[Row] = []
    for (scenario, label, scheduler), ms in groups.items():
        ok = [m["result"] for m in ms if "error" not in m["result"]]
        errors = [m["result"]["error"] for m in ms if "error" in m["result"]]
        keys = {k for r in ok for k, v in r.items() if isinstance(v, int | float)}
        medians = {k: _median([r.get(k) for r in ok]) for k in keys}
        row: Row = {
            "scenario": scenario,
            "label": label,
            "keys": ms[0]["keys"],
            "scheduler": scheduler,
            "repeats": len(ok),
            "errors": errors,
            "median": medians,
            "version": ok[0].get("version") if ok else None,
        }
        if scenario == "cron_next" and ok:
            row["last"] = sorted({r["last"] for r in ok})
            row["digest"] = sorted({r["digest"] for r in ok})
        rows.append(row)
    order = {name: i for i, name in enumerate((*SCHEDULERS, *CRON_IMPLS))}
    rows.sort(key=lambda r: order.get(r["scheduler"], 99))
    return rows


def _fmt(value: float | None, fmt: str) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞"
    return fmt.format(value)


def _ratio(value: float | None, ref: float | None) -> str:
    if value is None or ref is None or ref == 0 or math.isinf(ref) or math.isinf(value):
        return "—"
    return f"{value / ref:.2f}"


def _table(scenario: str, rows: list[Row]) -> list[str]:
    metrics = METRICS[scenario]
    refs = RATIO_REFS.get(scenario, DEFAULT_REFS)
    header = ["case", "scheduler" if scenario != "cron_next" else "implementation", "reps"]
    for m in metrics:
        header.append(m.header)
        if m.ratio:
            header += [f"{m.header} {title}" for title, _ in refs]
    if scenario == "cron_next":
        header += ["last fire", "= croniter"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    for label in labels:
        for row in (r for r in rows if r["label"] == label):
            cells = [label, NAMES.get(row["scheduler"], row["scheduler"]), str(row["repeats"])]
            if not row["repeats"]:
                err = row["errors"][0] if row["errors"] else "no result"
                cells.append(f"error: {err[:120]}".replace("|", "/"))
                cells += [""] * (len(header) - len(cells))
                lines.append("| " + " | ".join(cells) + " |")
                continue
            for m in metrics:
                value = row["median"].get(m.key)
                cells.append(_fmt(value, m.fmt))
                if m.ratio:
                    for _, pick in refs:
                        ref = pick(row, rows)
                        cells.append(_ratio(value, ref["median"].get(m.key) if ref else None))
            if scenario == "cron_next":
                cells += _cron_check(row, rows)
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cron_check(row: Row, rows: list[Row]) -> list[str]:
    ref = _same_case("croniter")(row, rows)
    last = ", ".join(row.get("last", [])) or "—"
    if ref is None or "digest" not in ref:
        return [last, "—"]
    same = row.get("digest") == ref["digest"] and row.get("last") == ref["last"]
    return [last, "yes (all fires)" if same else "**NO**"]


TITLES = {
    "add_cost": "add_cost — add N jobs “every 60 s” to a running scheduler",
    "lateness": "lateness — N jobs every 1 s on whole seconds",
    "burst": "burst — N one-off jobs due at the same instant",
    "idle_cpu": "idle_cpu — 10,000 hourly jobs, CPU while idle",
    "cron_next": "cron_next — successive next-fire times",
    "distributed": "distributed — asyncron lateness with a locker (1 and 3 instances)",
    "soak": "soak — 1,000 jobs every second",
}


def render_markdown(meta: dict[str, Any], rows: list[Row]) -> str:
    """The whole results page: run metadata, then one table per scenario."""
    out = [
        f"# Benchmark results ({meta['mode']})",
        "",
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']}",
        f"- load average before / after: {meta['loadavg_before']} / {meta['loadavg_after']}",
        f"- duration: {meta['duration_s']:.0f} s",
        "- versions: " + "; ".join(f"{k}: {v}" for k, v in sorted(meta["versions"].items())),
        "",
        "Medians over the repeats (`reps` = successful repeats); ratio columns divide by the",
        "same metric of the named row **from this run**. Methodology: `benchmarks/README.md`.",
    ]
    if meta.get("notes"):
        out += ["", *[f"> {note}" for note in meta["notes"]]]
    for scenario in TITLES:
        srows = [r for r in rows if r["scenario"] == scenario]
        if srows:
            out += ["", f"## {TITLES[scenario]}", "", *_table(scenario, srows)]
    return "\n".join(out) + "\n"
