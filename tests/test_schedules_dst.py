"""Daylight-saving time: the Vixie cron rules for fixed-time and wildcard schedules."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from asyncron._schedules import Schedule, cron, daily, every, monthly, weekly

# (zone, spring day, autumn day, offsets: winter, summer)
ZONES = [
    ("Europe/Berlin", date(2026, 3, 29), date(2026, 10, 25), 1, 2),
    ("America/New_York", date(2026, 3, 8), date(2026, 11, 1), -5, -4),
]
# Local hour whose wall times repeat on the autumn day / are missing on the spring day.
REPEATED_HOUR = {"Europe/Berlin": 2, "America/New_York": 1}
MISSING_HOUR = {"Europe/Berlin": 2, "America/New_York": 2}


def local_day_bounds(zone: ZoneInfo, day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).astimezone(UTC)
    return start, end


def fires_between(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Ticks in [start, end)."""
    out = []
    tick = schedule.next_fire(start - timedelta(microseconds=1))
    while tick is not None and tick < end:
        out.append(tick)
        tick = schedule.next_fire(tick)
    return out


def at(zone: ZoneInfo, day: date, hour: int, minute: int = 0, *, offset: int) -> datetime:
    """A UTC instant from a local wall time with an explicit UTC offset (hours)."""
    wall = datetime(day.year, day.month, day.day, hour, minute)
    return (wall - timedelta(hours=offset)).replace(tzinfo=UTC)


@pytest.mark.parametrize(("tz", "spring", "autumn", "winter", "summer"), ZONES)
class TestFixedTime:
    def test_missing_time_fires_at_the_transition(
        self, tz: str, spring: date, autumn: date, winter: int, summer: int
    ) -> None:
        """02:30 on the spring day fires once, at 03:00 summer time (the transition)."""
        zone = ZoneInfo(tz)
        start, end = local_day_bounds(zone, spring)
        for schedule in (
            cron("30 2 * * *", tz=tz),
            daily(at="02:30", tz=tz),
            weekly(on="sun", at="02:30", tz=tz),
        ):
            assert fires_between(schedule, start, end) == [at(zone, spring, 3, offset=summer)]

    def test_several_missing_times_make_one_run(
        self, tz: str, spring: date, autumn: date, winter: int, summer: int
    ) -> None:
        """All times inside the gap collapse into one run at the transition."""
        zone = ZoneInfo(tz)
        start, end = local_day_bounds(zone, spring)
        transition = at(zone, spring, 3, offset=summer)
        assert fires_between(cron("0,15,30,45 2 * * *", tz=tz), start, end) == [transition]
        assert fires_between(daily(at=["02:00", "02:59:59"], tz=tz), start, end) == [transition]

    def test_repeated_time_fires_once_at_first_occurrence(
        self, tz: str, spring: date, autumn: date, winter: int, summer: int
    ) -> None:
        """A wall time that happens twice on the autumn day fires once, in summer time."""
        zone = ZoneInfo(tz)
        hour = REPEATED_HOUR[tz]
        start, end = local_day_bounds(zone, autumn)
        expected = [at(zone, autumn, hour, 30, offset=summer)]
        for schedule in (
            cron(f"30 {hour} * * *", tz=tz),
            daily(at=f"{hour:02d}:30", tz=tz),
            weekly(on="sun", at=f"{hour:02d}:30", tz=tz),
        ):
            assert fires_between(schedule, start, end) == expected

    def test_croniter_fires_both_folds_but_we_fire_once(
        self, tz: str, spring: date, autumn: date, winter: int, summer: int
    ) -> None:
        """Pinned divergence: croniter yields both copies of a repeated fixed time; we don't."""
        zone = ZoneInfo(tz)
        hour = REPEATED_HOUR[tz]
        expr = f"30 {hour} * * *"
        eve = datetime(autumn.year, autumn.month, autumn.day, tzinfo=zone) - timedelta(hours=12)
        reference = croniter(expr, eve)
        theirs = [reference.get_next(datetime).astimezone(UTC) for _ in range(2)]
        assert theirs == [
            at(zone, autumn, hour, 30, offset=summer),
            at(zone, autumn, hour, 30, offset=winter),
        ]
        ours = cron(expr, tz=tz)
        first = ours.next_fire(eve)
        assert first == theirs[0]
        assert first is not None
        second = ours.next_fire(first)
        assert second == at(zone, autumn + timedelta(days=1), hour, 30, offset=winter)

    def test_next_fire_from_inside_the_second_copy(
        self, tz: str, spring: date, autumn: date, winter: int, summer: int
    ) -> None:
        """Asked from inside the repeated hour's second copy, the tick is tomorrow's."""
        zone = ZoneInfo(tz)
        hour = REPEATED_HOUR[tz]
        inside = at(zone, autumn, hour, 10, offset=winter)
        schedule = cron(f"30 {hour} * * *", tz=tz)
        tomorrow = at(zone, autumn + timedelta(days=1), hour, 30, offset=winter)
        assert schedule.next_fire(inside) == tomorrow
        assert schedule.last_fire(inside) == at(zone, autumn, hour, 30, offset=summer)

    def test_ranged_hours_are_fixed_time(
        self, tz: str, spring: date, autumn: date, winter: int, summer: int
    ) -> None:
        """`0 0-5 * * *` (hour does not start with '*') fires once per wall hour."""
        zone = ZoneInfo(tz)
        start, end = local_day_bounds(zone, autumn)
        assert len(fires_between(cron("0 0-5 * * *", tz=tz), start, end)) == 6
        start, end = local_day_bounds(zone, spring)
        # The missing 02:00 fires at the transition, which is also 03:00: one run.
        assert len(fires_between(cron("0 0-5 * * *", tz=tz), start, end)) == 5


