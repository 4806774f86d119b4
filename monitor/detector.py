"""The alert state machine for one (stream, target). Pure: no I/O, no clock.

    ARMED --N matches in a row--> ALERTING --R absent samples in a row--> ARMED
             (raises one alert)                (ends the episode: cleared)

A sample whose analysis failed is UNKNOWN: it neither extends nor breaks a
streak, and never counts as the target being gone (a dead model server must
not end an episode and cause a second alert for the same person).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

S = TypeVar("S")


class Observation(enum.Enum):
    MATCH = "match"
    ABSENT = "absent"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Raised(Generic[S]):
    first: S  # the first of the consecutive matching samples
    last: S  # the sample that completed the streak


@dataclass(frozen=True, slots=True)
class Cleared(Generic[S]):
    last_seen: S


class Detector(Generic[S]):
    def __init__(self, consecutive: int = 2, rearm_after_absent: int = 3) -> None:
        if consecutive < 1 or rearm_after_absent < 1:
            raise ValueError("consecutive and rearm_after_absent must be >= 1")
        self.consecutive = consecutive
        self.rearm_after_absent = rearm_after_absent
        self.alerting = False
        self._streak = 0  # ARMED: matches in a row
        self._first: S | None = None  # ARMED: the first of them
        self._absent = 0  # ALERTING: absent samples in a row
        self._last_seen: S | None = None  # ALERTING: the latest match

    def progress(self) -> str:
        """Where the target stands, in words for the console."""
        if self.alerting:
            return "alerting"
        return f"{self._streak} of {self.consecutive} matches needed"

    def refuse(self, raised: Raised[S]) -> None:
        """The alert just raised was not confirmed (a second look said no): no episode; the
        streak stands, so the next match raises (and is checked) again."""
        self.alerting, self._last_seen, self._absent = False, None, 0
        self._streak, self._first = self.consecutive - 1, raised.first

    def observe(self, obs: Observation, sample: S) -> Raised[S] | Cleared[S] | None:
        if obs is Observation.UNKNOWN:
            return None
        if not self.alerting:
            if obs is Observation.ABSENT:
                self._streak, self._first = 0, None
                return None
            self._streak += 1
            if self._first is None:
                self._first = sample
            if self._streak < self.consecutive:
                return None
            raised = Raised(first=self._first, last=sample)
            self.alerting, self._absent, self._last_seen = True, 0, sample
            self._streak, self._first = 0, None
            return raised
        if obs is Observation.MATCH:
            self._absent, self._last_seen = 0, sample
            return None
        self._absent += 1
        if self._absent < self.rearm_after_absent:
            return None
        cleared = Cleared(last_seen=self._last_seen if self._last_seen is not None else sample)
        self.alerting, self._last_seen = False, None
        return cleared
