"""Schedule models: validation, serialisation, anchoring and next/last fire times."""

from __future__ import annotations

import calendar
import itertools
import random
import time as clock
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncron._schedules import (
    CronSchedule,
    DailySchedule,
    EverySchedule,
    MonthlySchedule,
    OnceSchedule,
    RandomEverySchedule,
    Schedule,
    WeeklySchedule,
    cron,
    daily,
    every,
    monthly,
    once,
    parse_schedule,
    random_every,
    weekly,
)
from asyncron.errors import InvalidScheduleError

EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def fires(schedule: Schedule, after: datetime, count: int, **kw: Any) -> list[datetime]:
    out = []
    for _ in range(count):
        nxt = schedule.next_fire(after, **kw)
        assert nxt is not None
        out.append(nxt)
        after = nxt
    return out


def assert_invalid(exc: pytest.ExceptionInfo[InvalidScheduleError], field: str, value: Any) -> None:
    assert isinstance(exc.value, ValueError)
    assert type(exc.value) is InvalidScheduleError
    assert exc.value.field == field
    assert f"{field}=" in str(exc.value)
    assert repr(value) in str(exc.value)


class TestCronValidation:
    @pytest.mark.parametrize(
        "expr",
        [
            "* * * *",
            "* * * * * *",
            "* * * * * * *",
            "@reboot",
            "@fortnightly",
            "0 0 30 2 *",
            "0 0 31 4,6,9,11 *",
            "60 * * * *",
            "* 24 * * *",
            "* * 32 * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "H * * * *",
            "R * * * *",
            "0 0 15W * *",
            "0 0 * * 1#2,3",
            "0 0 * * 1#6",
            "0 0 * * funday",
            "every minute",
            "-1 * * * *",
        ],
    )
    def test_bad_expression_is_rejected(self, expr: str) -> None:
        """An invalid, unsupported or never-firing expression raises InvalidScheduleError."""
        with pytest.raises(InvalidScheduleError) as exc:
            cron(expr)
        assert_invalid(exc, "expr", expr)

    @pytest.mark.parametrize("value", ["", "   ", 5, None, b"* * * * *"])
    def test_non_string_or_empty_expression_is_rejected(self, value: Any) -> None:
        """The expression must be a non-empty string."""
        with pytest.raises(InvalidScheduleError) as exc:
            cron(value)
        assert_invalid(exc, "expr", value)

    def test_five_fields_with_seconds_true_is_rejected(self) -> None:
        """seconds=True requires exactly 6 fields."""
        with pytest.raises(InvalidScheduleError, match="exactly 6"):
            cron("*/5 * * * *", seconds=True)

    def test_six_fields_without_seconds_names_the_option(self) -> None:
        """A 6-field expression without seconds=True points at the option."""
        with pytest.raises(InvalidScheduleError, match="seconds=True"):
            cron("0 */5 * * * *")

    @pytest.mark.parametrize("value", ["yes", 1, None])
    def test_seconds_must_be_bool(self, value: Any) -> None:
        """seconds accepts only True or False."""
        with pytest.raises(InvalidScheduleError) as exc:
            cron("* * * * *", seconds=value)
        assert_invalid(exc, "seconds", value)

    @pytest.mark.parametrize(
        "tz", ["Mars/Olympus", timezone(timedelta(hours=1)), 5, "", "../etc/passwd"]
    )
    def test_bad_zone_is_rejected(self, tz: Any) -> None:
        """Unknown zones and fixed-offset timezones raise InvalidScheduleError."""
        with pytest.raises(InvalidScheduleError) as exc:
            cron("* * * * *", tz=tz)
        assert_invalid(exc, "tz", tz)

    def test_zone_error_is_chained_to_zoneinfo(self) -> None:
        """An unknown zone's error keeps zoneinfo's exception as its cause chain."""
        with pytest.raises(InvalidScheduleError) as exc:
            cron("* * * * *", tz="Mars/Olympus")
        chain = []
        cause: BaseException | None = exc.value
        while cause is not None:
            chain.append(type(cause).__name__)
            cause = cause.__cause__
        assert "ZoneInfoNotFoundError" in chain

    def test_fixed_offset_error_hints_an_etc_zone(self) -> None:
        """A fixed offset is rejected with an Etc/GMT hint."""
        with pytest.raises(InvalidScheduleError, match="Etc/GMT-1"):
            daily(tz=timezone(timedelta(hours=1)))

    @pytest.mark.parametrize(
        "tz", ["UTC", UTC, timezone(timedelta(0)), ZoneInfo("Europe/Berlin"), "America/New_York"]
    )
    def test_zone_is_stored_as_iana_name(self, tz: Any) -> None:
        """Zones are stored as IANA names and exposed as a cached ZoneInfo."""
        schedule = cron("* * * * *", tz=tz)
        assert isinstance(schedule.tz, str)
        assert schedule.zone == ZoneInfo(schedule.tz)
        assert schedule.zone is schedule.zone


