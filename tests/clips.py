"""Test videos with known ground truth: a fixed-camera scene where a red figure
is visible during a given interval, and nothing else in the scene is red.

``python -m tests.clips OUT.mp4`` writes the 20 s demo clip used by the example config.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np


def scene(width: int, height: int) -> np.ndarray:
    """A static, textured, unsaturated background (a street with a wall and a door)."""
    rng = np.random.default_rng(7)
    img = np.zeros((height, width, 3), np.uint8)
    ramp = np.linspace(70, 150, height, dtype=np.float32)[:, None]
    img[:] = np.repeat(ramp, width, axis=1)[:, :, None].astype(np.uint8)
    img[int(height * 0.75):] = (90, 95, 100)  # pavement
    cv2.rectangle(img, (int(width * 0.1), int(height * 0.2)), (int(width * 0.45), int(height * 0.75)),
                  (120, 125, 130), -1)  # wall
    cv2.rectangle(img, (int(width * 0.2), int(height * 0.4)), (int(width * 0.28), int(height * 0.75)),
                  (60, 70, 80), -1)  # door
    noise = rng.integers(-12, 12, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def draw_figure(img: np.ndarray, x: int, colour: tuple[int, int, int] = (30, 30, 200)) -> None:
    """A person-like shape: head, shirt (in ``colour``), legs."""
    h = img.shape[0]
    top = int(h * 0.42)
    scale = h / 720
    cv2.circle(img, (x, top), int(22 * scale), (140, 170, 210), -1)
    cv2.rectangle(img, (x - int(40 * scale), top + int(25 * scale)),
                  (x + int(40 * scale), top + int(150 * scale)), colour, -1)
    cv2.rectangle(img, (x - int(32 * scale), top + int(150 * scale)),
                  (x + int(32 * scale), top + int(260 * scale)), (60, 50, 40), -1)


def make_clip(path: Path | str, *, seconds: float = 20.0, size: tuple[int, int] = (1280, 720),
              fps: float = 25.0,
              red: tuple[float, float] | list[tuple[float, float]] | None = (5.0, 12.0),
              passerby: bool = True) -> Path:
    """Write an mp4 whose red figure is visible for media times t with start <= t < end,
    for the interval ``red`` (or each of a list of them). Without ``passerby`` nothing
    else moves: a quiet scene."""
    spans = [] if red is None else [red] if isinstance(red, tuple) else red
    path = Path(path)
    width, height = size
    base = scene(width, height)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    try:
        for i in range(round(seconds * fps)):
            t = i / fps
            frame = base.copy()
            # A grey passer-by who is never red: the model must not see red in it.
            if passerby:
                draw_figure(frame, int(width * (0.9 - 0.03 * t)) % width, (110, 110, 110))
            for start, end in spans:
                if start <= t < end:
                    draw_figure(frame, int(width * 0.55 + 8 * (t - start) * width / 1280))
            writer.write(frame)
    finally:
        writer.release()
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "samples/demo.mp4")
    out.parent.mkdir(parents=True, exist_ok=True)
    make_clip(out)
    print(f"wrote {out}: 20 s, 1280x720, a person in a red shirt from 5 s to 12 s")
