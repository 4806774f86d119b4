"""A live camera's capture thread (PyAV): always the newest frame, or visibly down.

Each ``LiveReader`` owns one thread and one FFmpeg demuxer and decoder, and
nothing else touches them: opened, read and closed in that thread only.
Options and timeouts go to each open separately (``av.open(options=...,
timeout=...)``), so one camera's open never waits on another's: a hung
camera costs only its own timeout. (OpenCV takes its FFmpeg options from one
process-wide environment variable, which forced every open in the process
under one lock: with 100 cameras they came up one a second, and a hung
camera held up every other open and reconnect by its whole timeout.)

The reader demuxes continuously and keeps only the newest frame: a camera's
socket and decoder buffers would otherwise hand back frames seconds old. No
frame for ``frozen_after_s`` means the stream is frozen; any failure reopens
it with capped exponential backoff and jitter.

Reads are bounded by FFmpeg's own socket timeout, not PyAV's read timeout:
PyAV checks its timeout in an interrupt callback that takes the GIL, and FFmpeg
calls it on every socket read (two per RTP packet over TCP). With 50 cameras
that was 23,000 context switches a second and 0.25 CPU-s per camera-minute,
40% of the capture's cost. PyAV's timeout still bounds the open.

Decoding only keyframes costs ~10x less CPU than every frame, but gives one
frame per GOP. With PyAV the packets in between are not even handed to the
decoder, and the keyframes are decoded without the deblocking filter. In
``auto`` mode the reader starts with keyframes only, measures the keyframe
interval, and switches to decoding every frame when the interval is longer
than the sampling interval.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import av
import numpy as np

from monitor.backoff import backoff_delay
from monitor.sources.base import Frame, Image, Yuv
from monitor.sources.clips import ClipDesk, ClipDone, ClipOrder, Held
from monitor.sources.rtsp import diagnose
from monitor.urls import split_url

DecodeMode = Literal["auto", "keyframes", "all"]


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


# The longest one socket read waits. A frozen camera may still send RTCP reports
# (every 2.5-7.5 s): a read waiting longer than that would never time out, and the
# reader could not notice the freeze. A read that times out is not an error by itself.
IO_TIMEOUT_S = 3.0


def open_options(url: str, transport: str, io_timeout_s: float = IO_TIMEOUT_S) -> dict[str, str]:
    """FFmpeg's options for one camera. Pure."""
    parts = split_url(url)
    micros = str(round(io_timeout_s * 1_000_000))
    options = {
        # A camera's SDP carries its parameters: a smaller probe than FFmpeg's default
        # (5 MB, 5 s) buffers less per camera before the first frame.
        "probesize": "500000",
        "analyzeduration": "1000000",
    }
    if parts is not None and parts.scheme in ("rtsp", "rtsps"):
        options["rtsp_transport"] = transport
        options["buffer_size"] = "1048576"  # the socket buffer of a UDP session
        options["timeout"] = micros  # the RTSP demuxer's socket timeout (connect and reads)
    else:
        options["rw_timeout"] = micros  # any other protocol's
    return options


@dataclass(frozen=True, slots=True)
class Latest:
    seq: int
    taken: float  # time.monotonic() when decoded
    wall: datetime
    frame: Image
    full: Callable[[], Frame] | None = None  # the decoded frame at the camera's size, on demand
    lag: float = 0.0  # how far the capture ran behind the camera when this frame was decoded (s)


SWITCH = "switch to decoding every frame"


class Frozen(Exception):
    """No packet for frozen_after_s, though the connection is open."""

# What the reader tells its owner, from its own thread: ("up", reason),
# ("down", reason), ("reconnect", ""), ("decode", description).
Tell = Callable[[str, str], None]
# The size to hold a frame of the given width and height at.
Scale = Callable[[int, int], tuple[int, int]]


