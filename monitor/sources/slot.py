"""One camera's newest frame in shared memory: written by a capture worker, read by the daemon.

A seqlock over one buffer: the writer makes the sequence number odd, writes
the frame and the rest of its header, then makes the number even; a reader
reads the number first, then the header and the frame, and keeps them only
if the number was even and unchanged across the copy. The writer never waits
for a reader, and a reader never sees half a frame. The number is stored
whole, by one 8-byte copy: ``struct.pack_into`` zeroes its bytes before it
writes them, so a reader that came in between saw a frame 0 px wide (one
camera of 300 crashed so after 5 minutes, issue 20). The
daemon copies a frame only when it samples one (once an interval), so the
bytes of a camera's other frames never enter its interpreter.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np

from monitor.sources.base import Yuv

# seq, taken (monotonic: one clock for every process on the host), wall (epoch),
# connected_at (monotonic, 0 until the first frame), lag (s), received bytes, width, height
HEADER = struct.Struct("<QddddQII")
SEQ = struct.Struct("<Q")
FIELDS = struct.Struct("<ddddQII")  # the header after seq
# The largest frame a slot holds: the model's budget is far below it; this bounds a
# hostile camera's size (a 16k x 16k SPS) to what the capacity allows.
MAX_PIXELS = 4096 * 2304


@dataclass(frozen=True, slots=True)
class SlotFrame:
    seq: int
    taken: float
    wall: float
    frame: Yuv
    lag: float  # the capture's lag when the frame was decoded


def capacity(max_pixels: int) -> int:
    """Bytes of a slot that holds a YUV 4:2:0 frame of at most ``max_pixels``."""
    return HEADER.size + min(max_pixels, MAX_PIXELS) * 3 // 2


def memory(size: int, name: str) -> tuple[int, mmap.mmap]:
    """An anonymous shared file (memfd) of ``size`` bytes and its mapping.

    A memfd, not /dev/shm: Docker gives /dev/shm 64 MB, which a hundred cameras
    would outgrow. Pages are touched only as frames are written.
    """
    fd = os.memfd_create(f"vlm-monitor-{name}"[:240], os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd, mmap.mmap(fd, size)


class FrameSlot:
    def __init__(self, buffer: mmap.mmap) -> None:
        self.buffer = buffer
        self._last: SlotFrame | None = None

    # The writer's side (one thread of one worker).
    def write(self, frame: Yuv, taken: float, wall: float, connected_at: float, lag: float,
              received: int) -> bool:
        """False when the frame does not fit (it is then not held)."""
        width, height, data = frame.width, frame.height, frame.data
        if HEADER.size + data.nbytes > len(self.buffer):
            return False
        seq = SEQ.unpack_from(self.buffer, 0)[0] | 1
        self.buffer[:SEQ.size] = SEQ.pack(seq)  # odd: a write is under way
        view = np.frombuffer(self.buffer, np.uint8, data.nbytes, HEADER.size)
        view[:] = data.reshape(-1)
        del view  # a live export would keep the mapping from being closed
        FIELDS.pack_into(self.buffer, SEQ.size, taken, wall, connected_at, lag, received, width, height)
        self.buffer[:SEQ.size] = SEQ.pack(seq + 1)  # even, and last: the frame is whole
        return True

    # The reader's side (the daemon).
    def header(self) -> tuple[int, float, float, float, float, int, int, int]:
        return HEADER.unpack_from(self.buffer, 0)

    def read(self) -> SlotFrame | None:
        """The newest whole frame, or None before the first; copied only when it is new."""
        for _ in range(100):
            seq = SEQ.unpack_from(self.buffer, 0)[0]
            if seq == 0:
                return None
            if seq % 2:
                continue  # being written: the next try sees it done (a copy takes ~0.1 ms)
            if self._last is not None and self._last.seq == seq:
                return self._last
            taken, wall, _, lag, _, width, height = FIELDS.unpack_from(self.buffer, SEQ.size)
            rows = height * 3 // 2
            if width <= 0 or rows <= 0 or HEADER.size + rows * width > len(self.buffer):
                continue  # read across a write: the number has moved on, or will have
            data = np.frombuffer(self.buffer, np.uint8, rows * width, HEADER.size).reshape(rows, width).copy()
            if SEQ.unpack_from(self.buffer, 0)[0] == seq:
                self._last = SlotFrame(seq, taken, wall, Yuv(data), lag)
                return self._last
        return self._last  # a writer far faster than any camera: keep the last whole frame
