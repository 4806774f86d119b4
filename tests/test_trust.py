"""Alerts you can check, end to end: zones, boxes on the snapshot, the second look, schedules and
counter-examples, against the running daemon, real clips and the stand-in model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from monitor.metrics import Metrics
from tests.fakes.vllm import FakeVLM
from tests.test_console import RED, config_doc, running, session, until

# The clip's red figure stands at x 0.52-0.63 of the width, its shirt at y 0.46-0.63.
DOOR = [[0.45, 0.3], [0.75, 0.3], [0.75, 0.95], [0.45, 0.95]]
WALL = [[0.05, 0.2], [0.4, 0.2], [0.4, 0.8], [0.05, 0.8]]


def stream(clip: Path, targets: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": "yard", "url": str(clip), "realtime": True, "targets": targets,
            "zones": [{"name": "door", "polygon": DOOR}, {"name": "wall", "polygon": WALL}], **extra}


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"vlm_monitor_{name}", labels) or 0.0


async def alerts(http: Any) -> list[dict[str, Any]]:
    return [e for e in (await http.get("/api/events?event=target_detected")).json()]


async def test_a_box_on_the_snapshot_and_no_alert_outside_the_zone(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    doc = config_doc(tmp_path, fake_vlm, [stream(clips["red"], [
        {"name": "anywhere", "description": RED},
        {"name": "at the wall", "description": RED, "zones": ["wall"]}])])
    async with running(doc) as (_, metrics, http):
        (alert,) = await until(lambda: alerts(http))
        assert alert["target"] == "anywhere"
        x1, y1, x2, y2 = alert["box"]
        assert 0.5 < x1 < x2 < 0.66 and 0.43 < y1 < y2 < 0.66, alert["box"]  # on the red shirt
        snap = cv2.imdecode(np.frombuffer((await http.get(alert["snapshot"])).content, np.uint8),
                            cv2.IMREAD_COLOR)
        h, w = snap.shape[:2]
        yellow = cv2.inRange(snap, (0, 200, 200), (90, 255, 255))  # the box as drawn
        ys, xs = np.nonzero(yellow)
        assert len(xs) > 50
        assert abs(xs.min() / w - x1) < 0.03 and abs(xs.max() / w - x2) < 0.03
        assert abs(ys.min() / h - y1) < 0.03 and abs(ys.max() / h - y2) < 0.03
        # The same red shirt, outside the wall zone: seen, but never a match there.
        assert value(metrics, "matches_total", stream="yard", target="anywhere") >= 2
        assert value(metrics, "matches_total", stream="yard", target="at the wall") == 0
        assert value(metrics, "alerts_total", stream="yard", target="at the wall") == 0


async def test_the_model_sees_only_the_zone_and_alerts_inside_it(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    doc = config_doc(tmp_path, fake_vlm, [stream(clips["red"], [
        {"name": "intruder", "description": RED, "zones": ["door"]}])])
    async with running(doc) as (_, _, http):
        (alert,) = await until(lambda: alerts(http))
        assert alert["target"] == "intruder" and alert["first_seen_offset_seconds"] == 5.0
        x1, _, x2, _ = alert["box"]
        assert 0.45 <= x1 < x2 <= 0.75  # mapped back onto the whole frame, inside the door
    sizes = {(r.width, r.height) for r in fake_vlm.requests}
    assert all(w * h < 644 * 364 for w, h in sizes), sizes  # the zone's part: fewer image tokens
    assert all(w < h for w, h in sizes)  # the door zone is taller than wide


async def test_a_second_look_that_refuses_holds_the_alert_back(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    fake_vlm.refuse_strict = True
    doc = config_doc(tmp_path, fake_vlm, [stream(clips["red"], [
        {"name": "intruder", "description": RED, "verify": True}])])
    async with running(doc) as (_, metrics, http):
        await until(lambda: _at_least(metrics, "verifications_total", 3, result="refused"))
        assert await alerts(http) == []
        assert value(metrics, "verifications_total", result="confirmed") == 0
        # Each match after a refusal is checked again: the streak goes on.
        assert value(metrics, "matches_total", stream="yard", target="intruder") >= 4
        fake_vlm.refuse_strict = False
        (alert,) = await until(lambda: alerts(http))
        assert value(metrics, "verifications_total", result="confirmed") == 1
        assert alert["first_seen_offset_seconds"] == 5.0  # the streak's first sample
        assert value(metrics, "verification_duration_seconds_count") >= 4
    strict = [r for r in fake_vlm.requests if "Look closely" in r.prompt]
    assert strict and all(r.width * r.height <= 644 * 364 for r in strict)


async def _at_least(metrics: Metrics, name: str, n: float, **labels: str) -> bool:
    return value(metrics, name, **labels) >= n


async def test_outside_its_schedule_a_target_is_not_asked_about(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    now = datetime.now(UTC)
    later = now + timedelta(hours=6)
    off_hours = f"{later:%H}:00-{(later + timedelta(hours=1)):%H}:00"  # an hour that is not now
    doc = config_doc(tmp_path, fake_vlm, [
        stream(clips["red"], [{"name": "night", "description": RED, "schedule": [off_hours]}]),
        {"name": "other", "url": str(clips["red"]), "realtime": True, "targets": [RED]}],
        timezone="UTC")
    async with running(doc) as (_, metrics, _):
        await until(lambda: _at_least(metrics, "frames_dropped_total", 3, stream="yard", reason="off_schedule"))
        await until(lambda: _at_least(metrics, "alerts_total", 1, stream="other", target=RED))
        assert value(metrics, "frames_analysed_total", stream="yard") == 0
    assert all("night" not in r.prompt and r.targets == [RED] for r in fake_vlm.requests)


async def test_false_alarms_become_counter_examples_that_survive_a_restart(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    fake_vlm.description = "a red poster on the wall by the door"
    doc = config_doc(tmp_path, fake_vlm, [stream(clips["red"], [{"name": "intruder", "description": RED}])])
    async with running(doc) as (_, _, http):
        (alert,) = await until(lambda: alerts(http))
        headers = await session(http)
        url = f"/api/events/{alert['id']}/feedback"
        # Only what the operator keeps is learnt: marked with no lesson, nothing goes into the prompt.
        judged = await http.post(url, json={"verdict": "false_alarm"}, headers=headers)
        assert judged.status_code == 200
        seen = len(fake_vlm.requests)
        await until(lambda: _asked_since(fake_vlm, seen))
        assert "earlier false alarms" not in fake_vlm.requests[-1].prompt
        too_long = await http.post(url, json={"verdict": "false_alarm", "lesson": "x" * 121}, headers=headers)
        assert too_long.status_code == 400
        kept = "a red poster on the wall by the door"  # the model's words, kept by the operator
        judged = await http.post(url, json={"verdict": "false_alarm", "lesson": kept}, headers=headers)
        assert judged.status_code == 200
        seen = len(fake_vlm.requests)
        await until(lambda: _asked_since(fake_vlm, seen))
        lesson = '(earlier false alarms, not this target: "a red poster on the wall by the door")'
        assert lesson in fake_vlm.requests[-1].prompt
    fake_vlm.requests.clear()
    async with running(doc) as (_, _, _):
        await until(lambda: _asked_since(fake_vlm, 0))
        assert lesson in fake_vlm.requests[0].prompt  # from the stored judgement, after a restart
        assert len(fake_vlm.requests[0].prompt) < 2000


async def _asked_since(fake: FakeVLM, n: int) -> bool:
    return len(fake.requests) > n