class LiveReader:
    REFRESH_S = 0.2  # the most a held frame ages before a newer one is converted

    def __init__(self, url: str, name: str, *, interval: float, decode: DecodeMode = "auto",
                 transport: str = "tcp", open_timeout_s: float = 10.0, frozen_after_s: float = 10.0,
                 scale_to: Scale | None = None, report: Tell = lambda kind, detail: None,
                 keep_full: bool = False, clips: ClipDesk | None = None) -> None:
        self.url = url
        self.clips = clips  # the camera's last seconds of packets, for evidence clips
        # Also keep the decoded frame itself (YUV, ~1.4 MB at 720p), for a second look at
        # the camera's own resolution; it is converted only when asked for.
        self.keep_full = keep_full
        # Frames are scaled to the model's size as they are converted (one swscale pass) and
        # held as decoded, YUV 4:2:0 (a 720p frame held as BGR is 2.7 MB; at 644x364 in YUV,
        # 0.35 MB), so the preprocess has neither a resize nor a colour conversion left to do.
        # None keeps the camera's own size, in BGR.
        self.scale_to = scale_to
        self.interval = interval
        self.decode = decode
        self.transport = transport
        self.open_timeout_s = open_timeout_s
        self.frozen_after_s = frozen_after_s
        self.report = report
        self.connected_at: float | None = None  # monotonic time of the very first frame
        self.received = 0  # bytes of video received, all connections together
        self.lag = Lag()
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

    def clip(self, order: ClipOrder, report: Callable[[ClipDone], None]) -> None:
        """Write a clip (from any thread); ``report`` hears, from another thread, how it went."""
        if self.clips is None:
            report(ClipDone(order.key, order.path, False, note="clips are off for this camera"))
        else:
            self.clips.order(order, report)

    def _run(self) -> None:
        # auto: keyframes only until the probe has measured the keyframe interval, once.
        self._mode: Literal["keyframes", "all"] | None = None if self.decode == "auto" else self.decode
        attempt = 0
        last_down: str | None = None
        while not self._stop.is_set():
            up, reason = self._session()
            if self.clips is not None:
                self.clips.end(None, reason)  # orders no connection can serve now fail
            if self._stop.is_set():
                return
            if reason == SWITCH:
                continue  # reopen at once in the new mode; the stream is not down
            if up:
                attempt, last_down = 0, None
            if up or reason != last_down:  # the same failure again is not news
                self.report("down", reason)
                last_down = reason
            self.report("reconnect", "")
            # Capped at 10 s: a camera back from a reboot is seen within ~10 s, and a
            # dead one costs a TCP connect every 5-10 s, which is nothing.
            self._stop.wait(backoff_delay(attempt, 1.0, 10.0))
            attempt += 1

    def _session(self) -> tuple[bool, str]:
        """One connection, until it fails or we stop: (whether it was up, why it ended)."""
        io_timeout = min(IO_TIMEOUT_S, self.open_timeout_s, self.frozen_after_s)
        try:
            container = av.open(self.url, options=open_options(self.url, self.transport, io_timeout),
                                timeout=(self.open_timeout_s, None))
        except (av.FFmpegError, OSError, ValueError):
            # FFmpeg's message holds the URL, credentials and all: never shown.
            return False, "cannot open: " + diagnose(self.url, min(self.open_timeout_s, 5.0))
        try:
            if not container.streams.video:
                return False, "the stream has no video track"
            return self._receive(container, container.streams.video[0])
        finally:
            if self.clips is not None and container.streams.video:
                self.clips.end(container.streams.video[0], "the connection ended")
            container.close()

    def _receive(self, container: Any, stream: Any) -> tuple[bool, str]:
        """Demux the stream, decode what is needed, hold the newest frame; how it ended."""
        keyframes = self._mode != "all"
        ctx: Any = stream.codec_context
        ctx.thread_count = 1  # one decoder thread per camera costs the least CPU
        if keyframes:
            ctx.skip_frame = "NONKEY"
            # A keyframe decoded alone is referenced by nothing we decode, so skipping the
            # deblocking filter leaves no error to spread: ~40% of a camera's keyframe decode
            # (720p: 2.3 → 1.4 ms), for a picture 48–51 dB from the filtered one at a camera's
            # bitrate, less than the model's JPEG changes it (44–45 dB); ~40 dB at a starved
            # one. Never with every frame decoded: P-frames would drift from their references.
            ctx.options = {"skip_loop_filter": "all"}
        probe = None if self._mode else KeyframeProbe(self.interval)
        up, converted = False, 0.0
        self.lag.restart()
        base = float(stream.time_base or 0)
        try:
            for packet in self._packets(container, stream):
                if self._stop.is_set():
                    return up, "stopped"
                now = time.monotonic()
                self.received += packet.size
                if self.clips is not None and packet.size:
                    self.clips.packet(Held(time.time(), packet.is_keyframe, packet.size, packet), stream)
                if packet.pts is not None and base:
                    self.lag.packet(now, packet.pts * base)
                if packet.size == 0 or (keyframes and not packet.is_keyframe):
                    continue  # keyframes only: the others are not even decoded
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    continue  # one undecodable packet is not a dead stream
                if not frames:
                    continue
                # Convert only when the frame we hold is older than REFRESH_S: a
                # third less CPU when every frame is decoded, and still fresh.
                if not keyframes and now - converted < self.REFRESH_S:
                    continue
                self._hold(self._convert(frames[-1]), now, frames[-1] if self.keep_full else None)
                converted = now
                if not up:
                    up = True
                    self.report("up", "receiving frames")
                if probe is not None and (mode := probe.add(now)) is not None:
                    gop = probe.keyframe_interval or 0.0
                    probe, self._mode = None, mode  # decided once: no more per-frame work
                    self.report("decode", f"{mode} (keyframe every {gop:.1f} s)")
                    if mode == "all":
                        return up, SWITCH
        except Frozen:
            return up, f"no frame for {self.frozen_after_s:g} s (frozen)"
        except (av.FFmpegError, OSError):
            pass
        return up, "the stream closed or ended"

    def _packets(self, container: Any, stream: Any) -> Iterator[Any]:
        """The stream's packets, the demux resumed after a read that waited IO_TIMEOUT_S.
        Frozen once none came for frozen_after_s; ends when the stream does or we stop."""
        last = time.monotonic()
        while True:
            try:
                for packet in container.demux(stream):
                    last = time.monotonic()
                    yield packet
                return
            except TimeoutError:
                if self._stop.is_set():
                    return
                if time.monotonic() - last >= self.frozen_after_s:
                    raise Frozen from None

    def _convert(self, frame: av.VideoFrame) -> Image:
        if self.scale_to is None:
            return np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
        width, height = self.scale_to(frame.width, frame.height)
        # Full range (yuvj420p): the JPEG's own, so its planes are encoded as they are.
        return Yuv(np.asarray(frame.reformat(width=width & ~1, height=height & ~1, format="yuvj420p",
                                             interpolation="AREA").to_ndarray(), np.uint8))

    def _hold(self, image: Image, now: float, decoded: av.VideoFrame | None = None) -> None:
        """Hold the newest frame for ``latest()`` (a capture worker writes it to shared memory)."""
        if self.connected_at is None:
            self.connected_at = now
        full = None
        if decoded is not None:
            def full() -> Frame:
                return np.asarray(decoded.to_ndarray(format="bgr24"), np.uint8)
        with self._lock:
            seq = self._latest.seq + 1 if self._latest else 1
            self._latest = Latest(seq, now, datetime.now(UTC), image, full,
                                  self.lag.seconds)


class Lag:
    """How far a connection's capture runs behind its camera, from packet timestamps. Pure.

    The camera sends in real time, so ``arrival - media time`` is constant while
    the reader keeps up; it grows by however far the reader falls behind. The
    smallest difference seen in the connection is the reference (the first
    packets may come in a burst, or late).
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._reference: float | None = None

    def restart(self) -> None:
        self._reference = None
        self.seconds = 0.0

    def packet(self, arrived: float, media: float) -> None:
        offset = arrived - media
        if self._reference is None or offset < self._reference:
            self._reference = offset
        self.seconds = offset - self._reference