class TestEveryValidation:
    @pytest.mark.parametrize(
        ("args", "kwargs", "field", "value"),
        [
            ((), {}, "interval", None),
            ((0,), {}, "interval", 0),
            ((-1,), {}, "interval", -1),
            ((timedelta(0),), {}, "interval", timedelta(0)),
            ((timedelta(seconds=-5),), {}, "interval", timedelta(seconds=-5)),
            ((True,), {}, "interval", True),
            (("5",), {}, "interval", "5"),
            ((float("nan"),), {}, "interval", float("nan")),
            ((), {"minutes": -1}, "minutes", -1),
            ((), {"minutes": True}, "minutes", True),
            ((), {"hours": "1"}, "hours", "1"),
            ((timedelta(minutes=1),), {"minutes": 5}, "interval", timedelta(minutes=1)),
        ],
    )
    def test_bad_interval_is_rejected(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], field: str, value: Any
    ) -> None:
        """Zero, negative, bool, non-numeric and interval-plus-units raise."""
        with pytest.raises(InvalidScheduleError) as exc:
            every(*args, **kwargs)
        assert_invalid(exc, field, value)

    def test_units_combine(self) -> None:
        """Unit keywords add up to one interval."""
        assert every(hours=1, minutes=30, milliseconds=500).interval == timedelta(
            hours=1, minutes=30, milliseconds=500
        )
        assert every(90).interval == timedelta(seconds=90)
        assert every(weeks=1, days=1).interval == timedelta(days=8)


class TestRandomEveryValidation:
    @pytest.mark.parametrize(
        ("low", "high", "field", "value"),
        [
            (5, 1, "high", timedelta(seconds=1)),
            (1, 1, "high", timedelta(seconds=1)),
            (0, 1, "low", 0),
            (-1, 2, "low", -1),
            (True, 2, "low", True),
            ("1", 2, "low", "1"),
            (1, None, "high", None),
        ],
    )
    def test_bad_bounds_are_rejected(self, low: Any, high: Any, field: str, value: Any) -> None:
        """low and high must be positive durations with low < high."""
        with pytest.raises(InvalidScheduleError) as exc:
            random_every(low, high)
        assert_invalid(exc, field, value)

    def test_draw_is_within_bounds_and_reproducible(self) -> None:
        """next_fire adds a uniform draw in [low, high] from the given rng."""
        schedule = random_every(timedelta(seconds=10), 20)
        after = utc(2026, 1, 1)
        draws = [schedule.next_fire(after, rng=random.Random(7)) for _ in range(2)]
        assert draws[0] == draws[1]
        for _ in range(100):
            nxt = schedule.next_fire(after)
            assert nxt is not None
            assert timedelta(seconds=10) <= nxt - after <= timedelta(seconds=20)
        assert schedule.last_fire(after) is None
        assert not schedule.is_pure


class TestPeriodValidation:
    @pytest.mark.parametrize("value", [0, -1, True, 1.5, "2", None])
    def test_every_must_be_a_positive_int(self, value: Any) -> None:
        """every must be an int >= 1 (bool rejected)."""
        with pytest.raises(InvalidScheduleError) as exc:
            daily(value)
        assert_invalid(exc, "every", value)

    @pytest.mark.parametrize(
        "value",
        ["25:00", "12:60", "12:00:60", "9am", "", 900, time(9, tzinfo=UTC), time(9, 0, 0, 5), []],
    )
    def test_bad_at_is_rejected(self, value: Any) -> None:
        """at must be HH:MM[:SS], a naive whole-second time, or a non-empty sequence."""
        with pytest.raises(InvalidScheduleError) as exc:
            daily(at=value)
        assert_invalid(exc, "at", value)

    def test_at_accepts_strings_times_and_sequences(self) -> None:
        """at is normalised to sorted, unique times."""
        schedule = daily(at=["17:30", time(9), "09:00:00", "7:05:30"])
        assert schedule.at == (time(7, 5, 30), time(9), time(17, 30))

    @pytest.mark.parametrize("value", ["funday", "mo", 7, -1, True, [], 1.0, None])
    def test_bad_weekday_is_rejected(self, value: Any) -> None:
        """Weekdays are names or ints 0..6."""
        with pytest.raises(InvalidScheduleError) as exc:
            weekly(on=value)
        assert_invalid(exc, "on", value)

    def test_weekday_names_are_case_insensitive(self) -> None:
        """'mon', 'Monday', 'SUN' and ints map to 0=Monday..6=Sunday."""
        assert weekly(on=["mon", "Monday", "SUN", 2, "Wed"]).on == (0, 2, 6)

    @pytest.mark.parametrize("value", [0, 32, -32, True, [], "1", None, [1, 0]])
    def test_bad_month_day_is_rejected(self, value: Any) -> None:
        """Month days are 1..31 or -31..-1."""
        with pytest.raises(InvalidScheduleError) as exc:
            monthly(on=value)
        bad = value[-1] if isinstance(value, list) and value else value
        assert_invalid(exc, "on", bad)

    @pytest.mark.parametrize("tz", ["Nowhere/City", timezone(timedelta(hours=-5))])
    def test_bad_zone_is_rejected(self, tz: Any) -> None:
        """Period schedules validate their zone like cron."""
        with pytest.raises(InvalidScheduleError) as exc:
            weekly(on="mon", tz=tz)
        assert_invalid(exc, "tz", tz)


