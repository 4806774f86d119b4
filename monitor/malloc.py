"""glibc's allocator, tuned for a process with a hundred capture threads.

Measured with 20 720p cameras read by ``LiveReader`` in one process: untuned,
RSS grew to 11-13 MB per camera and wandered; two arenas alone gave 7.8 MB,
two arenas and a fixed 128 KiB mmap threshold 6.6 MB, flat (frames held at
the model's size). Why: each thread that allocates gets an arena of its own
(up to 8 per core), and FFmpeg's large, short-lived buffers (packets, decoded
pictures) raise glibc's dynamic mmap threshold, after which they are carved
from those arenas and fragment them instead of going back to the system.
It costs some CPU: the whole daemon with 50 cameras (bench/fleet.py) took
0.87 CPU-s per camera-minute tuned, 0.79 untuned (8.4 MB per camera) and
0.75 with two arenas alone (8.6 MB): a megabyte a camera for ~0.1 CPU-s.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def tune(mmap_threshold: int | None = 128 * 1024) -> bool:
    """Two arenas; blocks of ``mmap_threshold`` and more always mmapped (and so returned
    when freed); None leaves glibc's own threshold.

    Call before any thread starts. Returns False where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if not mallopt(M_ARENA_MAX, 2):
        return False
    # Setting the threshold also turns off glibc's dynamic raising of it.
    return mmap_threshold is None or bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold))
