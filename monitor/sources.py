"""Video files, read by media time; and what every source hands on: a Sample.

Decoding blocks, so it runs in a worker thread and the event loop only ever
awaits it. A file is sampled at one frame per interval of *media* time, as
fast as the consumer takes samples. Live streams are in ``monitor.live``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np

from monitor.preprocess import Frame

# Our own one-line errors replace OpenCV's warnings ("can't be used to capture by name").
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "http", "https", "udp", "srt", "tcp"})


class SourceError(Exception):
    """A source that cannot be read, phrased for the user (never holding credentials)."""


@dataclass(frozen=True, slots=True)
class Sample:
    index: int  # 0, 1, 2, … per source
    offset: float  # seconds into the file; seconds since connect for a live stream
    wall: datetime  # UTC time the frame was taken
    frame: Frame
    captured: float  # time.monotonic() when decoded: frame age is measured from here


def is_live(url: str) -> bool:
    return urlsplit(url).scheme.lower() in LIVE_SCHEMES


def file_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    return Path(url)


class MediaClock:
    """Picks the first frame at or after each multiple of the interval. Pure.

    Frames whose timestamps skip several intervals (a gap in the media) give
    one sample, not a burst.
    """

    EPSILON = 1e-3  # timestamps in ms land a hair off exact multiples

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_due = 0.0

    def due(self, t: float) -> bool:
        if t + self.EPSILON < self.next_due:
            return False
        self.next_due = (math.floor((t + self.EPSILON) / self.interval) + 1) * self.interval
        return True


def open_params(timeout_s: float) -> list[int]:
    # One decoder thread per stream costs the least CPU (FACTS.md); timeouts only
    # work as open parameters, never via cap.set() afterwards.
    ms = int(timeout_s * 1000)
    return [cv2.CAP_PROP_N_THREADS, 1, cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]


class FileReader:
    """Blocking reader of one video file; call it from a worker thread."""

    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.clock = MediaClock(interval)
        self.frames = 0
        self._cap: cv2.VideoCapture | None = None
        self._fps = 0.0

    def open(self) -> None:
        if not self.path.exists():
            raise SourceError(f"no such file: {self.path}")
        if not self.path.is_file():
            raise SourceError(f"not a regular file: {self.path}")
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, open_params(10.0))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open as a video (corrupt or unsupported): {self.path}")
        self._cap = cap
        self._fps = cap.get(cv2.CAP_PROP_FPS) or 0.0

    def next(self) -> tuple[float, Frame] | None:
        """The next sampled frame and its media time, or None at the end."""
        cap = self._cap
        if cap is None:
            raise RuntimeError("FileReader.next() before open()")
        while cap.grab():
            self.frames += 1
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if t <= 0 and self.frames > 1 and self._fps > 0:
                t = (self.frames - 1) / self._fps  # containers without timestamps
            if not self.clock.due(t):
                continue
            ok, frame = cap.retrieve()
            if ok and frame is not None:
                return round(t, 3), np.asarray(frame, np.uint8)
        if self.frames == 0:
            raise SourceError(f"no decodable frames (corrupt or unsupported): {self.path}")
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


async def file_samples(url: str, interval: float, *, realtime: bool = False,
                       stop: asyncio.Event | None = None) -> AsyncIterator[Sample]:
    """Samples of a video file, one per interval of media time. Raises SourceError."""
    reader = FileReader(file_path(url), interval)
    await asyncio.to_thread(reader.open)
    try:
        started = time.monotonic()
        index = 0
        while stop is None or not stop.is_set():
            item = await asyncio.to_thread(reader.next)
            if item is None:
                return
            offset, frame = item
            if realtime:
                await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
            yield Sample(index, offset, datetime.now(UTC), frame, time.monotonic())
            index += 1
    finally:
        await asyncio.to_thread(reader.close)