class TestOnceValidation:
    @pytest.mark.parametrize("value", ["tomorrow", 5, None, [datetime(2026, 1, 1), "x"], []])
    def test_bad_at_is_rejected(self, value: Any) -> None:
        """once takes a datetime, a sequence of datetimes, or 'now'."""
        with pytest.raises(InvalidScheduleError) as exc:
            once(value)
        assert exc.value.field == "at"

    def test_mixed_naive_and_aware_is_rejected(self) -> None:
        """All datetimes must be naive or all aware."""
        with pytest.raises(InvalidScheduleError, match="all naive or all aware"):
            once([datetime(2026, 1, 1), utc(2026, 1, 2)])

    def test_times_are_sorted_and_deduplicated(self) -> None:
        """Aware times become UTC, sorted, one per instant."""
        berlin_noon = datetime(2026, 6, 1, 12, tzinfo=BERLIN)
        schedule = once([utc(2026, 6, 2), berlin_noon, utc(2026, 6, 1, 10)])
        assert schedule.at == (utc(2026, 6, 1, 10), utc(2026, 6, 2))
        assert all(t.tzinfo is UTC for t in schedule.at)

    def test_naive_times_are_kept_until_with_zone(self) -> None:
        """Naive datetimes stay naive; with_zone resolves them by the DST rules."""
        schedule = once([datetime(2026, 3, 29, 2, 30), datetime(2026, 1, 1, 9)])
        assert schedule.at[0].tzinfo is None
        resolved = schedule.with_zone(BERLIN)
        assert isinstance(resolved, OnceSchedule)
        assert resolved.at == (utc(2026, 1, 1, 8), utc(2026, 3, 29, 1))

    def test_unresolved_naive_times_are_read_as_utc(self) -> None:
        """Before with_zone, next_fire and last_fire read naive times as UTC."""
        schedule = once([datetime(2026, 1, 1, 9), datetime(2026, 1, 2, 9)])
        assert schedule.next_fire(utc(2026, 1, 1)) == utc(2026, 1, 1, 9)
        assert schedule.next_fire(utc(2026, 1, 1, 9)) == utc(2026, 1, 2, 9)
        assert schedule.next_fire(utc(2026, 1, 2, 9)) is None
        assert schedule.last_fire(utc(2026, 1, 1, 12)) == utc(2026, 1, 1, 9)

    def test_now(self) -> None:
        """once('now') has no ticks of its own: the scheduler runs it at activation."""
        schedule = once("now")
        assert schedule.now and schedule.at == ()
        assert schedule.next_fire(utc(2026, 1, 1)) is None
        assert schedule.last_fire(utc(2026, 1, 1)) is None

    def test_next_and_last_fire(self) -> None:
        """next_fire is the first time after, last_fire the last at or before; then None."""
        schedule = once([utc(2026, 1, 1), utc(2026, 1, 2)])
        assert schedule.next_fire(utc(2025, 1, 1)) == utc(2026, 1, 1)
        assert schedule.next_fire(utc(2026, 1, 1)) == utc(2026, 1, 2)
        assert schedule.next_fire(utc(2026, 1, 2)) is None
        assert schedule.last_fire(utc(2026, 1, 1)) == utc(2026, 1, 1)
        assert schedule.last_fire(utc(2025, 1, 1)) is None


ALL_KINDS: list[Schedule] = [
    cron("*/5 * * * *"),
    cron("0 30 9 * * MON-FRI", seconds=True, tz="Europe/Berlin"),
    cron("@daily", tz="UTC"),
    every(minutes=5),
    every(timedelta(milliseconds=1500)),
    random_every(1, timedelta(minutes=2)),
    daily(2, at=["09:00", "17:30:15"], tz="America/New_York"),
    weekly(on=["mon", "fri"], at="08:00"),
    monthly(3, on=[1, -1], at="23:59", tz="Asia/Tokyo"),
    once([utc(2026, 1, 1), utc(2026, 5, 1, 12, 30)]),
    once([datetime(2026, 1, 1, 9)]),
    once("now"),
]


