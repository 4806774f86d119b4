"""Alerts you can trust, measured: right / wrong / missed with and without zones, the second look,
schedules and the regional scene gate, on clips with known ground truth.

    .venv/bin/python -m bench.precision

Runs ``vlm-monitor eval``'s own replay (monitor/evaluate.py: the daemon's
pipeline, detectors, zones, second look and gate) against the stand-in model,
which judges from the pixels it is sent: red is "a person wearing a red
shirt", and a second look confirms only a red region with a head above it.
The clips (generated here):

- ``yard``: a red figure inside the door zone from 8 s to 14 s; a red poster
  on the wall beyond the zone the whole time; a red car crossing outside the
  zone from 18 s to 24 s.
- ``small``: a quiet 1080p scene; a red figure about 60 px tall crosses it
  from 10 s to 35 s.
- ``night``: a red figure from 5 s to 12 s, at an hour outside the target's
  schedule (so the right answer is no alert).

Prints the eval tables, image tokens per sample with and without zones, the
model time the second look adds, and the seconds to alert for the small
figure with the whole-frame gate and the regional one.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from monitor import logs
from monitor.config import Config, parse_config
from monitor.evaluate import Result, Suite, evaluate, report
from tests.clips import draw_figure, scene
from tests.fakes.vllm import FakeVLM

RED = "a person wearing a red shirt"
FPS = 5  # the replay samples once a second; fewer frames make the clips quick to write
DOOR = [[0.15, 0.3], [0.45, 0.3], [0.45, 0.95], [0.15, 0.95]]


def write(path: Path, size: tuple[int, int], seconds: int, draw: object) -> Path:
    w, h = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    base = scene(w, h) if w < 1920 else np.full((h, w, 3), 150, np.uint8)
    for i in range(seconds * FPS):
        frame = base.copy()
        draw(frame, i / FPS)  # type: ignore[operator]
        out.write(frame)
    out.release()
    return path


def yard(frame: np.ndarray, t: float) -> None:
    h, w = frame.shape[:2]
    poster = (int(w * 0.8), int(h * 0.2)), (int(w * 0.9), int(h * 0.45))
    cv2.rectangle(frame, *poster, (40, 40, 210), -1)
    if 18 <= t < 24:  # a red car, outside the zone
        x = int(w * (0.55 + 0.06 * (t - 18)))
        cv2.rectangle(frame, (x, int(h * 0.78)), (x + int(w * 0.2), int(h * 0.92)), (30, 30, 190), -1)
    if 8 <= t < 14:
        draw_figure(frame, int(w * 0.3))


def small(frame: np.ndarray, t: float) -> None:
    if 10 <= t < 35:  # ~60 px tall in 1080p, walking left to right
        x = int(300 + 40 * (t - 10))
        cv2.circle(frame, (x, 900), 7, (140, 170, 210), -1)
        cv2.rectangle(frame, (x - 10, 908), (x + 10, 934), (30, 30, 200), -1)
        cv2.rectangle(frame, (x - 8, 934), (x + 8, 962), (60, 50, 40), -1)


def night(frame: np.ndarray, t: float) -> None:
    if 5 <= t < 12:
        draw_figure(frame, int(frame.shape[1] * 0.55))


def config(fake: FakeVLM, grid: int) -> Config:
    return parse_config(f"""
vlm: {{base_url: "{fake.base_url}", max_concurrency: 8}}
streams: [{{name: unused, url: /unused.mp4, targets: [x]}}]
scene_change: {{grid: {grid}}}
timezone: UTC
""", "bench")


def tokens(fake: FakeVLM, start: int) -> float:
    sizes = [(r.width // 28) * (r.height // 28) + 2 for r in fake.requests[start:]
             if "Look closely" not in r.prompt]
    return sum(sizes) / max(1, len(sizes))


async def main() -> None:
    logs.configure("warning", "console", stream=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="precision-"))
    clips = {"yard": write(tmp / "yard.mp4", (1280, 720), 30, yard),
             "small": write(tmp / "small.mp4", (1920, 1080), 40, small),
             "night": write(tmp / "night.mp4", (1280, 720), 20, night)}
    off_hours = (datetime.now(UTC) + timedelta(hours=6)).strftime("%H:00")
    fake = FakeVLM().start()
    fake.min_fraction = 0.0001  # the stand-in sees the small figure (a real model may not)
    try:
        yard_suite = Suite.model_validate({
            "cases": [{"video": str(clips["yard"]), "target": {"name": "intruder", "description": RED,
                                                               "zones": ["door"]},
                       "present": [[8, 14]], "zones": [{"name": "door", "polygon": DOOR}]}],
            "variants": [{"name": "no zones, no second look", "zones": False},
                         {"name": "second look only", "zones": False, "verify": True},
                         {"name": "zones", "zones": True},
                         {"name": "zones and second look", "verify": True}]})
        print("yard: a red figure in the door zone; a red poster and a red car outside it")
        results: list[Result] = []
        for variant in yard_suite.variants:
            start = len(fake.requests)
            one = Suite(cases=yard_suite.cases, variants=[variant])
            (result,) = await evaluate(config(fake, 8), one)
            results.append(result)
            print(f"  {variant.name}: image tokens per sample {tokens(fake, start):.0f}, "
                  f"second look model time {result.verify_seconds:.2f} s in {result.seconds:.0f} s of video")
        print(report(results, yard_suite))

        night_suite = Suite.model_validate({
            "cases": [{"video": str(clips["night"]), "present": [],
                       "target": {"name": "intruder", "description": RED,
                                  "schedule": [f"{off_hours}-{off_hours[:2]}:59"]}}],
            "variants": [{"name": "schedule ignored", "schedule": False}, {"name": "with the schedule"}]})
        print("\nnight: a red figure at an hour outside the target's schedule (right answer: no alert)")
        print(report(await evaluate(config(fake, 8), night_suite), night_suite))

        small_suite = Suite.model_validate({
            "cases": [{"video": str(clips["small"]), "target": RED, "present": [[10, 35]]}]})
        print("\nsmall: a ~60 px figure crossing a quiet 1080p scene from 10 s")
        for label, grid in (("whole-frame gate", 1), ("regional gate (8x8)", 8)):
            (result,) = await evaluate(config(fake, grid), small_suite)
            delay = f"{result.score.delays[0]:.0f} s" if result.score.delays else "never"
            print(f"  {label}: right {result.score.right}, missed {result.score.missed}, alert {delay} "
                  f"after it appeared, {result.calls:.0f} model calls in {result.seconds:.0f} s")
    finally:
        fake.stop()


if __name__ == "__main__":
    asyncio.run(main())
