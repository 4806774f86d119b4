"""Live streams (RTSP, HTTP MJPEG, HLS): always the newest frame, or visibly down.

A ``LiveReader`` thread keeps one capture open and drained, keeping only the
newest frame (a camera's socket and decoder buffers would otherwise hand back
frames seconds old). Reads time out, so a camera that keeps the session open
but stops sending is "down" after ``frozen_after_seconds``; any failure
reopens the capture with capped exponential backoff and jitter.

Decoding only keyframes costs ~10x less CPU (FACTS.md), but gives one frame per
GOP: in ``auto`` mode the reader starts with keyframes only, measures the
keyframe interval, and switches to decoding every frame when the interval is
longer than the sampling interval.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import cv2
import numpy as np

from monitor.backoff import backoff_delay
from monitor.sources.base import Frame, Sample
from monitor.sources.files import open_params
from monitor.urls import DEFAULT_PORTS, split_url

DecodeMode = Literal["auto", "keyframes", "all"]

# OpenCV reads its FFmpeg options from one process-wide variable at open time,
# so setting it and opening happen under one lock.
_OPEN_LOCK = threading.Lock()
_OPTIONS_VAR = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def capture_options(url: str, transport: str, keyframes_only: bool) -> str:
    """OpenCV's FFmpeg options for one stream. Pure.

    Setting the variable at all drops OpenCV's own TCP default for RTSP, so
    the transport is always written out.
    """
    options = []
    parts = split_url(url)
    if parts is not None and parts.scheme in ("rtsp", "rtsps"):
        options.append(f"rtsp_transport;{transport}")
    if keyframes_only:
        options.append("avdiscard;nonkey")
    return "|".join(options)


def open_capture(url: str, options: str, timeout_s: float, read_timeout_s: float) -> cv2.VideoCapture:
    params = open_params(timeout_s)
    params[-1] = int(read_timeout_s * 1000)  # the read timeout is the frozen-stream watchdog
    with _OPEN_LOCK:
        saved = os.environ.get(_OPTIONS_VAR)
        os.environ[_OPTIONS_VAR] = options
        try:
            return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        finally:
            if saved is None:
                del os.environ[_OPTIONS_VAR]
            else:
                os.environ[_OPTIONS_VAR] = saved


def diagnose(url: str, timeout_s: float = 5.0) -> str:
    """Why a stream would not open, in words that hold no credentials.

    OpenCV only says "not opened"; for RTSP one DESCRIBE tells a wrong path
    (404) from wrong credentials (401) from a dead host.
    """
    parts = split_url(url)
    if parts is None or not parts.host:
        return "the URL has no host"
    if parts.port_error:
        return "the URL's port is not a number"
    host, scheme = parts.host, parts.scheme
    port = parts.port or DEFAULT_PORTS.get(scheme, 554)
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    except OSError as e:
        return f"cannot connect to {host}:{port} ({e.strerror or type(e).__name__})"
    with sock:
        if scheme != "rtsp":
            return "the server accepted the connection but sent no usable video"
        clean = f"rtsp://{host}:{port}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
        request = f"DESCRIBE {clean} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n"
        if parts.username is not None:
            creds = f"{parts.username}:{parts.password or ''}"
            request += f"Authorization: Basic {base64.b64encode(creds.encode()).decode()}\r\n"
        try:
            sock.settimeout(timeout_s)
            sock.sendall((request + "\r\n").encode())
            status_line = sock.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
        except OSError:
            return f"{host}:{port} accepted the connection but did not answer RTSP"
    fields = status_line.split(" ", 2)
    code = fields[1] if len(fields) > 1 else ""
    if code == "401":
        return "401 Unauthorized: check the user name and password"
    if code == "404":
        return "404 Not Found: check the stream path"
    if code == "200":
        return "the camera answers, but its video could not be opened or decoded"
    return f"the server answered {status_line[:60]!r}"


@dataclass
class KeyframeProbe:
    """Decides from keyframe arrival times whether keyframes alone sample often enough. Pure.

    The first frames of a connection may arrive in a burst, so the first gap is
    ignored and the median of the next few decides.
    """

    interval: float
    gaps_needed: int = 4
    _times: list[float] = field(default_factory=list)

    def add(self, t: float) -> Literal["keyframes", "all"] | None:
        self._times.append(t)
        gaps = [b - a for a, b in zip(self._times[1:], self._times[2:], strict=False)]
        if len(gaps) < self.gaps_needed:
            return None
        return "keyframes" if statistics.median(gaps) <= self.interval * 1.2 else "all"

    @property
    def keyframe_interval(self) -> float | None:
        gaps = [b - a for a, b in zip(self._times[1:], self._times[2:], strict=False)]
        return statistics.median(gaps) if gaps else None


@dataclass(frozen=True, slots=True)
class Latest:
    seq: int
    taken: float  # time.monotonic() when decoded
    wall: datetime
    frame: Frame


# What the reader tells its owner, from its own thread: ("up", reason),
# ("down", reason), ("reconnect", ""), ("decode", description).
Report = Callable[[str, str], None]


class LiveReader:
    REFRESH_S = 0.2  # the most a held frame ages before a newer one is converted

    def __init__(self, url: str, name: str, *, interval: float, decode: DecodeMode = "auto",
                 transport: str = "tcp", open_timeout_s: float = 10.0, frozen_after_s: float = 10.0,
                 report: Report = lambda kind, detail: None) -> None:
        self.url = url
        self.interval = interval
        self.decode = decode
        self.transport = transport
        self.open_timeout_s = open_timeout_s
        self.frozen_after_s = frozen_after_s
        self.report = report
        self.connected_at: float | None = None  # monotonic time of the very first frame
        self._latest: Latest | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def latest(self) -> Latest | None:
        with self._lock:
            return self._latest

    def _run(self) -> None:
        keyframes = self.decode in ("auto", "keyframes")
        decided = self.decode != "auto"
        attempt, seq = 0, 0
        last_down: str | None = None
        while not self._stop.is_set():
            options = capture_options(self.url, self.transport, keyframes)
            cap = open_capture(self.url, options, self.open_timeout_s, self.frozen_after_s)
            up, switch = False, False
            reason = ""
            try:
                if not cap.isOpened():
                    reason = "cannot open: " + diagnose(self.url, min(self.open_timeout_s, 5.0))
                else:
                    probe = None if decided else KeyframeProbe(self.interval)
                    retrieved = 0.0
                    while not self._stop.is_set():
                        asked = time.monotonic()
                        ok = cap.grab()  # decodes; the BGR conversion is retrieve()'s
                        now = time.monotonic()
                        if not ok:
                            # A read that waited out its timeout met a stalled stream; one
                            # that failed at once met a closed connection or the end.
                            reason = (f"no frame for {self.frozen_after_s:g} s (frozen)"
                                      if now - asked >= self.frozen_after_s * 0.9
                                      else "the stream closed or ended")
                            break
                        # Convert only when the frame we hold is older than REFRESH_S: a
                        # third less CPU when every frame is decoded, and still fresh.
                        if not keyframes and now - retrieved < self.REFRESH_S:
                            continue
                        ok, frame = cap.retrieve()
                        if not ok or frame is None:
                            continue  # one undecodable frame is not a dead stream
                        retrieved = now
                        if self.connected_at is None:
                            self.connected_at = now
                        seq += 1
                        with self._lock:
                            self._latest = Latest(seq, now, datetime.now(UTC), np.asarray(frame, np.uint8))
                        if not up:
                            up, attempt, last_down = True, 0, None
                            self.report("up", "receiving frames")
                        if probe is not None and (mode := probe.add(now)) is not None:
                            gop = probe.keyframe_interval or 0.0
                            decided, probe = True, None  # decided once: no more per-frame work
                            self.report("decode", f"{mode} (keyframe every {gop:.1f} s)")
                            if mode == "all":
                                keyframes, switch = False, True
                                break
            finally:
                cap.release()
            if self._stop.is_set():
                return
            if switch:
                continue  # reopen at once in the new mode; the stream is not down
            if up or reason != last_down:
                self.report("down", reason)
                last_down = reason
            self.report("reconnect", "")
            self._stop.wait(backoff_delay(attempt, 1.0, 30.0))
            attempt += 1


@dataclass(frozen=True, slots=True)
class StateChange:
    """What a live source tells its stream, on the event loop.

    ``up`` / ``down`` (with the reason) as they happen; ``reconnect``; ``decode``
    once the decode mode is chosen; ``stream_down`` / ``stream_up`` only past
    the hold-off (those are the ones worth an alert).
    """

    kind: Literal["up", "down", "reconnect", "decode", "stream_down", "stream_up"]
    detail: str


class LiveSource:
    """A live camera: its reader thread, its up/down hold-off and its timer.

    Used as an async context manager: entering starts the reader, leaving stops
    it, cancels the hold-off timer and drops whatever the reader reports after
    that, so a stopped stream never announces anything.
    """

    def __init__(self, url: str, name: str, *, interval: float, decode: DecodeMode,
                 transport: str, open_timeout_s: float, frozen_after_s: float,
                 down_alert_after_s: float, on_change: Callable[[StateChange], None]) -> None:
        self.interval = interval
        self._on_change = on_change
        self._availability = Availability(down_alert_after_s)
        self._holdoff = down_alert_after_s
        self._down_reason = ""
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.reader = LiveReader(url, name, interval=interval, decode=decode, transport=transport,
                                 open_timeout_s=open_timeout_s, frozen_after_s=frozen_after_s,
                                 report=self._from_thread)

    async def __aenter__(self) -> LiveSource:
        self._loop = asyncio.get_running_loop()
        self.reader.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.reader.stop()
        await asyncio.to_thread(self.reader.join, 15.0)

    def _from_thread(self, kind: str, detail: str) -> None:
        if self._loop is not None and not self._closed:
            self._loop.call_soon_threadsafe(self._apply, kind, detail)

    def _apply(self, kind: str, detail: str) -> None:  # on the event loop
        if self._closed:
            return
        assert self._loop is not None
        if kind in ("reconnect", "decode"):
            self._on_change(StateChange(kind, detail))  # type: ignore[arg-type]
            return
        up = kind == "up"
        if up and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not up:
            self._down_reason = detail
            if self._timer is None:  # the hold-off runs from the first "down"
                self._timer = self._loop.call_later(self._holdoff, self._poll)
        self._on_change(StateChange("up" if up else "down", detail))
        self._announce(self._availability.update(up, self._loop.time()))

    def _poll(self) -> None:
        self._timer = None
        if not self._closed and self._loop is not None:
            self._announce(self._availability.poll(self._loop.time()))

    def _announce(self, event: str | None) -> None:
        if event == "stream_up":
            self._on_change(StateChange("stream_up", "receiving frames"))
        elif event == "stream_down":
            self._on_change(StateChange("stream_down", self._down_reason))

    async def samples(self, stop: asyncio.Event,
                      on_skipped: Callable[[int], None] = lambda n: None) -> AsyncIterator[Sample]:
        """One sample per interval of wall time: the newest frame, if it is new and fresh.

        A newest frame older than two intervals means the stream stalled: nothing
        is sampled then. Intervals that passed while the consumer was busy are
        reported to ``on_skipped``: those frames were not analysed late, but never.
        """
        reader, interval = self.reader, self.interval
        loop = asyncio.get_running_loop()
        next_due = loop.time()
        last_seq = 0
        index = 0
        while not stop.is_set():
            delay = next_due - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    return
                except TimeoutError:
                    pass
            missed = int((loop.time() - next_due) // interval)
            if missed > 0:
                on_skipped(missed)
            next_due += (missed + 1) * interval
            latest = reader.latest()
            if latest is None or latest.seq == last_seq:
                continue
            if time.monotonic() - latest.taken > 2 * interval:
                continue
            last_seq = latest.seq
            base = reader.connected_at or latest.taken
            yield Sample(index, round(latest.taken - base, 3), latest.wall, latest.frame, latest.taken)
            index += 1

    def newest(self, sample: Sample) -> Sample:
        """The sample with the newest frame, if a newer one has arrived since it was taken."""
        latest = self.reader.latest()
        if latest is None or latest.taken <= sample.captured:
            return sample
        base = self.reader.connected_at or latest.taken
        return Sample(sample.index, round(latest.taken - base, 3), latest.wall, latest.frame,
                      latest.taken)


class Availability:
    """Turns a stream's raw up/down flaps into stream_down / stream_up events. Pure.

    ``stream_down`` is raised only once the stream has been down for
    ``holdoff`` seconds, and ``stream_up`` only after a ``stream_down``, so a
    camera that blips for a second, or flaps, does not flood the sinks.
    """

    def __init__(self, holdoff: float) -> None:
        self.holdoff = holdoff
        self.up: bool | None = None
        self._down_since: float | None = None
        self._announced_down = False

    def update(self, up: bool, now: float) -> str | None:
        self.up = up
        if up:
            self._down_since = None
            if self._announced_down:
                self._announced_down = False
                return "stream_up"
            return None
        if self._down_since is None:
            self._down_since = now
        return self.poll(now)

    def poll(self, now: float) -> str | None:
        if (self.up is False and not self._announced_down and self._down_since is not None
                and now - self._down_since >= self.holdoff):
            self._announced_down = True
            return "stream_down"
        return None
