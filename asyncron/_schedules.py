"""Schedule models and next-fire computation.

Schedules are frozen pydantic models whose ticks are a pure function of the schedule,
the job's ``start_at`` and the zone. Wall-clock kinds (cron, daily, weekly, monthly)
share one engine: a *matcher* finds the next or previous matching local wall time, and
a driver maps wall times to UTC instants by the Vixie cron DST rules (design §2):

* fixed-time schedules map each wall time to one instant (first occurrence of a
  repeated time, the transition instant for a time inside a gap);
* wildcard crons fire at every real instant whose wall time matches, walking the
  zone's constant-offset segments.

croniter only parses and validates cron expressions; matching is done here on sorted
tuples with ``bisect``, which is several times faster than croniter and cronsim.
"""

from __future__ import annotations

import calendar
import random
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from typing import Annotated, Any, Literal, TypeAlias
from zoneinfo import ZoneInfo

from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from ._time import EPOCH, as_duration, localize, resolve_zone
from .errors import ConfigurationError, InvalidScheduleError

__all__ = (
    "AnySchedule",
    "CronSchedule",
    "DailySchedule",
    "EverySchedule",
    "MonthlySchedule",
    "OnceSchedule",
    "RandomEverySchedule",
    "Schedule",
    "WeeklySchedule",
    "cron",
    "daily",
    "every",
    "monthly",
    "once",
    "parse_schedule",
    "random_every",
    "weekly",
)

