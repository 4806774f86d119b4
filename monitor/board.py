"""What each camera is doing right now, in memory, for the console.

The streams write here (on the event loop, a few field updates per sample);
the console reads. Per camera: up or down and why, the last frame the model
judged (the JPEG it was sent, not re-encoded), each target's last verdict,
and a bounded ring of recent samples (asked, reused or dropped, and why)
that answers "why no alert?". Nothing is written to disk per sample.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitor.alerts.model import iso_utc
from monitor.load import BEHIND_WINDOW_S

THUMB_WIDTH = 160
# Thumbnails are kept for the newest asked samples only: 160x90 JPEGs of ~4 KB,
# so 60 of them are ~0.25 MB a camera. Older rows keep their verdicts.
THUMBS_KEPT = 60


@dataclass(frozen=True, slots=True)
class TargetView:
    target: str
    present: bool | None  # None: no verdict (the model could not be asked)
    confidence: int | None
    description: str
    match: bool
    streak: str = ""  # toward an alert: "1 of 2 matches needed", or "alerting"


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    at: str  # wall clock, ISO UTC
    offset: float | None
    outcome: str  # asked | reused | dropped
    reason: str | None  # why dropped (a frames_dropped_total reason)
    count: int  # intervals this row stands for (a stream down for a minute is one row)
    verdicts: tuple[TargetView, ...]

    def json(self, thumb: bool) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at, "offset": self.offset, "outcome": self.outcome,
                "reason": self.reason, "count": self.count, "thumb": thumb,
                "verdicts": [_verdict_json(v) for v in self.verdicts]}


def _verdict_json(v: TargetView) -> dict[str, Any]:
    return {"target": v.target, "present": v.present, "confidence": v.confidence,
            "description": v.description, "match": v.match, "streak": v.streak}


@dataclass
class Camera:
    name: str
    targets: list[str]
    rows: deque[Row]
    up: bool | None = None  # None: not yet known
    reason: str = "starting"  # why down (or what it is waiting for)
    since: str = field(default_factory=lambda: iso_utc(datetime.now(UTC)))
    frame: bytes | None = None  # the JPEG the model judged last
    frame_seq: int = 0
    frame_at: str | None = None
    last: dict[str, tuple[TargetView, str, bool]] = field(default_factory=dict)  # target -> (v, at, asked)
    thumbs: dict[int, bytes] = field(default_factory=dict)  # row seq -> JPEG, newest THUMBS_KEPT
    recent: deque[tuple[float, str]] = field(default_factory=deque)  # (monotonic, outcome) last minute
    version: int = 0  # bumped on every change, so a live view sends only what changed
    behind: tuple[float, str] | None = None  # (monotonic, why) when it last fell behind

    def per_minute(self, now: float) -> tuple[int, int, int]:
        """Samples, model calls and samples judged (asked or reused) in the last minute."""
        while self.recent and now - self.recent[0][0] > 60:
            self.recent.popleft()
        outcomes = [o for _, o in self.recent]
        return len(outcomes), outcomes.count("asked"), len(outcomes) - outcomes.count("dropped")

    def behind_now(self, now: float) -> str | None:
        """Why this camera is behind, if it fell behind lately (a camera that is down is down)."""
        if self.behind is None or now - self.behind[0] > BEHIND_WINDOW_S or self.up is False:
            return None
        return self.behind[1]

    @property
    def off_schedule(self) -> bool:
        """Nothing of it is watched now: its last interval was off every target's schedule."""
        return bool(self.rows) and self.rows[-1].reason == "off_schedule"

    @property
    def matching(self) -> bool:
        return any(v.match for v, _, _ in self.last.values())

    def json(self, now: float) -> dict[str, Any]:
        samples, asked, judged = self.per_minute(now)
        return {
            "name": self.name, "up": bool(self.up), "state": _state(self.up), "reason": self.reason,
            "since": self.since, "frame": self.frame_seq if self.frame is not None else None,
            "frame_at": self.frame_at, "samples_per_minute": samples, "model_calls_per_minute": asked,
            "judged_per_minute": judged, "behind": self.behind_now(now), "off_schedule": self.off_schedule,
            "matching": self.matching, "version": self.version,
            "targets": [self._target_json(t) for t in self.targets]}

    def _target_json(self, target: str) -> dict[str, Any]:
        if target not in self.last:
            return {"target": target, "present": None, "confidence": None, "description": None,
                    "match": False, "streak": "", "at": None, "asked": None}
        v, at, asked = self.last[target]
        return {**_verdict_json(v), "at": at, "asked": asked}