class TestSerialisation:
    @pytest.mark.parametrize("schedule", ALL_KINDS, ids=lambda s: s.kind)
    def test_json_round_trip(self, schedule: Schedule) -> None:
        """parse_schedule(model_dump_json()) returns an equal schedule of the same class."""
        text = schedule.model_dump_json()
        back = parse_schedule(text)
        assert back == schedule
        assert type(back) is type(schedule)
        assert parse_schedule(text.encode()) == schedule
        assert parse_schedule(schedule.model_dump(mode="json")) == schedule
        assert parse_schedule(schedule.model_dump()) == schedule

    def test_round_tripped_schedule_computes_same_ticks(self) -> None:
        """A parsed schedule fires at the same instants."""
        schedule = weekly(on="tue", at="03:15", tz="Europe/Berlin")
        back = parse_schedule(schedule.model_dump_json())
        assert fires(back, utc(2026, 1, 1), 5) == fires(schedule, utc(2026, 1, 1), 5)

    @pytest.mark.parametrize(
        ("data", "field"),
        [
            ("not json", "schedule"),
            ('{"kind": "hourly"}', "kind"),
            ('{"expr": "* * * * *"}', "kind"),
            ('{"kind": "cron", "expr": "0 0 30 2 *"}', "expr"),
            ('{"kind": "cron"}', "expr"),
            ('{"kind": "every", "interval": "PT0S"}', "interval"),
            ('{"kind": "weekly", "on": [9]}', "on"),
            ('{"kind": "daily", "tz": "Mars/Base"}', "tz"),
            ('{"kind": "cron", "expr": "* * * * *", "extra": 1}', "extra"),
            ({"kind": "monthly", "on": [0]}, "on"),
            (42, "schedule"),
        ],
    )
    def test_bad_data_raises_invalid_schedule_error(self, data: Any, field: str) -> None:
        """Bad input to parse_schedule raises InvalidScheduleError, never pydantic's error."""
        with pytest.raises(InvalidScheduleError) as exc:
            parse_schedule(data)
        assert exc.value.field == field

    def test_models_are_frozen_and_hashable(self) -> None:
        """Schedules are immutable values: equal schedules hash equal."""
        a, b = cron("0 9 * * *", tz="UTC"), cron("0 9 * * *", tz="UTC")
        a.next_fire(utc(2026, 1, 1))
        assert a == b and hash(a) == hash(b)
        with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
            a.expr = "* * * * *"  # type: ignore[misc]


class TestInterface:
    def test_with_zone_fills_only_a_missing_zone(self) -> None:
        """with_zone sets tz when it is None, keeps an explicit zone, ignores zoneless kinds."""
        unset = daily(at="09:00")
        zoned = unset.with_zone(BERLIN)
        assert isinstance(zoned, DailySchedule)
        assert zoned.tz == "Europe/Berlin" and zoned.zone == BERLIN
        assert zoned.next_fire(utc(2026, 1, 1)) == utc(2026, 1, 1, 8)
        assert unset.next_fire(utc(2026, 1, 1)) == utc(2026, 1, 1, 9)
        explicit = cron("0 9 * * *", tz="Asia/Tokyo")
        assert explicit.with_zone(BERLIN) is explicit
        interval = every(5)
        assert interval.with_zone(BERLIN) is interval

    def test_model_copy_never_keeps_stale_derived_state(self) -> None:
        """Zones and compiled matchers are derived from fields, so a copy recomputes them."""
        unset = daily(at="09:00")
        assert unset.next_fire(utc(2026, 1, 1)) == utc(2026, 1, 1, 9)
        copied = unset.model_copy(update={"tz": "Asia/Tokyo"})
        assert copied.next_fire(utc(2026, 1, 1)) == utc(2026, 1, 2, 0)
        assert copied.zone == ZoneInfo("Asia/Tokyo")

    def test_purity_and_zone_properties(self) -> None:
        """is_pure is False only for random_every; zone is None for zoneless kinds."""
        assert [s.is_pure for s in ALL_KINDS].count(False) == 1
        assert every(1).zone is None and once("now").zone is None

    def test_fixed_time_classification(self) -> None:
        """A cron is fixed-time when neither minute nor hour starts with '*'."""
        fixed = ["30 2 * * *", "0 2-4 * * *", "@daily", "0,30 1,2 * * *", "*/10 0 9 * * *"]
        wild = ["0 * * * *", "*/15 2 * * *", "@hourly", "* 2 * * *"]
        assert all(cron(e, seconds=e.count(" ") == 5).is_fixed_time for e in fixed)
        assert not any(cron(e).is_fixed_time for e in wild)

    def test_naive_after_is_rejected(self) -> None:
        """next_fire needs an aware datetime."""
        with pytest.raises(ValueError, match="aware"):
            cron("* * * * *").next_fire(datetime(2026, 1, 1))

    def test_results_are_aware_utc(self) -> None:
        """Every returned datetime is aware UTC, whatever the input zone."""
        after = datetime(2026, 7, 1, 12, tzinfo=BERLIN)
        for schedule in ALL_KINDS:
            for result in (schedule.next_fire(after), schedule.last_fire(after)):
                if result is not None:
                    assert result.utcoffset() == timedelta(0)