@pytest.mark.parametrize(("tz", "spring", "autumn", "winter", "summer"), ZONES)
class TestWildcard:
    def test_hourly_fires_every_real_hour(
        self, tz: str, spring: date, autumn: date, winter: int, summer: int
    ) -> None:
        """`0 * * * *` fires 25 times on the 25-hour day and 23 on the 23-hour day."""
        zone = ZoneInfo(tz)
        for day, count in ((autumn, 25), (spring, 23)):
            start, end = local_day_bounds(zone, day)
            ticks = fires_between(cron("0 * * * *", tz=tz), start, end)
            assert len(ticks) == count
            assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(ticks))
        start, end = local_day_bounds(zone, autumn)
        assert len(fires_between(cron("@hourly", tz=tz), start, end)) == 25

    def test_quarter_hours_fire_in_both_copies(
        self, tz: str, spring: date, autumn: date, winter: int, summer: int
    ) -> None:
        """`*/15 * * * *` fires in both copies of the repeated hour and never in the gap."""
        zone = ZoneInfo(tz)
        hour = REPEATED_HOUR[tz]
        start, end = local_day_bounds(zone, autumn)
        ticks = fires_between(cron("*/15 * * * *", tz=tz), start, end)
        assert len(ticks) == 100
        walls = [t.astimezone(zone) for t in ticks]
        assert sum(1 for w in walls if (w.hour, w.minute) == (hour, 30)) == 2
        start, end = local_day_bounds(zone, spring)
        ticks = fires_between(cron("*/15 * * * *", tz=tz), start, end)
        assert len(ticks) == 92
        assert not any(t.astimezone(zone).hour == MISSING_HOUR[tz] for t in ticks)

    def test_wildcard_minutes_in_a_fixed_hour(
        self, tz: str, spring: date, autumn: date, winter: int, summer: int
    ) -> None:
        """`*/30 H * * *` (minute starts with '*') fires in both copies of a repeated hour."""
        zone = ZoneInfo(tz)
        hour = REPEATED_HOUR[tz]
        start, end = local_day_bounds(zone, autumn)
        ticks = fires_between(cron(f"*/30 {hour} * * *", tz=tz), start, end)
        assert ticks == [
            at(zone, autumn, hour, 0, offset=summer),
            at(zone, autumn, hour, 30, offset=summer),
            at(zone, autumn, hour, 0, offset=winter),
            at(zone, autumn, hour, 30, offset=winter),
        ]
        start, end = local_day_bounds(zone, spring)
        assert fires_between(cron(f"*/30 {MISSING_HOUR[tz]} * * *", tz=tz), start, end) == []

    def test_last_fire_walks_segments_backwards(
        self, tz: str, spring: date, autumn: date, winter: int, summer: int
    ) -> None:
        """last_fire agrees with next_fire across both transitions."""
        zone = ZoneInfo(tz)
        for day in (spring, autumn):
            start, end = local_day_bounds(zone, day)
            for expr in ("0 * * * *", "*/15 * * * *", "30 2 * * *"):
                schedule = cron(expr, tz=tz)
                for tick in fires_between(schedule, start, end):
                    assert schedule.last_fire(tick) == tick
                    assert schedule.last_fire(tick + timedelta(seconds=59)) == tick


