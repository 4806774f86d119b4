"""When a target is watched: rules like ``Mon-Fri 19:00-07:00``, in local wall-clock time. Pure.

A rule is days and a time range. A range that ends before it starts runs past
midnight and belongs to the day it starts on: ``Fri 22:00-06:00`` covers
Friday night into Saturday morning. ``24:00`` is the end of the day. Days are
``Mon``..``Sun``, a range (``Mon-Fri``, ``Sat-Mon`` wraps) or a list
(``Mon,Wed,Fri``); no days means every day. Rules are read in the configured
time zone, so daylight saving moves them with the wall clock: on the day the
clocks change, a rule still starts at 19:00 local.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_RULE = re.compile(r"^\s*(?:(?P<days>[A-Za-z,\- ]+?)\s+)?"
                   r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$")


class ScheduleError(ValueError):
    """A rule that cannot be read; the message says which part."""


@dataclass(frozen=True, slots=True)
class Rule:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int  # minutes after midnight, 1440 for 24:00; <= start: runs past midnight

    def covers(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        # Past midnight: the evening of a listed day, or the morning after one.
        return ((weekday in self.days and minute >= self.start)
                or ((weekday - 1) % 7 in self.days and minute < self.end))


def _minutes(text: str, *, end: bool) -> int:
    hours, minutes = (int(p) for p in text.split(":"))
    if (hours, minutes) == (24, 0) and end:
        return 1440
    if not (0 <= hours <= 23 and 0 <= minutes <= 59):
        raise ScheduleError(f"{text!r} is not a time of day (00:00 to 23:59, or 24:00 as an end)")
    return hours * 60 + minutes


def _day(text: str) -> int:
    key = text.strip().lower()
    for i, name in enumerate(FULL_DAYS):
        if len(key) >= 3 and name.startswith(key):
            return i
    raise ScheduleError(f"{text.strip()!r} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)")


def _days(text: str | None) -> frozenset[int]:
    if not text:
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if "-" in part:
            first, last = (_day(d) for d in part.split("-", 1))
            days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
        else:
            days.add(_day(part))
    return frozenset(days)


def parse_rule(text: str) -> Rule:
    m = _RULE.match(text)
    if not m:
        raise ScheduleError(f"{text!r} is not a schedule: write DAYS HH:MM-HH:MM, e.g. 'Mon-Fri 19:00-07:00'")
    start, end = _minutes(m["start"], end=False), _minutes(m["end"], end=True)
    if start == end:
        raise ScheduleError(f"{text!r} starts and ends at the same time")
    return Rule(_days(m["days"]), start, end)


def active(rules: list[Rule], at: datetime) -> bool:
    """Whether any rule covers ``at`` (an aware datetime, already in the schedule's zone).
    No rules: always."""
    if not rules:
        return True
    minute = at.hour * 60 + at.minute
    return any(r.covers(at.weekday(), minute) for r in rules)


def zone(name: str | None) -> ZoneInfo | None:
    """The named time zone; None for the host's. ScheduleError for an unknown name."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{name!r} is not a time zone (e.g. Europe/Berlin, UTC)") from None


def local(now: datetime, tz: ZoneInfo | None) -> datetime:
    """``now`` (aware) as wall-clock time in the zone, or the host's."""
    return now.astimezone(tz) if tz is not None else now.astimezone()

