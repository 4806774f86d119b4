"""The analysed frame of each alert, kept as a JPEG under the state directory, with the
target's box drawn on it when the model gave one (and, through the same class, each
alert's clip).

Retention by count, age and total size, enforced after every save, oldest first.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np


def with_box(jpeg: bytes, box: tuple[float, float, float, float]) -> bytes:
    """The JPEG with the box (relative to this image) drawn on it; the JPEG as it was if it
    cannot be read."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return jpeg
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    thick = max(2, round(min(w, h) / 150))
    p1, p2 = (round(x1 * w), round(y1 * h)), (round(x2 * w), round(y2 * h))
    cv2.rectangle(image, p1, p2, (0, 0, 0), thick + 2)  # a dark edge: visible on light scenes too
    cv2.rectangle(image, p1, p2, (0, 255, 255), thick)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return buf.tobytes() if ok else jpeg


class Snapshots:
    """One file per alert in a directory, kept by count, age and total size."""

    def __init__(self, directory: Path, *, max_count: int, max_age_s: float, max_bytes: int,
                 suffix: str = ".jpg") -> None:
        self.directory = directory
        self.max_count = max_count
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.suffix = suffix
        self.kept_bytes = 0  # all of them together, as of the last prune
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, alert_id: str) -> Path:
        return self.directory / f"{alert_id}{self.suffix}"

    def save(self, alert_id: str, jpeg: bytes) -> str:
        """Write the JPEG (atomically) and return its file name."""
        final = self.path(alert_id)
        tmp = final.with_suffix(".tmp")
        self.directory.mkdir(parents=True, exist_ok=True)  # someone may have removed it
        tmp.write_bytes(jpeg)
        os.replace(tmp, final)
        self.prune()
        return final.name

    def read(self, name: str) -> bytes | None:
        try:
            return (self.directory / Path(name).name).read_bytes()
        except OSError:
            return None

    def prune(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        files = []
        for p in self.directory.glob(f"*{self.suffix}"):
            try:
                st = p.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        files.sort(reverse=True)  # newest first: keep from the front
        removed, total, kept = 0, 0, 0
        for i, (mtime, size, p) in enumerate(files):
            total += size
            if i >= self.max_count or now - mtime > self.max_age_s or total > self.max_bytes:
                p.unlink(missing_ok=True)
                removed += 1
            else:
                kept += size
        self.kept_bytes = kept
        # What a crash left half-written (a .tmp snapshot, a .part clip) goes after an hour.
        for pattern in ("*.tmp", "*.part"):
            for p in self.directory.glob(pattern):
                try:
                    if now - p.stat().st_mtime > 3600:
                        p.unlink(missing_ok=True)
                except OSError:
                    continue
        return removed
