"""One stream's alert decisions: from each sample's verdicts to what to publish. Pure.

Per target a ``Detector`` (the streak, the re-arm rule); across its episodes
the cooldown. ``observe`` returns, in target order, what each sample's
verdicts lead to; a target that takes a second look comes back through
``confirmed`` with the look's outcome. The stream's task does the I/O: the
second look, drawing the snapshot, publishing, ordering the clip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from monitor.alerts.model import Alert
from monitor.config import DetectionConfig, Target
from monitor.detector import Cleared, Detector, Raised
from monitor.pipeline import SampleResult, TargetResult
from monitor.preprocess import to_bgr
from monitor.sources.base import Frame
from monitor.verdict import Box
from monitor.zones import View


@dataclass(frozen=True, slots=True)
class Seen:
    """What the detector remembers of a matching sample."""

    offset: float
    wall: datetime
    confidence: int
    description: str
    jpeg: bytes | None  # what the model was shown, for the alert's snapshot
    model: str | None  # the model that judged it
    box: Box | None = None  # the target's box, relative to the frame
    mark: Box | None = None  # the same box, relative to the image the model was shown
    frame: Callable[[], Frame] | None = None  # the frame at full size, for a second look (verify)
    view: View | None = None  # the zones' part of it the model was shown


@dataclass(frozen=True, slots=True)
class Detected:
    """Publish this alert (its snapshot: ``last.jpeg`` with ``last.mark`` drawn on it)."""

    alert: Alert
    first: Seen
    last: Seen


@dataclass(frozen=True, slots=True)
class Verify:
    """The streak is complete, but the target takes a second look at ``event.last`` first."""

    target: Target
    event: Raised[Seen]


@dataclass(frozen=True, slots=True)
class Ended:
    """The episode ended: publish ``target_cleared``."""

    alert: Alert
    last: Seen


@dataclass(frozen=True, slots=True)
class Cooling:
    """The streak is complete again within the cooldown: no alert (worth a log line)."""

    target: str
    offset: float


Step = Detected | Verify | Ended | Cooling


def seen(result: SampleResult, r: TargetResult) -> Seen:
    sample, prepared, verdict = result.sample, result.prepared, r.verdict
    assert verdict is not None
    mark = None
    if prepared is not None and verdict.box is not None:
        x1, y1, x2, y2 = verdict.box
        w, h = prepared.width, prepared.height
        mark = (max(0.0, x1 / w), max(0.0, y1 / h), min(1.0, x2 / w), min(1.0, y2 / h))
    return Seen(sample.offset, sample.wall, verdict.confidence, verdict.description,
                prepared.jpeg if prepared else None, result.analysis.model if result.analysis else None,
                r.box, mark, (sample.full or partial(to_bgr, sample.frame)) if r.target.verify else None,
                prepared.view if prepared else None)


class Alerting:
    """A stream's detectors and cooldown."""

    def __init__(self, stream: str, targets: Sequence[Target], detection: DetectionConfig) -> None:
        self.stream = stream
        self.min_confidence = detection.min_confidence
        self.cooldown = detection.cooldown_seconds
        self.detectors: dict[str, Detector[Seen]] = {
            t.name: Detector(detection.consecutive_matches, detection.rearm_after_absent) for t in targets}
        self._last_alert: dict[str, float] = {}  # target -> offset of its last alert

    def observe(self, result: SampleResult) -> list[Step]:
        """What this sample's verdicts lead to, target by target (targets the model could not
        judge this time are left as they were)."""
        steps: list[Step] = []
        for r in result.targets:
            if r.error is not None or r.verdict is None:
                continue
            event = self.detectors[r.target.name].observe(r.observation(self.min_confidence), seen(result, r))
            if isinstance(event, Raised):
                last = self._last_alert.get(r.target.name)
                if last is not None and event.first.offset - last < self.cooldown:
                    steps.append(Cooling(r.target.name, event.first.offset))
                elif r.target.verify and event.last.frame is not None:
                    steps.append(Verify(r.target, event))
                else:
                    steps.append(self._detected(r.target.name, event))
            elif isinstance(event, Cleared):
                last_seen = event.last_seen
                cleared = Alert.cleared(self.stream, r.target.name, last_seen.wall, last_seen.offset)
                steps.append(Ended(cleared, last_seen))
        return steps

    def confirmed(self, step: Verify, ok: bool) -> Detected | None:
        """The second look's outcome: the alert, or the streak refused (it may complete again)."""
        if ok:
            return self._detected(step.target.name, step.event)
        self.detectors[step.target.name].refuse(step.event)
        return None

    def progress(self, target: str) -> str:
        """The streak toward an alert, for the console ("1 of 2 matches needed", "alerting")."""
        return self.detectors[target].progress()

    def _detected(self, target: str, event: Raised[Seen]) -> Detected:
        first, last = event.first, event.last
        self._last_alert[target] = first.offset
        return Detected(Alert.detected(self.stream, target, first.wall, first.offset, last.confidence,
                                       last.description, last.model, last.box), first, last)
