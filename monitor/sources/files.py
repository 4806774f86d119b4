"""Video files, read by media time.

Decoding blocks, so it runs in a worker thread and the event loop only ever
awaits it. A file is sampled at one frame per interval of *media* time, as
fast as the consumer takes samples.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import av
import cv2
import numpy as np

from monitor import logs
from monitor.sources.base import Frame, Sample, SourceError
from monitor.urls import file_path

# A recording's frames are refused past this size, before any is decoded: one 8192x8192
# H.264 frame (a 198 KB file) took 1.2 GB to decode and convert. 8K still passes.
MAX_PIXELS = 7680 * 4320

# Our own one-line errors replace OpenCV's warnings ("can't be used to capture by name").
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


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
    # One decoder thread per stream costs the least CPU (more threads lower wall time,
    # not CPU: 4.6 CPU-s per 1080p stream-minute with one thread); timeouts only
    # work as open parameters, never via cap.set() afterwards.
    ms = int(timeout_s * 1000)
    return [cv2.CAP_PROP_N_THREADS, 1, cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]


class FileReader:
    """Blocking reader of one video file; call it from worker threads.

    A capture must never be released while another thread is inside its
    grab() or read(): FFmpeg frees the decoder under it and the process dies
    (SIGSEGV, seen when a stop came during the decode of an 8K frame). So the
    capture is used only under ``_lock``; ``close`` asks a running ``next`` to
    stop at its next frame and releases the capture once it has returned.
    """

    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.clock = MediaClock(interval)
        self.frames = 0
        self.timing_note: str | None = None  # set when the media has no timestamps of its own
        self._cap: cv2.VideoCapture | None = None
        self._fps = 0.0
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def open(self) -> None:
        if not self.path.exists():
            raise SourceError(f"no such file: {self.path}")
        if not self.path.is_file():
            raise SourceError(f"not a regular file: {self.path}")
        with self._lock:
            if self._closing.is_set():
                return
            cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, open_params(10.0))
            if not cap.isOpened():
                cap.release()
                raise SourceError(f"cannot open as a video (corrupt or unsupported): {self.path}")
            width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            if (why := too_large(width, height, MAX_PIXELS)) is not None:
                cap.release()
                raise SourceError(f"{self.path.name}: {why}")
            self._cap = cap
            self._fps = cap.get(cv2.CAP_PROP_FPS) or 0.0

    def next(self) -> tuple[float, Frame] | None:
        """The next sampled frame and its media time, or None at the end (or once closed)."""
        with self._lock:
            cap = self._cap
            if cap is None:
                return None
            while not self._closing.is_set() and cap.grab():
                self.frames += 1
                t = self._media_time(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
                if not self.clock.due(t):
                    continue
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    return round(t, 3), np.asarray(frame, np.uint8)
            if self.frames == 0 and not self._closing.is_set():
                raise SourceError(f"no decodable frames (corrupt or unsupported): {self.path}")
            return None

    def _media_time(self, t: float) -> float:
        if t > 0 or self.frames == 1:
            return t
        # A container without timestamps: only its stated frame rate can place the frame.
        if self._fps <= 0:
            raise SourceError(f"the video has no timestamps and no frame rate, so its seconds "
                              f"cannot be told: {self.path}")
        self.timing_note = f"the video has no timestamps; timed by its stated {self._fps:g} frames/s"
        return (self.frames - 1) / self._fps

    def close(self) -> None:
        self._closing.set()
        with self._lock:  # waits for a next() in progress to return
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
            if reader.timing_note is not None and index == 1:
                logs.get("monitor.source").warning(reader.timing_note)
            if realtime:
                await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
            yield Sample(index, offset, datetime.now(UTC), frame, time.monotonic())
            index += 1
    finally:
        await asyncio.to_thread(reader.close)


def too_large(width: int, height: int, max_pixels: int) -> str | None:
    """Why frames of this size are refused, or None. Pure."""
    if width * height <= max_pixels:
        return None
    return f"its frames are {width}x{height}, larger than the {max_pixels / 1e6:.1f} megapixels allowed"


def probe_video(path: Path, max_pixels: int = MAX_PIXELS) -> float | None:
    """Check that the file is a video with a decodable frame of at most ``max_pixels``; its
    length in seconds, if stated. The size is read from the stream's header, before a frame
    is decoded.

    Raises SourceError in one line (a text file renamed .mp4, a truncated upload).
    """
    try:
        with av.open(str(path), timeout=10.0) as container:
            if not container.streams.video:
                raise SourceError("the file has no video stream")
            stream = container.streams.video[0]
            if (why := too_large(stream.codec_context.width, stream.codec_context.height,
                                 max_pixels)) is not None:
                raise SourceError(why)
            for _ in container.decode(stream):
                break
            else:
                raise SourceError("the file has no decodable video frames")
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return container.duration / 1e6 if container.duration else None
    except (av.FFmpegError, UnicodeDecodeError, ValueError):
        raise SourceError("not a video that can be read (unknown format, or corrupt)") from None
