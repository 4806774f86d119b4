"""Evidence clips: a camera's last seconds as the camera sent them, and MP4s cut from them.

The capture already receives every packet of every camera (it decodes only the
keyframes), so keeping the compressed packets of the last few seconds costs
memory, not decoding: ~1.5 MB a camera at 2 Mbit/s for 5 s and one GOP. On an
alert the packets from the keyframe at or before ``first_seen - before`` up to
``first_seen + after`` are written as MP4 without re-encoding (the camera's own
H.264/H.265, remuxed; fragmented, so a browser plays it while it loads).

``PacketRing`` and ``Recording`` are pure (the packets are opaque to them);
``ClipDesk`` is what a capture thread keeps: orders come in from any thread,
and are served from the capture thread, which alone touches the demuxer. The
muxing itself runs in a thread of its own, so a slow disk never holds up
capture.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

# The muxer's options: fragments from each keyframe, the index at the front, so a browser
# plays the file as it loads, and a clip cut short (a full disk) is still playable.
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"


@dataclass(frozen=True, slots=True)
class Held:
    """One compressed packet as received."""

    arrival: float  # wall clock (time.time()) when it came in
    key: bool
    size: int
    packet: Any = None  # the demuxer's packet (av.Packet); opaque here


class PacketRing:
    """The last ``seconds`` of a camera, whole GOPs from a keyframe, at most ``max_bytes``. Pure.

    Held from the newest keyframe at or before ``newest - seconds``, so a clip
    can start that far back on a keyframe. When the bytes bound bites (a camera
    that suddenly sends 20 Mbit/s), the oldest GOPs go first and ``short`` says
    so; a single GOP over the bound is not held at all.
    """

    def __init__(self, seconds: float, max_bytes: int) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.bytes = 0
        self.short = False  # the bound cut what the seconds would have kept
        self._gops: deque[list[Held]] = deque()
        self._gop_bytes: deque[int] = deque()

    def add(self, item: Held) -> None:
        if item.key:
            self._gops.append([item])
            self._gop_bytes.append(item.size)
        elif self._gops:
            self._gops[-1].append(item)
            self._gop_bytes[-1] += item.size
        else:
            return  # nothing before the first keyframe is of use: a clip starts on one
        self.bytes += item.size
        horizon = item.arrival - self.seconds
        while len(self._gops) > 1 and (self._gops[1][0].arrival <= horizon or self.bytes > self.max_bytes):
            self.short = self.short or self._gops[1][0].arrival > horizon
            self._drop()
        if self.bytes > self.max_bytes:  # one GOP alone is over the bound
            self.short = True
            self.clear()

    def _drop(self) -> None:
        self._gops.popleft()
        self.bytes -= self._gop_bytes.popleft()

    def clear(self) -> None:
        self._gops.clear()
        self._gop_bytes.clear()
        self.bytes = 0

    def since(self, start: float) -> list[Held]:
        """Packets from the newest keyframe at or before ``start`` (the oldest held if none is)."""
        first = 0
        for i, gop in enumerate(self._gops):
            if gop[0].arrival <= start:
                first = i
        return [p for gop in list(self._gops)[first:] for p in gop]

    @property
    def oldest(self) -> float | None:
        return self._gops[0][0].arrival if self._gops else None


@dataclass(frozen=True, slots=True)
class ClipOrder:
    """Write the clip from ``start`` to ``end`` (wall clock) to ``path``. Plain data: it crosses
    the socket to a capture worker."""

    key: str  # the alert's id
    start: float
    end: float
    path: str


@dataclass(frozen=True, slots=True)
class ClipDone:
    """What became of an order."""

    key: str
    path: str
    ok: bool
    seconds: float = 0.0  # the clip's duration
    bytes: int = 0
    began: float = 0.0  # wall clock of its first packet
    note: str = ""  # why it failed, or why it is shorter than ordered


@dataclass
class Recording:
    """One order being gathered: the ring's packets from its start, then what arrives. Pure."""

    order: ClipOrder
    max_bytes: int
    packets: list[Held] = field(default_factory=list)
    bytes: int = 0
    note: str = ""

    def add(self, item: Held) -> bool:
        """Take a packet; True once the clip is complete (this packet is past its end)."""
        if item.arrival >= self.order.end:
            return True
        if self.bytes + item.size > self.max_bytes:
            self.tell(f"cut at {self.max_bytes / 1e6:.1f} MB: the camera sent more than clips allow")
            return True
        self.packets.append(item)
        self.bytes += item.size
        return False

    def tell(self, why: str) -> None:
        """Say why the clip is shorter than ordered (every reason, in the order they came)."""
        self.note = f"{self.note}; {why}" if self.note else why

    def extend(self, items: Iterable[Held]) -> bool:
        return any(self.add(item) for item in items)


Report = Callable[[ClipDone], None]


