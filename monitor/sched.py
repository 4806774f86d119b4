"""Threads that do bulk work yield to the event loop when the cores are short.

SCHED_BATCH keeps a thread's share of the CPU (same weight as any other) but a
batch thread that wakes does not preempt the thread running, and a normal
thread that wakes may preempt it: when two cores carry a hundred cameras'
capture and every sample's CLAHE and JPEG, the event loop (/healthz,
/metrics, the model's answers, the next sample) still gets its turn soon.
Any process may ask it for its own threads. Linux only; elsewhere a no-op.
"""

from __future__ import annotations

import contextlib
import os


def batch(thread: int = 0) -> None:
    """The thread (0: the calling one) runs SCHED_BATCH; threads it starts inherit it."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(thread, os.SCHED_BATCH, os.sched_param(0))


def batch_process() -> None:
    """Every thread of this process so far (those a library started at import too)."""
    with contextlib.suppress(OSError):
        for thread in os.listdir("/proc/self/task"):
            batch(int(thread))