_SEC = timedelta(seconds=1)
_US = timedelta(microseconds=1)
# Offsets are assumed constant between samples this far apart: tzdata has no two
# transitions closer than this (Morocco's Ramadan suspension, the shortest, is weeks).
_SAMPLE = timedelta(days=6)
_MAX_YEAR = 9999
# How far ahead or back a wall-time search goes before giving up (rare expressions,
# such as the fifth Monday of February, recur within 40 years).
_SEARCH_YEARS = 100
_UTC_KEYS = frozenset({"UTC", "Etc/UTC", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu"})
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

Tick: TypeAlias = tuple[int, int, int, int, int, int]


# --- validation helpers ------------------------------------------------------------


def _invalid(field: str, value: Any, valid: str) -> InvalidScheduleError:
    return InvalidScheduleError(field, value, valid)


def _rewrap(exc: ConfigurationError) -> InvalidScheduleError:
    return InvalidScheduleError(exc.field, exc.value, exc.valid)


def _zone_name(value: Any, field: str = "tz") -> str | None:
    """Validate a zone and return its IANA name (``None`` passes through)."""
    if value is None:
        return None
    try:
        zone = resolve_zone(value, field)
    except ConfigurationError as exc:
        raise _rewrap(exc) from exc
    if not zone.key:
        raise _invalid(field, value, "a ZoneInfo with an IANA key (not ZoneInfo.from_file)")
    return zone.key


def _positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid(field, value, "an integer >= 1")
    return value


_AT_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def _parse_time(value: Any) -> time:
    if isinstance(value, str):
        match = _AT_RE.match(value.strip())
        if match is None:
            raise _invalid("at", value, "'HH:MM' or 'HH:MM:SS', a naive time, or a sequence")
        hour, minute, second = (int(g) if g else 0 for g in match.groups())
        if hour > 23 or minute > 59 or second > 59:
            raise _invalid("at", value, "hours 0-23, minutes 0-59, seconds 0-59")
        return time(hour, minute, second)
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise _invalid("at", value, "a naive time (the schedule's tz gives the zone)")
        if value.microsecond:
            raise _invalid("at", value, "a time with whole seconds")
        return value.replace(fold=0)
    raise _invalid("at", value, "'HH:MM' or 'HH:MM:SS', a naive time, or a sequence")


def _parse_times(value: Any) -> tuple[time, ...]:
    items = [value] if isinstance(value, (str, time)) else value
    if not isinstance(items, Iterable) or isinstance(items, (bytes, dict)):
        raise _invalid("at", value, "'HH:MM' or 'HH:MM:SS', a naive time, or a sequence")
    times = tuple(sorted({_parse_time(item) for item in items}))
    if not times:
        raise _invalid("at", value, "at least one time of day")
    return times


def _seconds_of_day(times: Sequence[time]) -> tuple[int, ...]:
    return tuple(t.hour * 3600 + t.minute * 60 + t.second for t in times)


# --- zone offsets and transitions --------------------------------------------------


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    off = instant.astimezone(zone).utcoffset()
    assert off is not None
    return off


def _bisect_change(zone: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """The first whole second in ``(lo, hi]`` whose offset differs from ``lo``'s (one
    transition is known to lie there; tzdata transitions fall on whole seconds)."""
    base = _offset(zone, lo)
    lo_s = int(lo.timestamp() // 1)
    hi_s = -int(-hi.timestamp() // 1)
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == base:
            lo_s = mid
        else:
            hi_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


def _segment_end(zone: ZoneInfo, lo: datetime, hi: datetime, off: timedelta) -> datetime | None:
    """The first instant in ``(lo, hi]`` whose offset is not ``off`` (``lo``'s), or None."""
    start = lo
    while start < hi:
        stop = min(start + _SAMPLE, hi)
        if _offset(zone, stop) != off:
            return _bisect_change(zone, start, stop)
        start = stop
    return None


def _segment_start(zone: ZoneInfo, lo: datetime, hi: datetime, off: timedelta) -> datetime | None:
    """The start of ``hi``'s constant-offset segment (offset ``off``) if it lies in
    ``(lo, hi]``, else None."""
    stop = hi
    while stop > lo:
        start = max(stop - _SAMPLE, lo)
        if _offset(zone, start) != off:
            return _bisect_change(zone, start, stop)
        stop = start
    return None


# --- wall-time matchers ------------------------------------------------------------


class _Matcher:
    """Finds matching local wall times; fields may overflow by one (second 60, hour 24,
    day 32) and the search carries them."""

    fixed: bool = True

    def first_ge(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> Tick | None:
        raise NotImplementedError

    def last_le(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> Tick | None:
        raise NotImplementedError


def _split(sec: int) -> tuple[int, int, int]:
    h, rest = divmod(sec, 3600)
    return (h, *divmod(rest, 60))


class _CronMatcher(_Matcher):
    """A compiled cron expression: sorted value tuples searched with ``bisect``."""

    def __init__(
        self,
        seconds: tuple[int, ...],
        minutes: tuple[int, ...],
        hours: tuple[int, ...],
        months: tuple[int, ...],
        dom: frozenset[int],
        last_dom: bool,
        dow: frozenset[int],
        nth: dict[int, frozenset[int]],
        dom_restricted: bool,
        dow_restricted: bool,
        fixed: bool,
    ) -> None:
        self.seconds, self.minutes, self.hours, self.months = seconds, minutes, hours, months
        self.dom, self.last_dom, self.dow, self.nth = dom, last_dom, dow, nth
        self.dom_restricted, self.dow_restricted = dom_restricted, dow_restricted
        self.fixed = fixed
        self._days_cache: dict[int, tuple[int, ...]] = {}

    def days(self, y: int, mo: int) -> tuple[int, ...]:
        """The matching days of one month, cached."""
        key = y * 12 + mo
        found = self._days_cache.get(key)
        if found is not None:
            return found
        first_weekday, ndays = calendar.monthrange(y, mo)
        on_dom: set[int] = set()
        if self.dom_restricted:
            on_dom = {d for d in self.dom if d <= ndays}
            if self.last_dom:
                on_dom.add(ndays)
        on_dow: set[int] = set()
        if self.dow_restricted:
            for d in range(1, ndays + 1):
                cron_dow = (first_weekday + d) % 7  # (weekday + 1) % 7: Sunday is 0
                nths = self.nth.get(cron_dow)
                if nths is None:
                    if cron_dow in self.dow and not self.nth:
                        on_dow.add(d)
                    continue
                index = (d - 1) // 7 + 1  # the nth such weekday of the month
                is_last = d + 7 > ndays
                if index in nths or (is_last and 0 in nths):
                    on_dow.add(d)
        if self.dom_restricted and self.dow_restricted:
            result = tuple(sorted(on_dom | on_dow))
        elif self.dom_restricted:
            result = tuple(sorted(on_dom))
        elif self.dow_restricted:
            result = tuple(sorted(on_dow))
        else:
            result = tuple(range(1, ndays + 1))
        if len(self._days_cache) > 512:
            self._days_cache.clear()
        self._days_cache[key] = result
        return result

    def first_ge(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> Tick | None:
        # Nested loops, one per field: an exhausted field carries into the next larger
        # one without re-searching the fields above it.
        months, hours, minutes, seconds = self.months, self.hours, self.minutes, self.seconds
        limit = min(y + _SEARCH_YEARS, _MAX_YEAR)
        while y <= limit:
            i = bisect_left(months, mo)
            if i == len(months):
                y, mo, d, h, mi, s = y + 1, months[0], 1, 0, 0, 0
                continue
            if months[i] != mo:
                mo, d, h, mi, s = months[i], 1, 0, 0, 0
            days = self.days(y, mo)
            while (j := bisect_left(days, d)) < len(days):
                if days[j] != d:
                    d, h, mi, s = days[j], 0, 0, 0
                while (k := bisect_left(hours, h)) < len(hours):
                    if hours[k] != h:
                        h, mi, s = hours[k], 0, 0
                    while (m := bisect_left(minutes, mi)) < len(minutes):
                        if minutes[m] != mi:
                            mi, s = minutes[m], 0
                        q = bisect_left(seconds, s)
                        if q < len(seconds):
                            return y, mo, d, h, mi, seconds[q]
                        mi, s = mi + 1, 0
                    h, mi, s = h + 1, 0, 0
                d, h, mi, s = d + 1, 0, 0, 0
            mo, d, h, mi, s = mo + 1, 1, 0, 0, 0
        return None

    def last_le(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> Tick | None:
        months, hours, minutes, seconds = self.months, self.hours, self.minutes, self.seconds
        limit = max(y - _SEARCH_YEARS, 1)
        while y >= limit:
            i = bisect_right(months, mo) - 1
            if i < 0:
                y, mo, d, h, mi, s = y - 1, months[-1], 31, 23, 59, 59
                continue
            if months[i] != mo:
                mo, d, h, mi, s = months[i], 31, 23, 59, 59
            days = self.days(y, mo)
            while (j := bisect_right(days, d) - 1) >= 0:
                if days[j] != d:
                    d, h, mi, s = days[j], 23, 59, 59
                while (k := bisect_right(hours, h) - 1) >= 0:
                    if hours[k] != h:
                        h, mi, s = hours[k], 59, 59
                    while (m := bisect_right(minutes, mi) - 1) >= 0:
                        if minutes[m] != mi:
                            mi, s = minutes[m], 59
                        q = bisect_right(seconds, s) - 1
                        if q >= 0:
                            return y, mo, d, h, mi, seconds[q]
                        mi, s = mi - 1, 59
                    h, mi, s = h - 1, 59, 59
                d, h, mi, s = d - 1, 23, 59, 59
            mo, d, h, mi, s = mo - 1, 31, 23, 59, 59
        return None


class _PeriodMatcher(_Matcher):
    """Daily/weekly/monthly: every ``every``-th period counted from an anchor date, on
    some days of the period, at some times of day."""

    def __init__(self, times: tuple[int, ...]) -> None:
        self.times = times

    def _tick(self, o: int, sec: int) -> Tick:
        day = date.fromordinal(o)
        return (day.year, day.month, day.day, *_split(sec))

    def day_ok(self, o: int) -> bool:
        raise NotImplementedError

    def next_day(self, o: int) -> int:
        """The first valid day ordinal after ``o``."""
        raise NotImplementedError

    def prev_day(self, o: int) -> int:
        """The last valid day ordinal before ``o``."""
        raise NotImplementedError

    def first_ge(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> Tick | None:
        try:
            o = date(y, mo, d).toordinal()
            sec = h * 3600 + mi * 60 + s
            if self.day_ok(o):
                i = bisect_left(self.times, sec)
                if i < len(self.times):
                    return self._tick(o, self.times[i])
            return self._tick(self.next_day(o), self.times[0])
        except (ValueError, OverflowError):
            return None

    def last_le(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> Tick | None:
        try:
            o = date(y, mo, d).toordinal()
            sec = h * 3600 + mi * 60 + s
            if self.day_ok(o):
                i = bisect_right(self.times, sec) - 1
                if i >= 0:
                    return self._tick(o, self.times[i])
            return self._tick(self.prev_day(o), self.times[-1])
        except (ValueError, OverflowError):
            return None


class _DailyMatcher(_PeriodMatcher):
    def __init__(self, times: tuple[int, ...], every: int, anchor: int) -> None:
        super().__init__(times)
        self.every, self.anchor = every, anchor

    def day_ok(self, o: int) -> bool:
        return (o - self.anchor) % self.every == 0

    def next_day(self, o: int) -> int:
        return o + self.every - (o - self.anchor) % self.every

    def prev_day(self, o: int) -> int:
        return o - ((o - self.anchor) % self.every or self.every)


class _WeeklyMatcher(_PeriodMatcher):
    def __init__(
        self, times: tuple[int, ...], every: int, anchor: int, weekdays: tuple[int, ...]
    ) -> None:
        super().__init__(times)
        self.every, self.weekdays = every, frozenset(weekdays)
        self.monday = anchor - (anchor - 1) % 7  # ordinal 1 (0001-01-01) is a Monday

    def day_ok(self, o: int) -> bool:
        return ((o - self.monday) // 7) % self.every == 0 and (o - 1) % 7 in self.weekdays

    def next_day(self, o: int) -> int:
        for _ in range(8 * self.every + 8):
            o += 1
            week = (o - self.monday) // 7
            if week % self.every:
                o = self.monday + (week + self.every - week % self.every) * 7 - 1
            elif (o - 1) % 7 in self.weekdays:
                return o
        raise ValueError("no weekday")  # unreachable: weekdays is never empty

    def prev_day(self, o: int) -> int:
        for _ in range(8 * self.every + 8):
            o -= 1
            week = (o - self.monday) // 7
            if week % self.every:
                o = self.monday + (week - week % self.every) * 7 + 7
            elif (o - 1) % 7 in self.weekdays:
                return o
        raise ValueError("no weekday")


class _MonthlyMatcher(_PeriodMatcher):
    def __init__(
        self, times: tuple[int, ...], every: int, anchor: int, days: tuple[int, ...]
    ) -> None:
        super().__init__(times)
        self.every, self.days = every, days
        anchor_day = date.fromordinal(anchor)
        self.anchor = anchor_day.year * 12 + anchor_day.month - 1

    def month_days(self, m: int) -> tuple[int, ...]:
        y, mo = divmod(m, 12)
        ndays = calendar.monthrange(y, mo + 1)[1]
        return tuple(
            sorted({d if d > 0 else ndays + 1 + d for d in self.days} & set(range(1, ndays + 1)))
        )

    def day_ok(self, o: int) -> bool:
        day = date.fromordinal(o)
        m = day.year * 12 + day.month - 1
        return (m - self.anchor) % self.every == 0 and day.day in self.month_days(m)

    def _search(self, o: int, step: int) -> int:
        day = date.fromordinal(o)
        m = day.year * 12 + day.month - 1
        for _ in range(_SEARCH_YEARS * 12 // self.every + 2):
            if (m - self.anchor) % self.every == 0:
                days = self.month_days(m)
                if m == day.year * 12 + day.month - 1:
                    days = tuple(d for d in days if (d > day.day if step > 0 else d < day.day))
                if days:
                    y, mo = divmod(m, 12)
                    return date(y, mo + 1, days[0] if step > 0 else days[-1]).toordinal()
                m += step * self.every
            else:
                r = (m - self.anchor) % self.every
                m += self.every - r if step > 0 else -r
        raise ValueError("no day")  # returns None to the caller: exhausted

    def next_day(self, o: int) -> int:
        return self._search(o, 1)

    def prev_day(self, o: int) -> int:
        return self._search(o, -1)


# --- drivers: wall times to UTC instants ---------------------------------------------


def _utc(tick: Tick) -> datetime:
    return datetime(*tick, tzinfo=UTC)


def _next_tick(matcher: _Matcher, zone: ZoneInfo | None, after: datetime) -> datetime | None:
    if zone is None:
        if after.tzinfo is not UTC:
            after = after.astimezone(UTC)
        t = matcher.first_ge(
            after.year, after.month, after.day, after.hour, after.minute, after.second + 1
        )
        return None if t is None else _utc(t)
    try:
        local = after.astimezone(zone)
        if matcher.fixed:
            return _next_fixed(matcher, zone, after, local)
        return _next_wild(matcher, zone, after.astimezone(UTC), local)
    except OverflowError:
        return None


def _next_fixed(
    matcher: _Matcher, zone: ZoneInfo, after: datetime, local: datetime
) -> datetime | None:
    # localize() is monotone in the wall time, so the first wall time after `after`'s
    # whose instant is after `after` gives the next tick; only the second copy of a
    # repeated hour makes the loop go round more than once.
    y, mo, d, h, mi, s = local.year, local.month, local.day, local.hour, local.minute, local.second
    s += 1
    while True:
        t = matcher.first_ge(y, mo, d, h, mi, s)
        if t is None:
            return None
        instant = localize(datetime(*t), zone)
        if instant > after:
            return instant
        y, mo, d, h, mi, s = t
        s += 1


def _next_wild(
    matcher: _Matcher, zone: ZoneInfo, after: datetime, local: datetime
) -> datetime | None:
    # Walk the zone's constant-offset segments: within one, wall time and instant move
    # together, so the first matching wall time is the first matching instant.
    off = local.utcoffset()
    assert off is not None
    start = (local.year, local.month, local.day, local.hour, local.minute, local.second + 1)
    while True:
        t = matcher.first_ge(*start)
        if t is None:
            return None
        instant = _utc(t) - off
        end = _segment_end(zone, after, instant, off)
        if end is None:
            return instant
        after = end
        local = end.astimezone(zone)
        off = local.utcoffset()
        assert off is not None
        start = (local.year, local.month, local.day, local.hour, local.minute, local.second)


def _last_tick(matcher: _Matcher, zone: ZoneInfo | None, at: datetime) -> datetime | None:
    if zone is None:
        at = at.astimezone(UTC)
        t = matcher.last_le(at.year, at.month, at.day, at.hour, at.minute, at.second)
        return None if t is None else _utc(t)
    try:
        if matcher.fixed:
            return _last_fixed(matcher, zone, at)
        return _last_wild(matcher, zone, at.astimezone(UTC))
    except OverflowError:
        return None


def _last_fixed(matcher: _Matcher, zone: ZoneInfo, at: datetime) -> datetime | None:
    local = at.astimezone(zone)
    # In the second copy of a repeated hour, later wall times of that hour still map
    # (by their first occurrence) to instants before `at`.
    first = local.replace(fold=0).utcoffset()
    current = local.utcoffset()
    assert first is not None and current is not None
    wall = local.replace(tzinfo=None, microsecond=0, fold=0) + max(first - current, timedelta(0))
    start: Tick = (wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second)
    while True:
        t = matcher.last_le(*start)
        if t is None:
            return None
        instant = localize(datetime(*t), zone)
        if instant <= at:
            return instant
        wall = datetime(*t) - _SEC
        start = (wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second)


def _last_wild(matcher: _Matcher, zone: ZoneInfo, at: datetime) -> datetime | None:
    while True:
        local = at.astimezone(zone)
        off = local.utcoffset()
        assert off is not None
        t = matcher.last_le(
            local.year, local.month, local.day, local.hour, local.minute, local.second
        )
        if t is None:
            return None
        instant = _utc(t) - off
        begin = _segment_start(zone, instant, at, off)
        if begin is None:
            return instant
        at = begin - _US


# --- models --------------------------------------------------------------------------


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be an aware datetime, got {value!r}")


def _anchor_instant(start_at: datetime | None) -> datetime:
    if start_at is None:
        return EPOCH
    if start_at.tzinfo is UTC:  # as job options hold it: already its own anchor
        return start_at
    _require_aware("start_at", start_at)
    return start_at.astimezone(UTC)


def _anchor_ordinal(start_at: datetime | None, zone: ZoneInfo | None) -> int:
    if start_at is None:
        return date(1970, 1, 1).toordinal()
    _require_aware("start_at", start_at)
    return start_at.astimezone(zone or UTC).date().toordinal()


class Schedule(BaseModel):
    """Base class of every schedule: an immutable, JSON-serialisable description of ticks.

    Subclasses carry a ``kind`` discriminator; :func:`parse_schedule` reads any of them
    back from ``model_dump_json()``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    """The discriminator: ``"cron"``, ``"every"``, ``"random_every"``, ``"daily"``,
    ``"weekly"``, ``"monthly"`` or ``"once"``."""

    def next_fire(
        self,
        after: datetime,
        *,
        start_at: datetime | None = None,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """The first tick strictly after ``after``, as an aware UTC datetime, or None when
        the schedule is exhausted.

        :param after: an aware datetime in any zone
        :param start_at: the job's ``start_at`` (aware), which anchors periods
        :param rng: the random source for ``random_every`` (ignored by pure kinds)
        """
        raise NotImplementedError

    def last_fire(
        self, at_or_before: datetime, *, start_at: datetime | None = None
    ) -> datetime | None:
        """The latest tick at or before ``at_or_before`` (aware UTC), or None; computed
        directly, never by walking ticks.

        :param at_or_before: an aware datetime in any zone
        :param start_at: the job's ``start_at`` (aware), which anchors periods
        """
        raise NotImplementedError

    def _following(
        self, tick: datetime, start_at: datetime | None, rng: random.Random | None
    ) -> datetime | None:
        """The tick after ``tick``, itself a tick of this schedule for this ``start_at``:
        the timer's step, which subclasses may take faster than :meth:`next_fire`."""
        return self.next_fire(tick, start_at=start_at, rng=rng)

    def _first_from(self, start_at: datetime, rng: random.Random | None) -> datetime | None:
        """The first tick at or after ``start_at`` (a job's first tick when it is added
        before its start_at), which subclasses may know without :meth:`next_fire`."""
        return self.next_fire(start_at - _US, start_at=start_at, rng=rng)

    def with_zone(self, tz: ZoneInfo) -> Schedule:
        """A copy with ``tz=None`` replaced by ``tz``; schedules without a zone return self.

        :param tz: the scheduler's zone
        """
        return self

    @property
    def is_pure(self) -> bool:
        """Whether ticks are a pure function of the schedule (False for random_every)."""
        return True

    @property
    def zone(self) -> ZoneInfo | None:
        """The schedule's zone as a ``ZoneInfo`` (None: not set, or not zone-bearing)."""
        return None


# Derived state (zones, compiled matchers) lives in caches keyed by field values, never
# on the instance, so ``model_copy(update=...)`` cannot leave a stale copy behind.
@lru_cache(maxsize=512)
def _zoneinfo(name: str) -> ZoneInfo:
    return ZoneInfo(name)


class _WallSchedule(Schedule):
    """A schedule of local wall times in ``tz`` (None = the scheduler's zone)."""

    tz: str | None = None

    @field_validator("tz", mode="before")
    @classmethod
    def _check_tz(cls, value: Any) -> str | None:
        return _zone_name(value)

    @property
    def zone(self) -> ZoneInfo | None:
        """The schedule's zone as a ``ZoneInfo`` (None: the scheduler's zone, unset)."""
        return None if self.tz is None else _zoneinfo(self.tz)

    def _matcher(self, start_at: datetime | None) -> _Matcher:
        raise NotImplementedError

    def next_fire(
        self,
        after: datetime,
        *,
        start_at: datetime | None = None,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """The first tick strictly after ``after`` (aware UTC), or None; see
        :meth:`Schedule.next_fire`."""
        if after.tzinfo is None:
            _require_aware("after", after)
        tz = self.tz
        zone = None if tz is None or tz in _UTC_KEYS else _zoneinfo(tz)
        return _next_tick(self._matcher(start_at), zone, after)

    def last_fire(
        self, at_or_before: datetime, *, start_at: datetime | None = None
    ) -> datetime | None:
        """The latest tick at or before ``at_or_before`` (aware UTC), or None; see
        :meth:`Schedule.last_fire`."""
        _require_aware("at_or_before", at_or_before)
        tz = self.tz
        zone = None if tz is None or tz in _UTC_KEYS else _zoneinfo(tz)
        return _last_tick(self._matcher(start_at), zone, at_or_before)

    def with_zone(self, tz: ZoneInfo) -> Schedule:
        """A copy in ``tz`` when ``tz`` is unset, else self.

        :param tz: the scheduler's zone
        """
        if self.tz is not None:
            return self
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values["tz"] = _zone_name(tz)
        return type(self).model_validate(values)


_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_CRON_VALID = (
    "a cron expression: 5 fields (minute hour day month weekday), or 6 with "
    "seconds=True (second first); names, ranges, steps, L, # and "
    "@yearly/@annually/@monthly/@weekly/@daily/@midnight/@hourly"
)
_HASH_RE = re.compile(r"(^|,)[hr](\(|/|,|$)")
_NEAREST_RE = re.compile(r"(^|,)(\d+w|w\d+)(,|$)")


def _expand_field(values: list[Any], low: int, high: int) -> tuple[int, ...]:
    # croniter keeps "*" inside a list ("*,*/2"): anywhere, it means the whole range.
    if "*" in values:
        return tuple(range(low, high + 1))
    return tuple(sorted({int(v) for v in values}))


@lru_cache(maxsize=1024)
def _compile_cron(expr: str, seconds: bool) -> _CronMatcher:
    """Validate ``expr`` and compile it to a matcher (croniter parses, we match)."""
    text = expr.strip()
    lowered = text.lower()
    if lowered == "@reboot":
        raise _invalid("expr", expr, "a recurring schedule; @reboot has no ticks")
    if lowered.startswith("@"):
        if lowered not in _MACROS:
            raise _invalid("expr", expr, _CRON_VALID)
        text = lowered = _MACROS[lowered]
    elif len(lowered.split()) != (6 if seconds else 5):
        count = len(lowered.split())
        want = (
            "exactly 6 fields (second first) with seconds=True"
            if seconds
            else ("exactly 5 fields (pass seconds=True for a leading seconds field)")
        )
        raise _invalid("expr", expr, f"{want}, got {count}")
    fields = lowered.split()
    with_seconds = len(fields) == 6
    for field in fields:
        if _HASH_RE.search(field) or ("?" in field and field != "?"):
            raise _invalid(
                "expr", expr, f"{_CRON_VALID} (H/R hashing and '?' beside other values are not)"
            )
    if _NEAREST_RE.search(fields[3 if with_seconds else 2]):
        raise _invalid("expr", expr, f"{_CRON_VALID} (W, nearest weekday, is not supported)")
    try:
        expanded, nth_raw = croniter.expand(text, second_at_beginning=with_seconds)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise _invalid("expr", expr, f"{_CRON_VALID} ({exc})") from exc
    minute_field, hour_field = (fields[1], fields[2]) if with_seconds else (fields[0], fields[1])
    dom_raw, dow_raw = expanded[2], expanded[4]
    dow = frozenset(int(v) % 7 for v in dow_raw if v != "*")
    nth: dict[int, frozenset[int]] = {}
    for weekday, which in nth_raw.items():
        keys = range(7) if str(weekday) == "*" else (int(weekday) % 7,)
        for key in keys:
            # 0 stands for L (the last such weekday of the month).
            nth[key] = nth.get(key, frozenset()) | {0 if n == "l" else int(n) for n in which}
    if nth and dow - set(nth):
        raise _invalid("expr", expr, "a weekday field that does not mix # or L with plain days")
    matcher = _CronMatcher(
        seconds=_expand_field(expanded[5], 0, 59) if with_seconds else (0,),
        minutes=_expand_field(expanded[0], 0, 59),
        hours=_expand_field(expanded[1], 0, 23),
        months=_expand_field(expanded[3], 1, 12),
        dom=frozenset(int(v) for v in dom_raw if v not in ("*", "l")),
        last_dom="l" in dom_raw,
        dow=dow,
        nth=nth,
        dom_restricted="*" not in dom_raw,
        dow_restricted="*" not in dow_raw,
        fixed=not minute_field.startswith("*") and not hour_field.startswith("*"),
    )
    # Rejects expressions that never fire (`0 0 30 2 *`): 28 years cover every
    # weekday/leap combination of the Gregorian calendar outside century years.
    if matcher.dom_restricted and not (matcher.dow_restricted and not nth):
        if not any(matcher.days(y, mo) for y in range(2000, 2029) for mo in matcher.months):
            raise _invalid("expr", expr, "an expression that fires (this day never occurs)")
        matcher._days_cache.clear()
    return matcher


class CronSchedule(_WallSchedule):
    """A cron expression in a zone (``cron(...)``)."""

    kind: Literal["cron"] = "cron"
    expr: str
    seconds: bool = False

    @field_validator("expr", mode="before")
    @classmethod
    def _check_expr(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _invalid("expr", value, _CRON_VALID)
        return value.strip()

    @field_validator("seconds", mode="before")
    @classmethod
    def _check_seconds(cls, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _invalid("seconds", value, "True or False")
        return value

    @model_validator(mode="after")
    def _compile(self) -> CronSchedule:
        try:
            _compile_cron(self.expr, self.seconds)
        except InvalidScheduleError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as exc:  # croniter's odd corners
            raise _invalid("expr", self.expr, f"{_CRON_VALID} ({exc})") from exc
        return self

    def _matcher(self, start_at: datetime | None) -> _Matcher:
        return _compile_cron(self.expr, self.seconds)

    @property
    def is_fixed_time(self) -> bool:
        """Whether minute and hour are both fixed (fires once per wall time across DST)."""
        return _compile_cron(self.expr, self.seconds).fixed


class _PeriodSchedule(_WallSchedule):
    every: int = 1
    at: tuple[time, ...] = (time(0),)

    @field_validator("every", mode="before")
    @classmethod
    def _check_every(cls, value: Any) -> int:
        return _positive_int("every", value)

    @field_validator("at", mode="before")
    @classmethod
    def _check_at(cls, value: Any) -> tuple[time, ...]:
        return _parse_times(value)

    def _matcher(self, start_at: datetime | None) -> _Matcher:
        anchor = _anchor_ordinal(start_at, self.zone)
        return _period_matcher(self.kind, self.every, self.at, self._days(), anchor)

    def _days(self) -> tuple[int, ...]:
        return ()


@lru_cache(maxsize=1024)
def _period_matcher(
    kind: str, every: int, at: tuple[time, ...], days: tuple[int, ...], anchor: int
) -> _Matcher:
    times = _seconds_of_day(at)
    if kind == "daily":
        return _DailyMatcher(times, every, anchor)
    if kind == "weekly":
        return _WeeklyMatcher(times, every, anchor, days)
    return _MonthlyMatcher(times, every, anchor, days)


class DailySchedule(_PeriodSchedule):
    """Every ``every`` days at one or more wall times (``daily(...)``)."""

    kind: Literal["daily"] = "daily"


def _parse_weekday(value: Any) -> int:
    if isinstance(value, str):
        name = value.strip().lower()
        for index, full in enumerate(_WEEKDAYS):
            if name in (full, full[:3]):
                return index
    elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 6:
        return value
    raise _invalid("on", value, "weekday names ('mon', 'Monday') or ints 0=Monday..6=Sunday")


def _as_items(field: str, value: Any, valid: str) -> list[Any]:
    if isinstance(value, (str, int)):
        return [value]
    if not isinstance(value, Iterable) or isinstance(value, (bytes, dict)):
        raise _invalid(field, value, valid)
    items = list(value)
    if not items:
        raise _invalid(field, value, f"at least one value: {valid}")
    return items


class WeeklySchedule(_PeriodSchedule):
    """Every ``every`` weeks (Monday first) on some weekdays at some times (``weekly``)."""

    kind: Literal["weekly"] = "weekly"
    on: tuple[int, ...]

    @field_validator("on", mode="before")
    @classmethod
    def _check_on(cls, value: Any) -> tuple[int, ...]:
        items = _as_items("on", value, "weekday names or ints 0=Monday..6=Sunday")
        return tuple(sorted({_parse_weekday(item) for item in items}))

    def _days(self) -> tuple[int, ...]:
        return self.on


def _parse_month_day(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= abs(value) <= 31:
        return value
    raise _invalid("on", value, "days 1..31 or -31..-1 (-1 = the last day of the month)")


class MonthlySchedule(_PeriodSchedule):
    """Every ``every`` months on some days (negative: from the end) at some times."""

    kind: Literal["monthly"] = "monthly"
    on: tuple[int, ...]

    @field_validator("on", mode="before")
    @classmethod
    def _check_on(cls, value: Any) -> tuple[int, ...]:
        items = _as_items("on", value, "days 1..31 or -31..-1")
        return tuple(sorted({_parse_month_day(item) for item in items}))

    def _days(self) -> tuple[int, ...]:
        return self.on


_TIMEDELTA = TypeAdapter(timedelta)


def _duration(field: str, value: Any) -> timedelta:
    try:
        delta = as_duration(field, value, allow_zero=False)
    except ConfigurationError as exc:
        raise _rewrap(exc) from exc
    assert delta is not None
    return delta


class EverySchedule(Schedule):
    """A fixed interval counted from ``start_at``, else from the Unix epoch (``every``)."""

    kind: Literal["every"] = "every"
    interval: timedelta

    @field_validator("interval", mode="before")
    @classmethod
    def _check_interval(cls, value: Any) -> timedelta:
        if isinstance(value, str):  # JSON: an ISO 8601 duration, parsed by pydantic
            try:
                value = _TIMEDELTA.validate_python(value)
            except ValidationError as exc:
                raise _invalid("interval", value, "a timedelta > 0") from exc
        return _duration("interval", value)

    def next_fire(
        self,
        after: datetime,
        *,
        start_at: datetime | None = None,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """``anchor + k·interval`` strictly after ``after``; see :meth:`Schedule.next_fire`."""
        if after.tzinfo is None:
            _require_aware("after", after)
        anchor = _anchor_instant(start_at)
        interval = self.interval
        try:
            return anchor + interval * ((after - anchor) // interval + 1)
        except OverflowError:
            return None

    def _following(
        self, tick: datetime, start_at: datetime | None, rng: random.Random | None
    ) -> datetime | None:
        if type(self).next_fire is not EverySchedule.next_fire:  # a subclass's own rule
            return self.next_fire(tick, start_at=start_at, rng=rng)
        # ``tick`` is on the grid: the next is one interval on (no division).
        try:
            return tick + self.interval
        except OverflowError:
            return None

    def _first_from(self, start_at: datetime, rng: random.Random | None) -> datetime | None:
        if type(self).next_fire is not EverySchedule.next_fire:  # a subclass's own rule
            return self.next_fire(start_at - _US, start_at=start_at, rng=rng)
        return _anchor_instant(start_at)  # ticks count from it

    def last_fire(
        self, at_or_before: datetime, *, start_at: datetime | None = None
    ) -> datetime | None:
        """``anchor + k·interval`` at or before ``at_or_before``; see
        :meth:`Schedule.last_fire`."""
        _require_aware("at_or_before", at_or_before)
        anchor = _anchor_instant(start_at)
        interval = self.interval
        try:
            return anchor + interval * ((at_or_before - anchor) // interval)
        except OverflowError:
            return None


class RandomEverySchedule(Schedule):
    """A uniformly random delay in ``[low, high]`` before each run (``random_every``)."""

    kind: Literal["random_every"] = "random_every"
    low: timedelta
    high: timedelta

    @field_validator("low", "high", mode="before")
    @classmethod
    def _check_bound(cls, value: Any, info: Any) -> timedelta:
        if isinstance(value, str):
            try:
                value = _TIMEDELTA.validate_python(value)
            except ValidationError as exc:
                raise _invalid(info.field_name, value, "a timedelta > 0") from exc
        return _duration(info.field_name, value)

    @model_validator(mode="after")
    def _check_order(self) -> RandomEverySchedule:
        if self.low >= self.high:
            raise _invalid("high", self.high, f"greater than low={self.low!r}")
        return self

    def next_fire(
        self,
        after: datetime,
        *,
        start_at: datetime | None = None,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """``after`` plus a uniform draw in ``[low, high]``; see :meth:`Schedule.next_fire`."""
        _require_aware("after", after)
        draw = (rng or random.Random()).uniform(self.low.total_seconds(), self.high.total_seconds())
        return after.astimezone(UTC) + timedelta(seconds=draw)

    def last_fire(
        self, at_or_before: datetime, *, start_at: datetime | None = None
    ) -> datetime | None:
        """Always None: random ticks are not a function of time."""
        return None

    @property
    def is_pure(self) -> bool:
        """False: each tick is a fresh random draw."""
        return False


def _parse_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise _invalid("at", value, "a datetime, a sequence of datetimes, or 'now'") from exc
    if not isinstance(value, datetime):
        raise _invalid("at", value, "a datetime, a sequence of datetimes, or 'now'")
    return value if value.tzinfo is None else value.astimezone(UTC)


def _as_instants(at: tuple[datetime, ...]) -> tuple[datetime, ...]:
    # Aware times are instants already (at is all aware or all naive: see _check_at);
    # that test costs less than the cache's hashing of the tuple (a one-off's dispatch).
    return at if not at or at[0].tzinfo is not None else _naive_as_utc(at)


@lru_cache(maxsize=256)
def _naive_as_utc(at: tuple[datetime, ...]) -> tuple[datetime, ...]:
    # Unresolved naive times (with_zone not called) are read as UTC.
    return tuple(t.replace(tzinfo=UTC) for t in at)


class OnceSchedule(Schedule):
    """One or more fixed instants (``once(...)``); ``now=True`` for ``once("now")``.

    Naive datetimes are wall times in the job's zone, resolved by :meth:`with_zone`.
    """

    kind: Literal["once"] = "once"
    at: tuple[datetime, ...] = ()
    now: bool = False

    @field_validator("at", mode="before")
    @classmethod
    def _check_at(cls, value: Any) -> tuple[datetime, ...]:
        items = [value] if isinstance(value, (str, datetime)) else value
        if not isinstance(items, Iterable) or isinstance(items, (bytes, dict)):
            raise _invalid("at", value, "a datetime, a sequence of datetimes, or 'now'")
        parsed = {_parse_datetime(item) for item in items}
        naive = {p.tzinfo is None for p in parsed}
        if len(naive) > 1:
            raise _invalid("at", value, "datetimes that are all naive or all aware")
        return tuple(sorted(parsed))

    @field_validator("now", mode="before")
    @classmethod
    def _check_now(cls, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _invalid("now", value, "True or False")
        return value

    @model_validator(mode="after")
    def _check_some(self) -> OnceSchedule:
        if self.now == bool(self.at):
            raise _invalid("at", self.at, "at least one datetime, or 'now' alone")
        return self

    @property
    def _instants(self) -> tuple[datetime, ...]:
        return _as_instants(self.at)

    def next_fire(
        self,
        after: datetime,
        *,
        start_at: datetime | None = None,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """The first of ``at`` strictly after ``after``, or None (always None for "now")."""
        _require_aware("after", after)
        return self._following(after, start_at, rng)

    def _following(
        self, tick: datetime, start_at: datetime | None, rng: random.Random | None
    ) -> datetime | None:
        # The first instant after ``tick`` (next_fire's answer, without the aware check).
        instants = _as_instants(self.at)
        if not instants or tick >= instants[-1]:  # past the last (a one-off's only) instant
            return None
        return instants[bisect_right(instants, tick)]

    def last_fire(
        self, at_or_before: datetime, *, start_at: datetime | None = None
    ) -> datetime | None:
        """The last of ``at`` at or before ``at_or_before``, or None."""
        _require_aware("at_or_before", at_or_before)
        instants = self._instants
        i = bisect_right(instants, at_or_before)
        return instants[i - 1] if i else None

    def with_zone(self, tz: ZoneInfo) -> Schedule:
        """A copy whose naive datetimes are resolved in ``tz`` by the DST rules.

        :param tz: the job's zone
        """
        if not any(t.tzinfo is None for t in self.at):
            return self
        name = _zone_name(tz)
        if name is None:
            return self
        zone = _zoneinfo(name)
        resolved = [t if t.tzinfo else localize(t, zone) for t in self.at]
        return OnceSchedule.model_validate({"at": resolved, "now": self.now})


AnySchedule = Annotated[
    CronSchedule
    | EverySchedule
    | RandomEverySchedule
    | DailySchedule
    | WeeklySchedule
    | MonthlySchedule
    | OnceSchedule,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[Schedule] = TypeAdapter(AnySchedule)


def _from_validation_error(exc: ValidationError, data: Any = None) -> InvalidScheduleError:
    """The error to raise for a pydantic ``ValidationError``: our own validators' error
    (keeping its chain, e.g. to zoneinfo's) when there is one, else one built from it."""
    for detail in exc.errors():
        cause = detail.get("ctx", {}).get("error")
        if isinstance(cause, InvalidScheduleError):
            if cause.__cause__ is None:
                cause.__cause__ = exc
            return cause
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    kinds = "cron, every, random_every, daily, weekly, monthly, once"
    field = loc[-1] if loc else "kind"
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        error = _invalid("kind", first.get("input"), f"one of {kinds}")
    elif first["type"] == "json_invalid":
        error = _invalid("schedule", data, "a JSON object with a 'kind' field")
    else:
        error = _invalid(field, first.get("input"), first["msg"])
    error.__cause__ = exc
    return error


_INTERNED: dict[Any, Schedule] = {}
_INTERN_LIMIT = 4096


def _build(model: type[Schedule], **values: Any) -> Any:
    # Schedules are immutable, so equal arguments can share one instance: adding many
    # jobs with every(seconds=60) then costs a dict lookup, not a model each (~0.5 KB).
    # Value types are part of the key, so True never stands in for 1.
    try:
        key: Any = (model, *((k, type(v), v) for k, v in sorted(values.items())))
        hash(key)
    except TypeError:  # a list or another unhashable argument: build, don't intern
        key = None
    if key is not None and (found := _INTERNED.get(key)) is not None:
        return found
    try:
        built = model.model_validate(values)
    except ValidationError as exc:
        error = _from_validation_error(exc)
        raise error from error.__cause__
    if key is not None:
        if len(_INTERNED) >= _INTERN_LIMIT:
            _INTERNED.clear()
        _INTERNED[key] = built
    return built


def parse_schedule(data: str | bytes | dict[str, Any]) -> Schedule:
    """Read a schedule back from ``model_dump_json()`` output or its parsed dict.

    :param data: JSON text or a dict with a ``kind`` field
    """
    try:
        if isinstance(data, (str, bytes)):
            return _ADAPTER.validate_json(data)
        if isinstance(data, dict):
            return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        error = _from_validation_error(exc, data)
        raise error from error.__cause__
    raise _invalid("schedule", data, "JSON text or a dict from model_dump()")


# --- constructors ----------------------------------------------------------------------

Zone: TypeAlias = "str | tzinfo | None"
AtTimes: TypeAlias = "str | time | Sequence[str | time]"
Weekdays: TypeAlias = "str | int | Sequence[str | int]"


def cron(expr: str, *, seconds: bool = False, tz: Zone = None) -> CronSchedule:
    """A cron schedule: 5 fields, or 6 with ``seconds=True`` (seconds first).

    :param expr: the expression, or a macro such as ``@daily``
    :param seconds: whether ``expr`` has a leading seconds field
    :param tz: an IANA zone name or ``ZoneInfo``; None = the scheduler's zone
    """
    return _build(CronSchedule, expr=expr, seconds=seconds, tz=tz)  # type: ignore[no-any-return]


_UNITS = ("weeks", "days", "hours", "minutes", "seconds", "milliseconds")


def every(
    interval: timedelta | float | None = None,
    /,
    *,
    weeks: float = 0,
    days: float = 0,
    hours: float = 0,
    minutes: float = 0,
    seconds: float = 0,
    milliseconds: float = 0,
) -> EverySchedule:
    """A fixed interval: a ``timedelta`` (or seconds) *or* unit keywords, > 0.

    :param interval: the interval as a timedelta or a number of seconds
    """
    # Types are part of the key, so a bool never passes as the number it hashes like.
    # (One flat tuple: building it is most of a cache hit's cost.)
    key = (
        interval,
        weeks,
        days,
        hours,
        minutes,
        seconds,
        milliseconds,
        type(interval),
        type(weeks),
        type(days),
        type(hours),
        type(minutes),
        type(seconds),
        type(milliseconds),
    )
    try:
        found = _EVERY.get(key)
    except TypeError:  # an unhashable argument: validation below rejects it
        found = key = None  # type: ignore[assignment]
    if found is not None:
        return found
    made = _every(interval, weeks, days, hours, minutes, seconds, milliseconds)
    if key is not None:
        if len(_EVERY) >= _INTERN_LIMIT:
            _EVERY.clear()
        _EVERY[key] = made
    return made


_EVERY: dict[Any, EverySchedule] = {}


def _every(
    interval: timedelta | float | None,
    weeks: float,
    days: float,
    hours: float,
    minutes: float,
    seconds: float,
    milliseconds: float,
) -> EverySchedule:
    units = dict(zip(_UNITS, (weeks, days, hours, minutes, seconds, milliseconds), strict=True))
    for name, amount in units.items():
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            raise _invalid(name, amount, "a number >= 0")
    given = {name: amount for name, amount in units.items() if amount}
    if interval is not None and given:
        raise _invalid(
            "interval", interval, f"either an interval or unit keywords, not both {given}"
        )
    if interval is None:
        if not given:
            raise _invalid("interval", None, "a timedelta > 0 or unit keywords such as minutes=5")
        try:
            interval = timedelta(**units)
        except OverflowError as exc:
            raise _invalid("interval", given, "a duration that fits a timedelta") from exc
    return _build(EverySchedule, interval=_duration("interval", interval))  # type: ignore[no-any-return]


def random_every(low: timedelta | float, high: timedelta | float, /) -> RandomEverySchedule:
    """A random interval drawn uniformly in ``[low, high]`` before each run, ``0 < low < high``.

    :param low: the shortest delay (timedelta or seconds)
    :param high: the longest delay (timedelta or seconds)
    """
    return _build(  # type: ignore[no-any-return]
        RandomEverySchedule, low=_duration("low", low), high=_duration("high", high)
    )


def daily(every: int = 1, *, at: AtTimes = "00:00", tz: Zone = None) -> DailySchedule:
    """Every ``every`` days at one or more wall times.

    :param every: the period in days, counted from ``start_at`` (else 1970-01-01)
    :param at: ``"HH:MM[:SS]"``, a naive ``time``, or a sequence of them
    :param tz: an IANA zone name or ``ZoneInfo``; None = the scheduler's zone
    """
    return _build(DailySchedule, every=every, at=at, tz=tz)  # type: ignore[no-any-return]


def weekly(
    every: int = 1, *, on: Weekdays, at: AtTimes = "00:00", tz: Zone = None
) -> WeeklySchedule:
    """Every ``every`` weeks (Monday first) on some weekdays at some wall times.

    :param every: the period in weeks, counted from ``start_at``'s week (else 1970's first)
    :param on: weekday names (``"mon"``, ``"Monday"``) or ints 0=Monday..6=Sunday
    :param at: ``"HH:MM[:SS]"``, a naive ``time``, or a sequence of them
    :param tz: an IANA zone name or ``ZoneInfo``; None = the scheduler's zone
    """
    return _build(WeeklySchedule, every=every, on=on, at=at, tz=tz)  # type: ignore[no-any-return]


def monthly(
    every: int = 1, *, on: int | Sequence[int], at: AtTimes = "00:00", tz: Zone = None
) -> MonthlySchedule:
    """Every ``every`` months on some days (1..31, or -31..-1 from the end) at some times;
    a day a month does not have is skipped for that month.

    :param every: the period in months, counted from ``start_at``'s month (else 1970-01)
    :param on: days of the month; -1 is the last day
    :param at: ``"HH:MM[:SS]"``, a naive ``time``, or a sequence of them
    :param tz: an IANA zone name or ``ZoneInfo``; None = the scheduler's zone
    """
    return _build(MonthlySchedule, every=every, on=on, at=at, tz=tz)  # type: ignore[no-any-return]


def once(at: datetime | Sequence[datetime] | Literal["now"]) -> OnceSchedule:
    """One or several fixed times, or ``"now"`` (run once when the job becomes active).

    :param at: a datetime (naive = the job's zone), a sequence of them, or ``"now"``
    """
    if isinstance(at, str):
        if at != "now":
            raise _invalid("at", at, "a datetime, a sequence of datetimes, or 'now'")
        return _build(OnceSchedule, now=True)  # type: ignore[no-any-return]
    if isinstance(at, datetime):
        items = [at]
    elif isinstance(at, Iterable) and not isinstance(at, (bytes, dict)):
        items = list(at)
    else:
        raise _invalid("at", at, "a datetime, a sequence of datetimes, or 'now'")
    if not all(isinstance(i, datetime) for i in items):
        raise _invalid("at", at, "a datetime, a sequence of datetimes, or 'now'")
    return _build(OnceSchedule, at=tuple(items))  # type: ignore[no-any-return]