class TestEvery:
    def test_ticks_are_anchored_at_the_epoch(self) -> None:
        """every(minutes=5) fires at :00, :05, … UTC whatever `after` is."""
        schedule = every(minutes=5)
        assert fires(schedule, utc(2026, 1, 1, 12, 3, 17), 3) == [
            utc(2026, 1, 1, 12, 5),
            utc(2026, 1, 1, 12, 10),
            utc(2026, 1, 1, 12, 15),
        ]

    def test_every_second_fires_on_whole_seconds(self) -> None:
        """every(seconds=1) fires on whole seconds."""
        after = datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
        assert every(seconds=1).next_fire(after) == utc(2026, 1, 1, 0, 0, 1)

    def test_start_at_anchors_ticks(self) -> None:
        """With start_at, ticks are start_at + k·interval; a future start_at is the first tick."""
        schedule = every(minutes=5)
        start = utc(2026, 1, 1, 12, 1, 30)
        assert schedule.next_fire(utc(2026, 1, 1, 12, 3), start_at=start) == utc(
            2026, 1, 1, 12, 6, 30
        )
        assert schedule.next_fire(start - timedelta(microseconds=1), start_at=start) == start
        assert schedule.next_fire(start, start_at=start) == start + timedelta(minutes=5)

    def test_start_at_in_another_zone_counts_elapsed_time(self) -> None:
        """every ignores DST: a zoned start_at anchors by its instant."""
        start = datetime(2026, 3, 28, 12, tzinfo=BERLIN)  # 11:00Z, the day before spring
        schedule = every(hours=24)
        assert schedule.next_fire(utc(2026, 3, 29, 0), start_at=start) == utc(2026, 3, 29, 11)

    def test_last_fire(self) -> None:
        """last_fire is the tick at or before the instant, in O(1) over any gap."""
        schedule = every(minutes=5)
        assert schedule.last_fire(utc(2026, 1, 1, 12, 5)) == utc(2026, 1, 1, 12, 5)
        assert schedule.last_fire(utc(2026, 1, 1, 12, 9, 59)) == utc(2026, 1, 1, 12, 5)
        start = utc(2026, 1, 1, 0, 0, 7)
        assert schedule.last_fire(utc(2036, 1, 1), start_at=start) == utc(2035, 12, 31, 23, 55, 7)

    @settings(max_examples=200, deadline=None)
    @given(
        interval=st.integers(min_value=1, max_value=10**11),
        anchor_us=st.one_of(st.none(), st.integers(min_value=0, max_value=10**15)),
        after_us=st.integers(min_value=10**15, max_value=3 * 10**15),
    )
    def test_the_timers_step_agrees_with_next_fire(
        self, interval: int, anchor_us: int | None, after_us: int
    ) -> None:
        """From a tick, the timer's step (one interval on, no division) is next_fire's."""
        schedule = EverySchedule(interval=timedelta(microseconds=interval))
        start = None if anchor_us is None else EPOCH_UTC + timedelta(microseconds=anchor_us)
        tick = schedule.next_fire(EPOCH_UTC + timedelta(microseconds=after_us), start_at=start)
        assert tick is not None
        assert schedule._following(tick, start, None) == schedule.next_fire(tick, start_at=start)

    @pytest.mark.parametrize(
        "schedule",
        [
            every(minutes=5),
            cron("*/7 * * * *", tz="Europe/Berlin"),
            daily(at="09:30", tz="Europe/Berlin"),
            monthly(on=31, tz="UTC"),
        ],
        ids=["every", "cron", "daily", "monthly"],
    )
    @pytest.mark.parametrize("zone", [UTC, BERLIN], ids=["utc", "berlin"])
    def test_the_first_tick_from_start_at_agrees_with_next_fire(
        self, schedule: Schedule, zone: Any
    ) -> None:
        """add_job's first tick for a future start_at (_first_from) is next_fire's from just
        before start_at, in UTC, for start_ats on and off every schedule's grid."""
        for start in (datetime(2026, 3, 29, 1, 59, 59, 1, tzinfo=zone), utc(2026, 1, 1, 9, 30)):
            expected = schedule.next_fire(start - timedelta(microseconds=1), start_at=start)
            got = schedule._first_from(start, None)
            assert got == expected
            assert got is not None and got.utcoffset() == timedelta(0)


