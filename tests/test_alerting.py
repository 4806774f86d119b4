"""A stream's alert decisions, without I/O: the streak, the cooldown, the second look, the end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from monitor.alerting import Alerting, Cooling, Detected, Ended, Verify
from monitor.config import DetectionConfig, Target
from monitor.pipeline import SampleResult, TargetResult
from monitor.sources.base import Sample
from monitor.verdict import Verdict
from monitor.vlm import Unavailable

DOOR, DOG = Target(name="door"), Target(name="dog", verify=True)
T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def result(offset: float, **present: bool | None) -> SampleResult:
    """A sample at ``offset`` with these targets present (True), absent (False) or unjudged (None)."""
    sample = Sample(int(offset), offset, T0 + timedelta(seconds=offset), np.zeros((4, 4, 3), np.uint8), 0.0)
    targets = []
    for target in (DOOR, DOG):
        if target.name not in present:
            continue
        p = present[target.name]
        verdict = None if p is None else Verdict(p, 9, f"{target.name} {'seen' if p else 'gone'}")
        targets.append(TargetResult(target, verdict, Unavailable("down", "connection_error") if p is None else None))
    return SampleResult(sample, None, targets, None)


def test_a_streak_alerts_once_and_its_end_clears() -> None:
    alerting = Alerting("cam", [DOOR], DetectionConfig(consecutive_matches=2, rearm_after_absent=2))
    assert alerting.observe(result(0, door=True)) == []
    assert alerting.progress("door") == "1 of 2 matches needed"
    steps = alerting.observe(result(1, door=True))
    assert len(steps) == 1 and isinstance(steps[0], Detected)
    alert = steps[0].alert
    assert (alert.event, alert.stream, alert.fields["target"]) == ("target_detected", "cam", "door")
    assert alert.fields["first_seen_offset_seconds"] == 0 and steps[0].last.offset == 1
    assert alerting.observe(result(2, door=True)) == []  # still the same episode
    assert alerting.observe(result(3, door=None)) == []  # the model could not judge: nothing changes
    assert alerting.observe(result(4, door=False)) == []
    ended = alerting.observe(result(5, door=False))
    assert len(ended) == 1 and isinstance(ended[0], Ended) and ended[0].alert.event == "target_cleared"
    assert ended[0].alert.fields["last_seen_offset_seconds"] == 2


def test_within_the_cooldown_a_new_episode_is_only_noted() -> None:
    alerting = Alerting("cam", [DOOR], DetectionConfig(consecutive_matches=1, rearm_after_absent=1,
                                                       cooldown_seconds=60))
    assert isinstance(alerting.observe(result(0, door=True))[0], Detected)
    assert isinstance(alerting.observe(result(1, door=False))[0], Ended)
    again = alerting.observe(result(30, door=True))
    assert again == [Cooling("door", 30)]
    alerting.observe(result(31, door=False))
    assert isinstance(alerting.observe(result(61, door=True))[0], Detected)  # 61 s after the first


def test_a_second_look_decides_and_a_refused_streak_is_looked_at_again() -> None:
    alerting = Alerting("cam", [DOOR, DOG], DetectionConfig(consecutive_matches=2, rearm_after_absent=3))
    alerting.observe(result(0, door=False, dog=True))
    steps = alerting.observe(result(1, door=False, dog=True))
    assert len(steps) == 1 and isinstance(steps[0], Verify) and steps[0].target == DOG
    assert alerting.confirmed(steps[0], ok=False) is None  # refused: no alert
    assert alerting.progress("dog") == "1 of 2 matches needed"
    steps = alerting.observe(result(2, door=False, dog=True))  # the streak stood: looked at again
    assert isinstance(steps[0], Verify) and steps[0].event.last.offset == 2
    detected = alerting.confirmed(steps[0], ok=True)
    assert isinstance(detected, Detected) and detected.alert.fields["first_seen_offset_seconds"] == 0
    assert alerting.progress("dog") == "alerting"