def _state(up: bool | None) -> str:
    return "starting" if up is None else "up" if up else "down"


class Board:
    """Every camera of this replica. One owner: the daemon; streams report, the console reads."""

    def __init__(self, recent_samples: int = 300) -> None:
        self.recent_samples = recent_samples
        self.cameras: dict[str, Camera] = {}
        self._seq = 0
        self._started = time.monotonic()

    def set_streams(self, streams: Iterable[tuple[str, list[str]]]) -> None:
        """The configured streams (at start and on reload): keep what is known of the others."""
        new: dict[str, Camera] = {}
        for name, targets in streams:
            cam = self.cameras.get(name)
            if cam is None or cam.targets != targets:
                cam = Camera(name, list(targets), deque(maxlen=self.recent_samples))
            new[name] = cam
        self.cameras = new

    def state(self, name: str, up: bool, reason: str = "") -> None:
        cam = self.cameras.get(name)
        if cam is None or (cam.up == up and cam.reason == reason):
            return
        cam.up, cam.reason, cam.since = up, reason, iso_utc(datetime.now(UTC))
        cam.version += 1

    def dropped(self, name: str, reason: str, count: int = 1) -> None:
        """Intervals with no verdict. Consecutive drops for one reason are one row."""
        cam = self.cameras.get(name)
        if cam is None:
            return
        now = iso_utc(datetime.now(UTC))
        head = cam.rows[-1] if cam.rows else None
        if head is not None and head.outcome == "dropped" and head.reason == reason:
            cam.rows[-1] = Row(head.seq, now, head.offset, "dropped", reason, head.count + count, ())
        else:
            cam.rows.append(Row(self._next(), now, None, "dropped", reason, count, ()))
        cam.version += 1

    def sample(self, name: str, *, wall: datetime, offset: float, outcome: str, reason: str | None,
               verdicts: list[TargetView], frame: bytes | None, thumb: bytes | None) -> None:
        """A sample the model judged (asked), whose verdicts were reused, or that it could not judge."""
        cam = self.cameras.get(name)
        if cam is None:
            return
        at = iso_utc(wall)
        row = Row(self._next(), at, offset, outcome, reason, 1, tuple(verdicts))
        cam.rows.append(row)
        cam.recent.append((time.monotonic(), outcome))
        if outcome == "asked":
            if frame is not None:
                cam.frame, cam.frame_seq, cam.frame_at = frame, row.seq, at
            if thumb is not None:
                cam.thumbs[row.seq] = thumb
                while len(cam.thumbs) > THUMBS_KEPT:
                    del cam.thumbs[next(iter(cam.thumbs))]
        for v in verdicts:
            if v.present is not None:
                cam.last[v.target] = (v, at, outcome == "asked")
        cam.version += 1

    def fell_behind(self, name: str, why: str) -> None:
        cam = self.cameras.get(name)
        if cam is None:
            return
        now = time.monotonic()
        if cam.behind_now(now) != why:
            cam.version += 1  # the live view shows it
        cam.behind = (now, why)

    def fleet(self, now: float) -> dict[str, Any]:
        """At a glance: how many cameras are in each state, and samples judged a second."""
        cams = list(self.cameras.values())
        states = [_state(c.up) for c in cams]
        return {"cameras": len(cams), "up": states.count("up"), "down": states.count("down"),
                "starting": states.count("starting"),
                "behind": sum(1 for c in cams if c.behind_now(now) is not None),
                "matching": sum(1 for c in cams if c.matching),
                "off_schedule": sum(1 for c in cams if c.off_schedule),
                # Over the last minute, or since the start when that is sooner (not 1/60 of it).
                "judged_per_second": round(sum(c.per_minute(now)[2] for c in cams)
                                           / max(1.0, min(60.0, now - self._started)), 1)}

    def recent(self, name: str, limit: int) -> list[dict[str, Any]] | None:
        cam = self.cameras.get(name)
        if cam is None:
            return None
        rows = list(cam.rows)[-limit:]
        rows.reverse()
        return [r.json(r.seq in cam.thumbs) for r in rows]

    def _next(self) -> int:
        self._seq += 1
        return self._seq
