"""glibc's allocator, tuned for a process with a hundred capture threads.

Measured with 20 720p cameras (``bench/fleet.py``, /tmp experiments in the
issue notes): untuned, RSS grew to 11-13 MB per camera and wandered; with
these two settings it holds at ~8.4 MB (6.7 MB with frames scaled at
capture). Why: each thread that allocates gets its own arena (up to 8 per
core), and FFmpeg's large, short-lived buffers (packets, decoded pictures)
raise glibc's dynamic mmap threshold, after which they are carved from those
arenas and fragment them instead of going back to the system when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def tune() -> bool:
    """Two arenas; blocks of 128 KiB and more always mmapped (and so returned when freed).

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
    # Setting the threshold also turns off glibc's dynamic raising of it.
    return bool(mallopt(M_ARENA_MAX, 2)) and bool(mallopt(M_MMAP_THRESHOLD, 128 * 1024))
