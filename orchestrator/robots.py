"""Several robots (CONTRACT §11): each robot's settings, and its opening hours.

Hours are read in the robot's IANA time zone and compared in UTC: every instant taken in or
given out is timezone-aware UTC, and no local time is ever stored. The next opening is found
by walking local dates and converting each window's start and end, so daylight saving time
is followed: a wall-clock time skipped by a spring-forward change maps to the instant of the
change (the portal cannot open at 02:30 on a night without 02:30, so it opens when the clock
jumps), and a repeated wall-clock time (fall-back) maps to its first occurrence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")
DEFAULT_ROBOT = "default"
_ENTRY = re.compile(
    r"(?P<first>[A-Za-z]{3})(?:-(?P<last>[A-Za-z]{3}))? (?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})"
)
_MINUTES_PER_DAY = 24 * 60


def valid_name(name: str) -> bool:
    """Tell whether a robot's name is 1-40 of a-z, 0-9 and -, starting with a letter."""
    return NAME.fullmatch(name) is not None


def variable_prefix(name: str) -> str:
    """Return ``ROBOT_<N>_`` for a robot: its name upper-cased, ``-`` written ``_``."""
    return f"ROBOT_{name.upper().replace('-', '_')}_"


def zone(name: str) -> ZoneInfo:
    """Return the IANA time zone, or raise ValueError saying it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {name!r}") from None


def _minutes(text: str) -> int:
    hours, minutes = int(text[:2]), int(text[3:])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{text!r} is not a time from 00:00 to 24:00")
    return hours * 60 + minutes


@dataclass(frozen=True)
class Window:
    """One weekday's opening: minutes from that day's local midnight (end may pass midnight)."""

    weekday: int  # 0 = Monday
    start: int
    end: int


@dataclass(frozen=True)
class Hours:
    """When dispatches to a robot may start: weekly windows in one time zone."""

    text: str
    windows: tuple[Window, ...] = field(repr=False)
    timezone: str = "UTC"

    @classmethod
    def parse(cls, text: str, timezone: str = "UTC") -> Hours:
        """Parse ``Mon-Fri 06:00-20:00, Sat 07:00-13:00``; raise ValueError saying what is wrong."""
        zone(timezone)
        windows: list[Window] = []
        entries = [entry.strip() for entry in text.split(",")]
        if not text.strip():
            raise ValueError("no opening hours given")
        for entry in entries:
            match = _ENTRY.fullmatch(entry)
            if match is None:
                raise ValueError(
                    f"{entry!r} is not 'Day HH:MM-HH:MM' or 'Day-Day HH:MM-HH:MM' (Mon … Sun)"
                )
            days = []
            for key in ("first", "last"):
                word = match.group(key)
                if word is None:
                    continue
                if word.lower() not in DAYS:
                    raise ValueError(f"{word!r} in {entry!r} is not a day (Mon … Sun)")
                days.append(DAYS.index(word.lower()))
            first, last = days[0], days[-1]
            start, end = _minutes(match.group("start")), _minutes(match.group("end"))
            if end <= start:  # runs past midnight into the next day
                end += _MINUTES_PER_DAY
            count = (last - first) % 7 + 1  # Sat-Mon wraps: Sat, Sun, Mon
            for offset in range(count):
                windows.append(Window((first + offset) % 7, start, end))
        return cls(text=text.strip(), windows=tuple(windows), timezone=timezone)

    @cached_property
    def _zone(self) -> ZoneInfo:
        return zone(self.timezone)

    def _instant(self, day: date, minutes: int) -> datetime:
        """Return the UTC instant of a local wall-clock time (skipped: the change; repeated:
        the first)."""
        wall = datetime.combine(day, time()) + timedelta(minutes=minutes)
        tz = self._zone
        first = wall.replace(tzinfo=tz, fold=0)
        at = first.astimezone(UTC)
        if at.astimezone(tz).replace(tzinfo=None) == wall:
            return at  # exists (the first occurrence when repeated)
        # Skipped by a spring-forward change: the instant of the change lies between the
        # earlier (fold=1: the new offset) and later (fold=0: the old offset) readings.
        low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
        high = at
        if low > high:
            low, high = high, low
        before = low.astimezone(tz).utcoffset()
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            if middle.astimezone(tz).utcoffset() == before:
                low = middle
            else:
                high = middle
        return high.replace(microsecond=0) if high.microsecond else high

    def _spans(self, at: datetime, days_ahead: int) -> list[tuple[datetime, datetime]]:
        """Return the windows' UTC spans that start from the day before ``at``'s local date."""
        today = at.astimezone(self._zone).date()
        spans = []
        for delta in range(-2, days_ahead + 1):
            day = today + timedelta(days=delta)
            for window in self.windows:
                if window.weekday == day.weekday():
                    start = self._instant(day, window.start)
                    end = self._instant(day, window.end)
                    if start < end:
                        spans.append((start, end))
        return spans

    def is_open(self, at: datetime) -> bool:
        """Tell whether a dispatch may start at this (aware) instant."""
        return any(start <= at < end for start, end in self._spans(at, 0))

    def next_open(self, at: datetime) -> datetime | None:
        """Return when the robot next opens after ``at`` (UTC); None while it is open."""
        spans = self._spans(at, 8)
        if any(start <= at < end for start, end in spans):
            return None
        later = [start for start, _end in spans if start > at]
        return min(later) if later else None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class RobotSettings:
    """One robot's settings (CONTRACT §11): where it is, its capacity, deadline and hours."""

    name: str
    url: str
    api_token: str | None = field(default=None, repr=False)
    max_active_jobs: int | None = None
    seconds_per_item: float = 30.0
    deadline_margin_seconds: float = 300.0
    dispatch_timeout_seconds: float = 30.0
    silence_timeout_seconds: float | None = None
    pause_after_failures: int = 3
    hours: Hours | None = None
    timezone: str = "UTC"

    def is_open(self, at: datetime) -> bool:
        """Tell whether a dispatch to this robot may start at ``at`` (always, without hours)."""
        return self.hours is None or self.hours.is_open(at)

    def next_open(self, at: datetime) -> datetime | None:
        """Return when this robot next opens; None while open (or without hours)."""
        return None if self.hours is None else self.hours.next_open(at)
