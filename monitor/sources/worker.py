"""A capture worker: a process that owns a group of cameras' readers.

    python -m monitor.sources.worker FD

Started by ``monitor.sources.pool``; FD is its end of a Unix socket pair.
Every byte a camera sends is received, demuxed and decoded here, outside the
daemon's interpreter: the daemon's event loop no longer shares a GIL with a
hundred capture threads. Each camera's newest frame goes to its shared-memory
slot; only what a camera reports (up, down, reconnect, decode) goes over the
socket. Commands, from the daemon:

    ("open", id, CaptureSpec)   followed by the slot's file descriptor
    ("close", id)               answered by ("closed", id) once its thread ended
    ("clip", id, ClipOrder)     answered by ("clip", id, ClipDone) once written, or not
    ("quit",)

The worker ignores SIGINT and SIGTERM (a Ctrl-C or systemd's stop reaches the
whole process group; the daemon decides when capture ends) and exits when the
daemon's end of the socket closes, so it never outlives the daemon.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle
from typing import Any

import av

from monitor import malloc, sched
from monitor.patches import target_size
from monitor.sources.base import Image, Yuv
from monitor.sources.capture import DecodeMode, LiveReader
from monitor.sources.clips import ClipDesk, ClipDone
from monitor.sources.slot import MAX_PIXELS, FrameSlot, capacity


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """One camera, as a worker opens it (plain data: it crosses the socket)."""

    url: str
    name: str
    interval: float
    decode: DecodeMode
    transport: str
    open_timeout_s: float
    frozen_after_s: float
    # Frames are scaled to the model's budget as they are converted; None (in the daemon's
    # own process only): held at the camera's size, in BGR.
    max_pixels: int | None
    clip_hold_s: float = 0.0  # seconds of packets held for evidence clips (0: none)
    clip_bytes_per_s: float = 0.0  # and at most this many bytes a second of them

    def desk(self) -> ClipDesk | None:
        return ClipDesk(self.clip_hold_s, self.clip_bytes_per_s) if self.clip_hold_s > 0 else None

    @property
    def size(self) -> int:
        """Bytes of the camera's slot."""
        return capacity(self.max_pixels or MAX_PIXELS)


class SlotReader(LiveReader):
    """A reader whose newest frame goes to a shared-memory slot."""

    def __init__(self, spec: CaptureSpec, buffer: mmap.mmap, report: Any) -> None:
        budget = min(spec.max_pixels or MAX_PIXELS, MAX_PIXELS)
        super().__init__(spec.url, spec.name, interval=spec.interval, decode=spec.decode,
                         transport=spec.transport, open_timeout_s=spec.open_timeout_s,
                         frozen_after_s=spec.frozen_after_s, report=report,
                         scale_to=lambda w, h: target_size(w, h, budget), clips=spec.desk())
        self.buffer = buffer
        self.slot = FrameSlot(buffer)
        self.received = self.slot.header()[5]  # a restarted worker continues the count

    def _hold(self, image: Image, now: float, decoded: av.VideoFrame | None = None) -> None:
        if self.connected_at is None:
            self.connected_at = now
        # A SlotReader always scales, so its frames are always Yuv.
        if not isinstance(image, Yuv) or not self.slot.write(
                image, now, time.time(), self.connected_at, self.lag.seconds, self.received):
            self.report("down", "frame larger than its slot")


def serve(conn: Connection) -> None:
    send_lock = threading.Lock()
    readers: dict[int, SlotReader] = {}

    def send(message: tuple[Any, ...]) -> None:
        with send_lock, contextlib.suppress(OSError):  # the daemon is gone: the command loop ends
            conn.send(message)

    def clip_reply(ident: int) -> Callable[[ClipDone], None]:
        return lambda done: send(("clip", ident, done))

    def close(ident: int, reader: SlotReader) -> None:
        reader.stop()
        reader.join(15.0)
        reader.buffer.close()
        send(("closed", ident))

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message[0] == "open":
            _, ident, spec = message
            fd = recv_handle(conn)
            buffer = mmap.mmap(fd, spec.size)
            os.close(fd)
            reader = SlotReader(spec, buffer,
                                lambda kind, detail, ident=ident: send(("report", ident, kind, detail)))
            readers[ident] = reader
            reader.start()
        elif message[0] == "close":
            gone = readers.pop(message[1], None)
            if gone is not None:
                threading.Thread(target=close, args=(message[1], gone), daemon=True).start()
        elif message[0] == "clip":
            _, ident, order = message
            camera = readers.get(ident)
            if camera is not None:
                camera.clip(order, clip_reply(ident))
        elif message[0] == "quit":
            break
    for reader in readers.values():
        reader.stop()
    for reader in readers.values():
        reader.join(5.0)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Two arenas, before the first capture thread (see monitor.malloc). Not the fixed mmap
    # threshold: with 20 cameras of 720p at 2 Mbit/s it cost 0.57 CPU-s per camera-minute
    # against 0.47 (each keyframe's buffers mapped and unmapped), for ~1 MB a camera.
    malloc.tune(mmap_threshold=None)
    sched.batch_process()  # the capture threads inherit it: the daemon's loop goes first on wakeup
    sock = socket.socket(fileno=int(sys.argv[1]))
    serve(Connection(sock.detach()))


if __name__ == "__main__":
    main()
