"""CPU cost and image tokens per sampled 1080p frame: ours vs the seed's way, in one run.

    .venv/bin/python -m bench.preprocess [--frames 60]

The seed writes each sampled frame to disk, reads it back, applies CLAHE at
full resolution, writes it again as JPEG q100, reads the file and base64s it.
We resize to the token budget first, CLAHE the small frame and encode in memory.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import tempfile
import time
from collections.abc import Callable, Sized
from pathlib import Path

import cv2
import numpy as np

from monitor.board import THUMB_WIDTH
from monitor.config import DEFAULT_MAX_PIXELS
from monitor.patches import image_tokens, target_size
from monitor.preprocess import prepare, resize
from monitor.scene import thumbnail
from monitor.sources.base import Image, Yuv
from tests.clips import draw_figure, scene


def seed_way(frame: np.ndarray, workdir: Path) -> str:
    path = str(workdir / "frame_5.jpg")
    cv2.imwrite(path, frame)
    img = cv2.imread(path)
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)
    lightness, a, b = cv2.split(lab)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    final = cv2.cvtColor(cv2.merge((clahe.apply(lightness), a, b)), cv2.COLOR_LAB2BGR)
    cv2.imwrite(path, final, [cv2.IMWRITE_JPEG_QUALITY, 100])
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode("utf-8")


def our_way(frame: np.ndarray) -> str:
    return base64.b64encode(prepare(frame, max_pixels=DEFAULT_MAX_PIXELS).jpeg).decode("ascii")


def live_way(frame: Image) -> str:
    thumbnail(frame)
    prepared = prepare(frame, max_pixels=DEFAULT_MAX_PIXELS, thumb_width=THUMB_WIDTH)
    return base64.b64encode(prepared.jpeg).decode("ascii")


def cpu_ms(fn: Callable[[], Sized], n: int) -> tuple[float, int]:
    """Median CPU milliseconds (all threads of this process) of n calls, and the output size."""
    fn()  # warm up
    times = []
    size = 0
    for _ in range(n):
        start = time.process_time()
        size = len(fn())
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times), size


def qwen_tokens(width: int, height: int) -> int:
    """What Qwen2.5-VL spends on an image the server resizes itself (max_pixels default)."""
    return image_tokens(*target_size(width, height, 12_845_056))


def camera_frame() -> np.ndarray:
    """A 1080p scene with a figure in it and a camera's sensor noise."""
    frame = scene(1920, 1080)
    draw_figure(frame, 1100)
    rng = np.random.default_rng(1)
    return np.clip(frame.astype(np.int16) + rng.integers(-6, 7, frame.shape), 0, 255).astype(np.uint8)


def as_live(frame: np.ndarray) -> Yuv:
    """The frame as a capture worker hands it: at the model's size, in the decoder's YUV 4:2:0."""
    small = resize(frame, *target_size(frame.shape[1], frame.shape[0], DEFAULT_MAX_PIXELS))
    return Yuv(np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2YUV_I420), np.uint8))


def clahe_and_jpeg_ms(frames: int = 300) -> float:
    """CPU ms of the least a live sample needs after capture: CLAHE and the model's JPEG
    (nothing else: no thumbnails, no request), on one OpenCV thread, as the daemon runs."""
    cv2.setNumThreads(1)
    yuv = as_live(camera_frame())
    return cpu_ms(lambda: prepare(yuv, max_pixels=DEFAULT_MAX_PIXELS).jpeg, frames)[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    # As the daemon runs (monitor.cli): OpenCV's own threads cost CPU and buy nothing
    # when streams already run in parallel. The seed is measured the same way.
    cv2.setNumThreads(1)
    frame = camera_frame()

    with tempfile.TemporaryDirectory() as tmp:
        seed_ms, seed_bytes = cpu_ms(lambda: seed_way(frame, Path(tmp)), args.frames)
    ours_ms, ours_bytes = cpu_ms(lambda: our_way(frame), args.frames)
    w, h = target_size(1920, 1080, DEFAULT_MAX_PIXELS)
    seed_tokens, ours_tokens = qwen_tokens(1920, 1080), image_tokens(w, h)

    print(f"one sampled 1920x1080 frame, median of {args.frames} (cv2 {cv2.__version__})")
    print(f"{'':24}{'seed':>12}{'vlm-monitor':>14}{'ratio':>9}")
    print(f"{'CPU ms per frame':24}{seed_ms:>12.1f}{ours_ms:>14.1f}{seed_ms / ours_ms:>8.1f}x")
    print(f"{'base64 bytes sent':24}{seed_bytes:>12,}{ours_bytes:>14,}{seed_bytes / ours_bytes:>8.1f}x")
    print(f"{'image tokens':24}{seed_tokens:>12,}{ours_tokens:>14,}{seed_tokens / ours_tokens:>8.1f}x")
    print(f"(ours: {w}x{h}, CLAHE, JPEG q85 in memory; seed: 1920x1080 via disk, JPEG q100)")

    # A live camera's frame as a capture worker hands it: already at the model's size,
    # in BGR (as before) or in the decoder's YUV 4:2:0 (as now); the console's thumbnail too.
    small = resize(frame, w, h)
    yuv = as_live(frame)
    bgr_ms, _ = cpu_ms(lambda: live_way(small), args.frames * 5)
    yuv_ms, _ = cpu_ms(lambda: live_way(yuv), args.frames * 5)
    print(f"a live camera's sample at {w}x{h} (scene thumbnail, CLAHE, JPEG, console thumbnail): "
          f"BGR {bgr_ms:.2f} ms, YUV {yuv_ms:.2f} ms ({bgr_ms / yuv_ms:.2f}x less)")


if __name__ == "__main__":
    main()