class TestDaily:
    def test_fires_at_each_time_of_day(self) -> None:
        """Several at times fire in order each day."""
        schedule = daily(at=["17:30", "09:00"])
        assert fires(schedule, utc(2026, 1, 1, 10), 3) == [
            utc(2026, 1, 1, 17, 30),
            utc(2026, 1, 2, 9),
            utc(2026, 1, 2, 17, 30),
        ]

    def test_every_n_days_counts_from_1970(self) -> None:
        """daily(every=3) fires on days whose distance from 1970-01-01 divides by 3."""
        ticks = fires(daily(3, at="06:00"), utc(2026, 1, 1), 4)
        for tick in ticks:
            assert (tick.date() - date(1970, 1, 1)).days % 3 == 0
        assert [b - a for a, b in itertools.pairwise(ticks)] == [timedelta(days=3)] * 3

    def test_every_n_days_counts_from_start_at(self) -> None:
        """With start_at, the period containing start_at's local date is the first."""
        start = datetime(2026, 1, 10, 23, 30, tzinfo=BERLIN)  # 22:30Z, Berlin date Jan 10
        schedule = daily(2, at="23:00", tz="Europe/Berlin")
        assert schedule.next_fire(start, start_at=start) == datetime(2026, 1, 12, 23, tzinfo=BERLIN)
        assert schedule.last_fire(start, start_at=start) == datetime(2026, 1, 10, 23, tzinfo=BERLIN)

    def test_zone_applies(self) -> None:
        """Times are wall times in the schedule's zone."""
        schedule = daily(at="09:00", tz="Asia/Tokyo")
        assert schedule.next_fire(utc(2026, 1, 1)) == utc(2026, 1, 2, 0)


class TestWeekly:
    def test_fires_on_named_days(self) -> None:
        """weekly(on=[...]) fires on those weekdays."""
        ticks = fires(weekly(on=["Monday", "fri"], at="08:00"), utc(2026, 1, 1), 4)
        assert [t.weekday() for t in ticks] == [4, 0, 4, 0]
        assert ticks[0] == utc(2026, 1, 2, 8)

    def test_every_two_weeks_counts_monday_first_weeks_from_1970(self) -> None:
        """every=2 fires in the weeks whose Monday is an even number of weeks after 1969-12-29."""
        ticks = fires(weekly(2, on=["mon", "sun"], at="12:00"), utc(2026, 1, 1), 6)
        first_monday = date(1969, 12, 29)
        for tick in ticks:
            monday = tick.date() - timedelta(days=tick.weekday())
            assert (monday - first_monday).days // 7 % 2 == 0
        assert ticks[1] - ticks[0] in (timedelta(days=6), timedelta(days=8))

    def test_every_two_weeks_counts_from_start_at_week(self) -> None:
        """With start_at on a Wednesday, its week (from Monday) is the first period."""
        start = utc(2026, 1, 7, 12)  # Wednesday
        schedule = weekly(2, on="mon", at="09:00", tz="UTC")
        assert schedule.next_fire(start, start_at=start) == utc(2026, 1, 19, 9)
        assert schedule.last_fire(start, start_at=start) == utc(2026, 1, 5, 9)
        other = utc(2026, 1, 14, 12)
        assert schedule.next_fire(start, start_at=other) == utc(2026, 1, 12, 9)


class TestMonthly:
    def test_last_day_in_leap_and_common_years(self) -> None:
        """on=-1 is Feb 29 in 2028 and Feb 28 in 2027."""
        schedule = monthly(on=[-1], at="12:00")
        assert schedule.next_fire(utc(2028, 2, 1)) == utc(2028, 2, 29, 12)
        assert schedule.next_fire(utc(2027, 2, 1)) == utc(2027, 2, 28, 12)
        assert schedule.last_fire(utc(2028, 3, 15)) == utc(2028, 2, 29, 12)

    def test_day_31_is_skipped_in_short_months(self) -> None:
        """A day a month lacks is skipped for that month."""
        ticks = fires(monthly(on=31), utc(2026, 1, 1), 4)
        assert [t.month for t in ticks] == [1, 3, 5, 7]
        assert monthly(on=30).next_fire(utc(2026, 2, 1)) == utc(2026, 3, 30)

    def test_negative_days_count_from_the_end(self) -> None:
        """-2 is the day before the last."""
        assert monthly(on=-2).next_fire(utc(2026, 4, 1)) == utc(2026, 4, 29)

    def test_every_n_months_counts_from_1970(self) -> None:
        """every=3 fires in months whose distance from 1970-01 divides by 3."""
        ticks = fires(monthly(3, on=1), utc(2026, 2, 1), 3)
        assert ticks == [utc(2026, 4, 1), utc(2026, 7, 1), utc(2026, 10, 1)]

    def test_every_n_months_counts_from_start_at(self) -> None:
        """With start_at, the month containing start_at is the first period."""
        start = utc(2026, 2, 20)
        schedule = monthly(3, on=[1, 15])
        assert fires(schedule, start, 3, start_at=start) == [
            utc(2026, 5, 1),
            utc(2026, 5, 15),
            utc(2026, 8, 1),
        ]
        assert schedule.last_fire(start, start_at=start) == utc(2026, 2, 15)

    def test_a_schedule_that_runs_out_returns_none(self) -> None:
        """Every 12 months anchored in February on day 30 never fires: None, not a hang."""
        schedule = monthly(12, on=30)
        assert schedule.next_fire(utc(2026, 1, 1), start_at=utc(2026, 2, 1)) is None


