"""Small time helpers shared by schedules, the scheduler and the backends."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigurationError

__all__ = (
    "EPOCH",
    "as_duration",
    "from_us",
    "localize",
    "resolve_zone",
    "to_us",
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(when: datetime) -> int:
    """Encode an aware datetime as integer microseconds since the epoch (frozen encoding)."""
    return (when - EPOCH) // _US


def from_us(us: int) -> datetime:
    """Decode :func:`to_us`: an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=us)


def as_duration(
    field: str, value: Any, *, allow_zero: bool = True, allow_none: bool = False
) -> timedelta | None:
    """Coerce a ``timedelta`` or a number of seconds to a ``timedelta`` (``bool`` rejected).

    :param field: the option name, for the error message
    :param allow_zero: whether a zero duration is valid (negative never is)
    :param allow_none: whether ``None`` passes through
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise ConfigurationError(field, value, "a timedelta or a number of seconds")
    if isinstance(value, float) and value != value:  # NaN
        raise ConfigurationError(field, value, "a finite number of seconds")
    try:
        delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    except OverflowError as exc:
        raise ConfigurationError(field, value, "a duration that fits a timedelta") from exc
    if delta < timedelta(0) or (not allow_zero and delta == timedelta(0)):
        raise ConfigurationError(field, value, "> 0" if not allow_zero else ">= 0")
    return delta


def _local_zone_name() -> str:
    tz_env = os.environ.get("TZ", "").lstrip(":")
    if tz_env:
        return tz_env
    link = Path("/etc/localtime")
    if link.is_symlink():
        target = str(link.resolve())
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    timezone_file = Path("/etc/timezone")
    if timezone_file.is_file():
        name = timezone_file.read_text().strip()
        if name:
            return name
    raise ConfigurationError(
        "tz", "local", "the host's IANA zone could not be found (set TZ or pass a zone name)"
    )


def resolve_zone(value: Any, field: str = "tz") -> ZoneInfo:
    """Turn an IANA name, ``"local"``, ``"UTC"``, ``timezone.utc`` or a ``ZoneInfo`` into a
    ``ZoneInfo``; reject fixed-offset ``timezone`` objects with a hint."""
    if isinstance(value, ZoneInfo):
        return value
    if value is UTC or value == UTC:
        return ZoneInfo("UTC")
    if isinstance(value, timezone):
        offset = value.utcoffset(None)
        hours = int(offset.total_seconds() // 3600)
        hint = f"Etc/GMT{-hours:+d}" if hours else "UTC"
        raise ConfigurationError(
            field,
            value,
            f"an IANA zone name or ZoneInfo; fixed offsets are not zones (try {hint!r}, "
            "whose sign is inverted by POSIX convention, or a city zone)",
        )
    if isinstance(value, tzinfo):
        raise ConfigurationError(field, value, "an IANA zone name or a zoneinfo.ZoneInfo")
    if not isinstance(value, str) or not value:
        raise ConfigurationError(field, value, "an IANA zone name such as 'Europe/Berlin'")
    name = _local_zone_name() if value == "local" else value
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ConfigurationError(
            field, value, "an IANA zone name such as 'Europe/Berlin' or 'UTC'"
        ) from exc


def localize(naive: datetime, zone: ZoneInfo) -> datetime:
    """Resolve a naive wall time in ``zone`` to an aware UTC instant, by the DST rules:
    a repeated time takes its first occurrence, a missing time the first instant after
    the gap (the transition)."""
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    off0, off1 = first.utcoffset(), second.utcoffset()
    if off0 == off1:
        return first.astimezone(UTC)
    # Either a repeated time (fold=0 has the larger offset, both valid) or a gap.
    as_utc0 = first.astimezone(UTC)
    if as_utc0.astimezone(zone).replace(tzinfo=None) == naive:
        return as_utc0  # real time (the first of a repeated pair)
    # In a gap: fold=1 maps with the pre-gap offset, which lands after the transition;
    # the transition instant is the first instant after the gap.
    assert off0 is not None and off1 is not None
    lo = min(first.astimezone(UTC), second.astimezone(UTC))
    hi = max(first.astimezone(UTC), second.astimezone(UTC))
    # Binary search the transition instant to the second between lo and hi.
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == lo.astimezone(zone).utcoffset():
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0) if hi.microsecond else hi