class TestMidnightGap:
    """America/Santiago skips 00:00-00:59 on 2026-09-06 (clocks go from 00:00 to 01:00)."""

    ZONE = ZoneInfo("America/Santiago")

    def test_daily_midnight_fires_at_the_transition(self) -> None:
        """daily() at 00:00 fires at 01:00 on the gap day, and every other day at 00:00."""
        ticks = fires_between(
            daily(tz="America/Santiago"),
            datetime(2026, 9, 4, tzinfo=UTC),
            datetime(2026, 9, 9, tzinfo=UTC),
        )
        walls = [t.astimezone(self.ZONE).replace(tzinfo=None) for t in ticks]
        assert walls == [
            datetime(2026, 9, 4),
            datetime(2026, 9, 5),
            datetime(2026, 9, 6, 1),
            datetime(2026, 9, 7),
            datetime(2026, 9, 8),
        ]

    def test_cron_midnight_and_monthly_do_not_hang_or_skip(self) -> None:
        """@daily and a monthly 6th at 00:00 fire on the gap day."""
        day_start = datetime(2026, 9, 5, 12, tzinfo=UTC)
        expected = datetime(2026, 9, 6, 1, tzinfo=self.ZONE)
        assert cron("@daily", tz="America/Santiago").next_fire(day_start) == expected
        assert monthly(on=6, tz="America/Santiago").next_fire(day_start) == expected

    def test_wildcard_in_the_gap_skips_the_day(self) -> None:
        """`* 0 * * *` has no real instant on the gap day and resumes the day after."""
        schedule = cron("*/10 0 * * *", tz="America/Santiago")
        tick = schedule.next_fire(datetime(2026, 9, 5, 12, tzinfo=UTC))
        assert tick == datetime(2026, 9, 7, 0, 0, tzinfo=self.ZONE)
        assert schedule.last_fire(tick - timedelta(seconds=1)) == datetime(
            2026, 9, 5, 0, 50, tzinfo=self.ZONE
        )


class TestOtherZones:
    def test_lord_howe_half_hour_shift(self) -> None:
        """Australia/Lord_Howe moves 30 minutes: 02:15 on its spring day fires at 02:30."""
        zone = ZoneInfo("Australia/Lord_Howe")
        tick = daily(at="02:15", tz="Australia/Lord_Howe").next_fire(
            datetime(2026, 10, 3, 12, tzinfo=UTC)
        )
        assert tick is not None
        assert tick.astimezone(zone).replace(tzinfo=None) == datetime(2026, 10, 4, 2, 30)

    def test_every_ignores_dst(self) -> None:
        """every(hours=1) keeps counting elapsed time across a transition."""
        zone = ZoneInfo("Europe/Berlin")
        start, end = local_day_bounds(zone, date(2026, 10, 25))
        assert len(fires_between(every(hours=1), start, end)) == 25


class TestSkippedDay:
    """Pacific/Apia skipped 2011-12-30 entirely (from -10:00 to +14:00)."""

    ZONE = ZoneInfo("Pacific/Apia")

    def test_fixed_time_on_the_missing_day_fires_at_the_transition(self) -> None:
        """09:00 on the missing day fires once, at 00:00 of the next real day."""
        for schedule in (
            daily(at="09:00", tz="Pacific/Apia"),
            cron("0 9 * * *", tz="Pacific/Apia"),
        ):
            ticks = fires_between(
                schedule, datetime(2011, 12, 29, tzinfo=UTC), datetime(2011, 12, 31, 12, tzinfo=UTC)
            )
            walls = [t.astimezone(self.ZONE).replace(tzinfo=None) for t in ticks]
            assert walls == [
                datetime(2011, 12, 29, 9),
                datetime(2011, 12, 31, 0),
                datetime(2011, 12, 31, 9),
            ]

    def test_wildcard_skips_the_missing_day(self) -> None:
        """`0 */6 * * *` has no tick on the missing day."""
        ticks = fires_between(
            cron("0 */6 * * *", tz="Pacific/Apia"),
            datetime(2011, 12, 29, 12, tzinfo=UTC),  # 02:00 on the 29th, local
            datetime(2011, 12, 31, tzinfo=UTC),  # 14:00 on the 31st, local
        )
        walls = [t.astimezone(self.ZONE).replace(tzinfo=None) for t in ticks]
        assert walls == [datetime(2011, 12, 29, h) for h in (6, 12, 18)] + [
            datetime(2011, 12, 31, h) for h in (0, 6, 12)
        ]