class TestCron:
    def test_six_fields_put_seconds_first(self) -> None:
        """With seconds=True the first field is the second."""
        schedule = cron("*/20 30 9 * * *", seconds=True)
        assert fires(schedule, utc(2026, 1, 1), 4) == [
            utc(2026, 1, 1, 9, 30, 0),
            utc(2026, 1, 1, 9, 30, 20),
            utc(2026, 1, 1, 9, 30, 40),
            utc(2026, 1, 2, 9, 30, 0),
        ]

    @pytest.mark.parametrize(
        ("expr", "expected"),
        [
            ("@yearly", utc(2027, 1, 1)),
            ("@annually", utc(2027, 1, 1)),
            ("@monthly", utc(2026, 2, 1)),
            ("@weekly", utc(2026, 1, 4)),
            ("@daily", utc(2026, 1, 2)),
            ("@midnight", utc(2026, 1, 2)),
            ("@hourly", utc(2026, 1, 1, 13)),
        ],
    )
    def test_macros(self, expr: str, expected: datetime) -> None:
        """Macros expand to their 5-field meaning."""
        assert cron(expr).next_fire(utc(2026, 1, 1, 12, 30)) == expected
        assert cron(expr, seconds=True).next_fire(utc(2026, 1, 1, 12, 30)) == expected

    def test_day_of_month_or_day_of_week(self) -> None:
        """Both restricted: a day matches either (Vixie)."""
        ticks = fires(cron("0 0 13 * fri"), utc(2026, 2, 1), 4)
        assert all(t.day == 13 or t.weekday() == 4 for t in ticks)
        assert ticks[0] == utc(2026, 2, 6)

    def test_last_day_and_nth_weekday(self) -> None:
        """L is the last day; 5#2 the second Friday; L5 the last Friday."""
        assert cron("0 0 L * *").next_fire(utc(2028, 2, 1)) == utc(2028, 2, 29)
        assert cron("0 0 * * 5#2").next_fire(utc(2026, 1, 1)) == utc(2026, 1, 9)
        assert cron("0 0 * * L5").next_fire(utc(2026, 1, 1)) == utc(2026, 1, 30)

    def test_names(self) -> None:
        """Month and weekday names are accepted."""
        assert cron("0 12 * jun-aug sat,SUN").next_fire(utc(2026, 1, 1)) == utc(2026, 6, 6, 12)

    def test_rare_expression_is_found(self) -> None:
        """Feb 29 is found years ahead."""
        assert cron("0 0 29 2 *").next_fire(utc(2028, 3, 1)) == utc(2032, 2, 29)

    @pytest.mark.parametrize(
        ("expr", "tz"),
        [
            ("*/7 * * * *", None),
            ("0 9 * * MON-FRI", "Europe/Berlin"),
            ("30 2 * * *", "America/New_York"),
            ("0 * * * *", "Europe/Berlin"),
            ("*/15 1-3 * * *", "America/New_York"),
            ("0 0 L * *", "Australia/Lord_Howe"),
        ],
    )
    def test_last_fire_of_next_fire_is_itself(self, expr: str, tz: str | None) -> None:
        """last_fire(next_fire(t)) == next_fire(t), and next_fire(last_fire(t)-) agrees."""
        schedule = cron(expr, tz=tz)
        after = utc(2026, 1, 1)
        for _ in range(400):
            nxt = schedule.next_fire(after)
            assert nxt is not None
            assert schedule.last_fire(nxt) == nxt
            before = schedule.last_fire(nxt - timedelta(microseconds=1))
            assert before is not None and before <= after
            assert schedule.next_fire(before) == nxt
            after = nxt + timedelta(hours=7, minutes=13)
            last = schedule.last_fire(after)
            assert last is not None and nxt <= last <= after
            after = last

    def test_last_fire_over_a_ten_year_gap_is_fast(self) -> None:
        """last_fire jumps a long gap instead of walking it."""
        schedules = [
            cron("*/5 * * * *", tz="Europe/Berlin"),
            cron("0 3 * * *", tz="America/New_York"),
            daily(at="09:00", tz="Europe/Berlin"),
            every(seconds=1),
        ]
        began = clock.perf_counter()
        for schedule in schedules:
            last = schedule.last_fire(utc(2036, 1, 1, 0, 2))
            assert last is not None and utc(2035, 12, 30) < last <= utc(2036, 1, 1, 0, 2)
        assert clock.perf_counter() - began < 0.05


