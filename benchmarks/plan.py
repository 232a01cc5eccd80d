"""Which cases a ``--quick`` or ``--full`` run measures, with which schedulers, how often."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ("CRON_IMPLS", "FLOOR", "PEERS", "SCENARIO_NAMES", "SCHEDULERS", "Case", "build_plan")

FLOOR = "floor"
#: Schedulers of the scheduler scenarios, in table order.
SCHEDULERS: tuple[str, ...] = ("floor", "asyncron", "apscheduler3", "apscheduler4", "aiocron")
PEERS: tuple[str, ...] = ("apscheduler3", "apscheduler4", "aiocron")
#: Implementations compared by cron_next (all in the project's environment).
CRON_IMPLS: tuple[str, ...] = ("asyncron", "croniter", "cronsim")
SCENARIO_NAMES: tuple[str, ...] = (
    "add_cost",
    "lateness",
    "burst",
    "idle_cpu",
    "cron_next",
    "distributed",
    "soak",
)
CRON_EXPRS: tuple[str, ...] = ("*/5 * * * *", "0 9 * * MON-FRI")
#: (locker, instances) of the distributed scenario; no locker is the baseline.
DIST_CONFIGS: tuple[tuple[str | None, int], ...] = (
    (None, 1),
    ("redis", 1),
    ("redis", 3),
    ("postgres", 1),
    ("postgres", 3),
)


@dataclass(frozen=True)
class Case:
    """One measured configuration, run once per scheduler per repeat."""

    scenario: str
    label: str
    params: dict[str, Any]
    schedulers: tuple[str, ...]
    repeats: int
    timeout: float
    #: Processes started together for one measurement (distributed: 3 instances).
    instances: int = 1
    #: For the table: the configuration's fields (N, locker, instances, expression).
    keys: dict[str, Any] = field(default_factory=dict)


def build_plan(quick: bool, only: set[str] | None, schedulers: set[str] | None) -> list[Case]:
    """The cases of one run, filtered by ``--only`` and ``--schedulers``."""
    cases = _quick_cases() if quick else _full_cases()
    out: list[Case] = []
    for case in cases:
        if only and case.scenario not in only:
            continue
        scheds = case.schedulers
        if schedulers is not None and case.scenario == "soak":
            # Soak runs asyncron alone by default; named schedulers opt in.
            scheds = tuple(s for s in SCHEDULERS if s in schedulers)
        elif schedulers is not None and case.scenario != "cron_next":
            scheds = tuple(s for s in scheds if s in schedulers)
        if scheds:
            out.append(Case(**{**case.__dict__, "schedulers": scheds}))
    return out


def _scheduler_cases(
    *,
    add_ns: tuple[int, ...],
    late_ns: tuple[int, ...],
    window: int,
    burst_n: int,
    burst_lead: float,
    burst_timeout: float,
    idle_window: float,
    fires: int,
    dist_ns: tuple[int, ...],
    soak_s: int,
    soak_warmup: int,
    soak_scheds: tuple[str, ...],
    reps: dict[str, int],
) -> list[Case]:
    cases = [
        Case(
            "add_cost",
            f"N={n:,}",
            {"n": n},
            SCHEDULERS,
            reps.get("add_cost_100k", reps["add_cost"]) if n >= 100_000 else reps["add_cost"],
            300,
            keys={"N": n},
        )
        for n in add_ns
    ]
    cases += [
        Case(
            "lateness",
            f"N={n:,}",
            {"n": n, "window": window},
            SCHEDULERS,
            reps["lateness"],
            180,
            keys={"N": n},
        )
        for n in late_ns
    ]
    cases.append(
        Case(
            "burst",
            f"N={burst_n:,}",
            {"n": burst_n, "lead": burst_lead, "timeout": burst_timeout},
            SCHEDULERS,
            reps["burst"],
            120,
            keys={"N": burst_n},
        )
    )
    cases.append(
        Case(
            "idle_cpu",
            "N=10,000",
            {"n": 10_000, "window": idle_window, "settle": 0.5 if idle_window < 10 else 1},
            SCHEDULERS,
            reps["idle_cpu"],
            120,
            keys={"N": 10_000},
        )
    )
    cases += [
        Case(
            "cron_next",
            expr,
            {"expr": expr, "fires": fires},
            CRON_IMPLS,
            reps["cron_next"],
            180,
            keys={"expr": expr, "fires": fires},
        )
        for expr in CRON_EXPRS
    ]
    cases += [
        Case(
            "distributed",
            f"{locker or 'no locker'} x{instances} N={n:,}",
            {"n": n, "window": window, "adapter": {"locker": locker}},
            ("asyncron",),
            reps["distributed"]
            if n >= 1000
            else reps.get("distributed_small", reps["distributed"]),
            180,
            instances=instances,
            keys={"locker": locker or "none", "instances": instances, "N": n},
        )
        for n in dist_ns
        for locker, instances in DIST_CONFIGS
    ]
    cases.append(
        Case(
            "soak",
            f"N=1,000 {soak_s}s",
            {"n": 1000, "duration": soak_s, "warmup": soak_warmup},
            soak_scheds,
            1,
            soak_s + 120,
            keys={"N": 1000, "duration_s": soak_s},
        )
    )
    return cases


def _quick_cases() -> list[Case]:
    """A smoke run under 3 minutes: 1 repeat, small N, short windows."""
    return _scheduler_cases(
        add_ns=(1_000, 10_000),
        late_ns=(100, 1_000),
        window=2,
        burst_n=5_000,
        burst_lead=1.5,
        burst_timeout=10,
        idle_window=2,
        fires=10_000,
        dist_ns=(100,),
        soak_s=30,
        soak_warmup=10,
        soak_scheds=("asyncron",),
        reps=dict.fromkeys(SCENARIO_NAMES, 1),
    )


def _full_cases() -> list[Case]:
    """The issue's sizes and windows, repeats trimmed to stay under 30 minutes on 2 cores.

    burst: 5 repeats (its spread between repeats is the widest); add_cost 1k/10k,
    lateness and distributed N=1k: 3; idle_cpu and cron_next: 2; add_cost 100k,
    distributed N=100 and soak: 1.
    """
    return _scheduler_cases(
        add_ns=(1_000, 10_000, 100_000),
        late_ns=(100, 1_000, 10_000),
        window=10,
        burst_n=10_000,
        burst_lead=2,
        burst_timeout=20,
        idle_window=10,
        fires=100_000,
        dist_ns=(100, 1_000),
        soak_s=300,
        soak_warmup=30,
        soak_scheds=("asyncron",),
        reps={
            "add_cost": 3,
            "add_cost_100k": 1,
            "lateness": 3,
            "burst": 5,
            "idle_cpu": 2,
            "cron_next": 2,
            "distributed": 3,
            "distributed_small": 1,
            "soak": 1,
        },
    )