class ClipDesk:
    """A capture thread's clips: the ring, the orders waiting, the recordings under way.

    ``order`` is called from any thread; everything else from the capture thread.
    """

    def __init__(self, hold_s: float, max_bytes_per_s: float) -> None:
        # hold_s: a clip's seconds before the target appeared, and how long the alert may take
        # to be raised after that; bytes: two seconds more, for the GOP it starts in.
        self.max_bytes_per_s = max_bytes_per_s
        self.ring = PacketRing(hold_s, int(max_bytes_per_s * (hold_s + 2)))
        self._orders: list[tuple[ClipOrder, Report]] = []
        self._lock = threading.Lock()
        self._recordings: list[tuple[Recording, Report]] = []

    def order(self, order: ClipOrder, report: Report) -> None:
        with self._lock:
            self._orders.append((order, report))

    def packet(self, item: Held, template: Any) -> None:
        """A packet came in (``template``: the input stream, whose parameters the clip copies)."""
        self.ring.add(item)
        if self._orders:
            with self._lock:
                orders, self._orders = self._orders, []
            for order, report in orders:
                self._start(order, report, template)
        if self._recordings:
            ongoing = []
            for rec, report in self._recordings:
                if rec.add(item):
                    self._finish(rec, report, template)
                else:
                    ongoing.append((rec, report))
            self._recordings = ongoing

    def _start(self, order: ClipOrder, report: Report, template: Any) -> None:
        held = self.ring.since(order.start)
        length = order.end - order.start + 2
        rec = Recording(order, int(self.max_bytes_per_s * length))
        oldest = held[0].arrival if held else None
        if oldest is not None and oldest > order.start + 0.5:
            why = ("the camera sent more than clips hold" if self.ring.short
                   else "the camera had just connected")
            rec.tell(f"starts {oldest - order.start:.0f} s late: {why}")
        if rec.extend(held):
            self._finish(rec, report, template)
        else:
            self._recordings.append((rec, report))

    def end(self, template: Any, why: str) -> None:
        """The connection ends: recordings under way are written with what they have; orders
        that found no video fail. The ring starts again with the next connection."""
        for rec, report in self._recordings:
            rec.tell(f"ends early: {why}")
            self._finish(rec, report, template)
        self._recordings = []
        self.ring.clear()
        self.ring.short = False
        if template is None:
            with self._lock:
                orders, self._orders = self._orders, []
            for order, report in orders:
                report(ClipDone(order.key, order.path, False, note=f"no video: {why}"))

    def _finish(self, rec: Recording, report: Report, template: Any) -> None:
        if not rec.packets:
            report(ClipDone(rec.order.key, rec.order.path, False, note=rec.note or "no video held"))
            return
        # The output's stream copies the input's parameters now, while the input is open.
        tmp = rec.order.path + ".part"
        try:
            out = av.open(tmp, "w", format="mp4", options={"movflags": MOVFLAGS})
            stream = out.add_stream_from_template(template)
        except (av.FFmpegError, OSError, ValueError) as e:
            report(ClipDone(rec.order.key, rec.order.path, False, note=_why(e)))
            return
        threading.Thread(target=_write, args=(out, stream, rec, tmp, report), daemon=True,
                         name="clip-writer").start()


def _why(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return f"{type(e).__name__}: {e}"[:200]


def _write(out: Any, stream: Any, rec: Recording, tmp: str, report: Report) -> None:
    """In its own thread: mux the packets, timestamps from zero, and put the file in place."""
    order = rec.order
    try:
        seconds = mux(out, stream, [h.packet for h in rec.packets])
        out.close()
        os.replace(tmp, order.path)
        size = os.path.getsize(order.path)
    except Exception as e:  # whatever it is, the daemon hears that the clip failed
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            out.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        report(ClipDone(order.key, order.path, False, note=_why(e)))
        return
    report(ClipDone(order.key, order.path, True, seconds, size, rec.packets[0].arrival, rec.note))


def mux(out: Any, stream: Any, packets: list[Any]) -> float:
    """Copies of ``packets`` into ``out``'s ``stream``, shifted to start at zero; the duration."""
    # A camera's first packets after a connect may carry no timestamp yet: the clip starts at
    # the first keyframe that has one.
    start = next((i for i, p in enumerate(packets) if p.pts is not None and p.is_keyframe), None)
    if start is None:
        raise ValueError("no keyframe with a timestamp")
    timed = [p for p in packets[start:] if p.pts is not None]
    first = timed[0]
    base = first.dts if first.dts is not None else first.pts
    last_dts: int | None = None
    end = 0
    time_base: Fraction | None = None
    for p in timed:
        dts = p.dts if p.dts is not None else p.pts
        if last_dts is not None and dts <= last_dts:
            continue  # the muxer wants rising decode times
        copy = av.Packet(bytes(p))
        copy.pts, copy.dts = p.pts - base, dts - base
        copy.time_base = time_base = p.time_base
        copy.is_keyframe = p.is_keyframe
        copy.stream = stream
        out.mux(copy)
        last_dts = dts
        end = max(end, p.pts - base + (p.duration or 0))
    return float(end * time_base) if time_base else 0.0


def cut(source: str, order: ClipOrder) -> ClipDone:
    """A recording's clip: its packets from the keyframe at or before ``order.start`` to
    ``order.end`` (seconds into the file, here), remuxed. Blocking: run it in a thread."""
    tmp = order.path + ".part"
    try:
        with av.open(source) as inp:
            stream = inp.streams.video[0]
            base = float(stream.time_base or 0)
            if not base:
                return ClipDone(order.key, order.path, False, note="the recording has no timestamps")
            # Seeks to the keyframe at or before the start (FFmpeg seeks backwards by default).
            inp.seek(round(max(0.0, order.start) / base), stream=stream)
            packets: list[Any] = []
            for p in inp.demux(stream):
                if p.pts is None or p.size == 0:
                    continue
                if p.pts * base >= order.end:
                    break
                if packets or p.is_keyframe:
                    packets.append(p)
            if not packets:
                return ClipDone(order.key, order.path, False, note="no video in that part of the recording")
            out = av.open(tmp, "w", format="mp4", options={"movflags": MOVFLAGS})
            try:
                seconds = mux(out, out.add_stream_from_template(stream), packets)
            finally:
                out.close()
        os.replace(tmp, order.path)
        return ClipDone(order.key, order.path, True, seconds, os.path.getsize(order.path),
                        float(packets[0].pts or 0) * base)
    except (av.FFmpegError, OSError, ValueError, IndexError) as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return ClipDone(order.key, order.path, False, note=_why(e))