def test_public_models_subclass_schedule() -> None:
    """Every model class is a Schedule with a distinct kind."""
    classes: list[type[Schedule]] = [
        CronSchedule,
        EverySchedule,
        RandomEverySchedule,
        DailySchedule,
        WeeklySchedule,
        MonthlySchedule,
        OnceSchedule,
    ]
    assert all(issubclass(c, Schedule) for c in classes)
    assert len({c.model_fields["kind"].default for c in classes}) == len(classes)


def _brute_force_ticks(
    schedule: DailySchedule | WeeklySchedule | MonthlySchedule,
    around: datetime,
    start_at: datetime | None,
) -> list[datetime]:
    """Every tick within about 3 years of `around`, by checking each day (UTC)."""
    anchor = start_at.date() if start_at else date(1970, 1, 1)
    n = schedule.every
    out: list[datetime] = []
    day = around.date() - timedelta(days=1100)
    for _ in range(2200):
        day += timedelta(days=1)
        if isinstance(schedule, DailySchedule):
            ok = (day - anchor).days % n == 0
        elif isinstance(schedule, WeeklySchedule):
            weeks = (
                (day - timedelta(days=day.weekday())) - (anchor - timedelta(days=anchor.weekday()))
            ).days // 7
            ok = weeks % n == 0 and day.weekday() in schedule.on
        else:
            months = (day.year * 12 + day.month) - (anchor.year * 12 + anchor.month)
            last = calendar.monthrange(day.year, day.month)[1]
            days = {d if d > 0 else last + 1 + d for d in schedule.on}
            ok = months % n == 0 and day.day in days
        if ok:
            out.extend(datetime.combine(day, t, tzinfo=UTC) for t in schedule.at)
    return out


PERIOD_TIMES = st.lists(
    st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 59]), st.sampled_from([0, 30])),
    min_size=1,
    max_size=3,
)
PERIOD_SCHEDULES = st.one_of(
    st.builds(lambda n, at: daily(n, at=at, tz="UTC"), st.integers(1, 9), PERIOD_TIMES),
    st.builds(
        lambda n, on, at: weekly(n, on=on, at=at, tz="UTC"),
        st.integers(1, 5),
        st.lists(st.integers(0, 6), min_size=1, max_size=4),
        PERIOD_TIMES,
    ),
    st.builds(
        lambda n, on, at: monthly(n, on=on, at=at, tz="UTC"),
        st.integers(1, 7),
        st.lists(st.integers(1, 31) | st.integers(-31, -1), min_size=1, max_size=4),
        PERIOD_TIMES,
    ),
)
PERIOD_INSTANTS = st.integers(
    int(utc(2000, 1, 1).timestamp()), int(utc(2040, 1, 1).timestamp())
).map(lambda s: datetime.fromtimestamp(s, UTC))


class TestPeriodProperties:
    @settings(max_examples=150, deadline=None)
    @given(
        schedule=PERIOD_SCHEDULES,
        after=PERIOD_INSTANTS,
        start_at=st.none() | PERIOD_INSTANTS,
    )
    def test_next_and_last_fire_match_a_day_by_day_search(
        self,
        schedule: DailySchedule | WeeklySchedule | MonthlySchedule,
        after: datetime,
        start_at: datetime | None,
    ) -> None:
        """daily/weekly/monthly with every=N agree with checking every day of ±3 years."""
        ticks = _brute_force_ticks(schedule, after, start_at)
        later = [t for t in ticks if t > after]
        earlier = [t for t in ticks if t <= after]
        nxt = schedule.next_fire(after, start_at=start_at)
        last = schedule.last_fire(after, start_at=start_at)
        if later:
            assert nxt == later[0]
        if earlier:
            assert last == earlier[-1]


class TestInterning:
    """Equal constructor arguments share one immutable schedule, never bypassing checks."""

    def test_equal_arguments_share_one_schedule(self) -> None:
        """every(seconds=60) twice is one object; a different interval is another."""
        assert every(seconds=60) is every(seconds=60)
        assert every(seconds=60) is not every(seconds=61)
        assert every(seconds=60) == every(minutes=1)

    def test_a_bool_never_passes_as_the_cached_number(self) -> None:
        """After every(seconds=1) is cached, every(seconds=True) is still rejected."""
        every(seconds=1)
        with pytest.raises(InvalidScheduleError, match="seconds=True"):
            every(seconds=True)
        cron("* * * * * *", seconds=True)
        with pytest.raises(InvalidScheduleError, match="seconds=1"):
            cron("* * * * * *", seconds=1)
