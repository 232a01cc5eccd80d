"""Property tests: the compiled cron matcher agrees with croniter, its reference.

croniter is right in UTC and, in zones with daylight-saving time, away from the
transitions (where asyncron follows the Vixie rules instead, see test_schedules_dst.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from asyncron._schedules import CronSchedule, cron
from asyncron._time import from_us, to_us
from asyncron.errors import InvalidScheduleError

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIRES = 20
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
DST_ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "America/Santiago"]
# Half-hour DST, negative DST, Ramadan suspensions, a skipped calendar day (Apia 2011).
ODD_ZONES = ["Australia/Lord_Howe", "Europe/Dublin", "Africa/Casablanca", "Pacific/Apia"]
PLAIN_ZONES = ["Asia/Tokyo", "Asia/Kolkata", "Asia/Kathmandu", "America/Phoenix"]


def element(low: int, high: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    """One list element: *, */s, a, a-b, a-b/s or a/s, values as numbers or names.

    Drawn as one flat tuple and formatted, which keeps generation cheap."""

    def show(n: int, as_name: bool) -> str:
        return names[n - low].title() if names is not None and as_name else str(n)

    def build(shape: int, a: int, b: int, step: int, named_a: bool, named_b: bool) -> str:
        first, second = show(a, named_a), show(b, named_b)
        return (
            "*",
            f"*/{step}",
            first,
            f"{first}-{second}",
            f"{first}-{second}/{step}",
            f"{a}/{step}",
        )[shape]

    return st.builds(
        build,
        st.integers(0, 5),
        st.integers(low, high),
        st.integers(low, high),
        st.integers(1, max(2, (high - low) // 2)),
        st.booleans(),
        st.booleans(),
    )


def field(low: int, high: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    return st.lists(element(low, high, names), min_size=1, max_size=3).map(",".join)


def weekday() -> st.SearchStrategy[str]:
    return st.builds(
        lambda n, named: DAYS[n].title() if named else str(n), st.integers(0, 6), st.booleans()
    )


EXPRESSIONS = st.builds(
    lambda *fields: " ".join(fields),
    field(0, 59),
    field(0, 23),
    field(1, 31) | st.just("L"),
    field(1, 12, MONTHS),
    field(0, 6, DAYS),
)
NTH = st.lists(
    st.builds(lambda d, n: f"{d}#{n}", weekday(), st.integers(1, 5))
    | weekday().map(lambda d: f"L{d}"),
    min_size=1,
    max_size=3,
).map(",".join)
# '#' and L-weekday with an unrestricted day of month (with a restricted one, croniter
# ignores the day of month while asyncron ORs them, as Vixie does for plain weekdays).
NTH_EXPRESSIONS = st.builds(
    lambda minute, hour, month, dow: f"{minute} {hour} * {month} {dow}",
    field(0, 59),
    field(0, 23),
    field(1, 12, MONTHS),
    NTH,
)
SECONDS_EXPRESSIONS = st.builds(lambda s, rest: f"{s} {rest}", field(0, 59), EXPRESSIONS)


def instants(first: datetime, last: datetime) -> st.SearchStrategy[datetime]:
    """Aware UTC instants with microseconds (drawn as integers: cheaper than st.datetimes)."""
    return st.integers(to_us(first), to_us(last)).map(from_us)


INSTANTS = instants(datetime(1990, 1, 1, tzinfo=UTC), datetime(2060, 12, 31, tzinfo=UTC))


def compile_or_skip(expr: str, *, seconds: bool = False, tz: str | None = None) -> CronSchedule:
    """Our schedule, or skip the example when the expression is invalid or never fires
    (croniter must agree that it is invalid or cannot find a date)."""
    try:
        return cron(expr, seconds=seconds, tz=tz)
    except InvalidScheduleError as exc:
        if croniter.is_valid(expr, second_at_beginning=seconds):
            assert "never occurs" in str(exc) or "mix" in str(exc), str(exc)
        assume(False)
        raise


def near_transition(zone: ZoneInfo, instant: datetime) -> bool:
    offsets = {(instant + timedelta(hours=h)).astimezone(zone).utcoffset() for h in (-26, 0, 26)}
    return len(offsets) > 1


def compare(expr: str, start: datetime, *, seconds: bool = False, tz: str | None = None) -> None:
    schedule = compile_or_skip(expr, seconds=seconds, tz=tz)
    zone = ZoneInfo(tz) if tz else None
    begin = start.astimezone(zone) if zone else start
    if zone is not None:
        assume(not near_transition(zone, start))
    reference = croniter(expr, begin, second_at_beginning=seconds)
    after = start
    for _ in range(FIRES):
        try:
            theirs = reference.get_next(datetime).astimezone(UTC)
        except Exception:  # croniter gives up after 50 years: we must not find one sooner
            ours = schedule.next_fire(after)
            assert ours is None or ours > after + timedelta(days=365 * 49)
            return
        ours = schedule.next_fire(after)
        if zone is not None and (
            near_transition(zone, theirs) or (ours is not None and near_transition(zone, ours))
        ):
            return
        assert ours == theirs, (expr, tz, after)
        assert schedule.last_fire(ours) == ours
        after = ours


class TestAgainstCroniter:
    @SETTINGS
    @given(expr=EXPRESSIONS, start=INSTANTS)
    def test_utc_matches_croniter(self, expr: str, start: datetime) -> None:
        """In UTC, 20 successive fires equal croniter's for random expressions."""
        compare(expr, start)

    @settings(SETTINGS, max_examples=60)
    @given(expr=NTH_EXPRESSIONS, start=INSTANTS)
    def test_nth_weekday_matches_croniter(self, expr: str, start: datetime) -> None:
        """'#' (nth weekday) and 'L' + weekday (last one in the month) equal croniter's."""
        compare(expr, start)

    @settings(SETTINGS, max_examples=100)
    @given(expr=SECONDS_EXPRESSIONS, start=INSTANTS)
    def test_seconds_first_matches_croniter(self, expr: str, start: datetime) -> None:
        """6-field expressions (seconds first) equal croniter's second_at_beginning=True."""
        compare(expr, start, seconds=True)

    @SETTINGS
    @given(expr=EXPRESSIONS, start=INSTANTS, tz=st.sampled_from(DST_ZONES + PLAIN_ZONES))
    def test_zones_match_croniter_away_from_transitions(
        self, expr: str, start: datetime, tz: str
    ) -> None:
        """In zones, fires away from DST transitions equal croniter's."""
        compare(expr, start, tz=tz)

    @pytest.mark.parametrize("expr", ["*/5 * * * *", "0 9 * * MON-FRI"])
    @pytest.mark.parametrize("tz", [None, "Asia/Tokyo"])
    def test_benchmark_expressions_match_over_many_fires(self, expr: str, tz: str | None) -> None:
        """The benchmark's expressions agree with croniter over 1,000 successive fires."""
        zone = ZoneInfo(tz) if tz else UTC
        start = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
        reference = croniter(expr, start.astimezone(zone))
        schedule = cron(expr, tz=tz)
        after = start
        for _ in range(1000):
            ours = schedule.next_fire(after)
            assert ours == reference.get_next(datetime).astimezone(UTC)
            after = ours


class TestConsistency:
    @SETTINGS
    @given(
        expr=EXPRESSIONS,
        start=instants(datetime(2010, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)),
        tz=st.sampled_from([*DST_ZONES, *ODD_ZONES, "UTC"]),
    )
    def test_next_and_last_fire_agree_everywhere(self, expr: str, start: datetime, tz: str) -> None:
        """Across DST too, ticks strictly increase and last_fire inverts next_fire."""
        schedule = compile_or_skip(expr, tz=tz)
        after = start
        for _ in range(FIRES):
            tick = schedule.next_fire(after)
            if tick is None:
                return
            assert tick > after
            assert schedule.last_fire(tick) == tick
            previous = schedule.last_fire(tick - timedelta(microseconds=1))
            assert previous is None or previous <= after
            if previous is not None:
                assert schedule.next_fire(previous) == tick
            after = tick
