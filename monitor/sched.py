"""Capture threads yield to the daemon's event loop when the cores are short.

SCHED_BATCH keeps a thread's share of the CPU (same weight as any other) but a
batch thread that wakes does not preempt the thread running, and a normal
thread that wakes may preempt it: when two cores carry two hundred cameras,
the event loop (/healthz, /metrics, the model's answers) gets its turn sooner.
Any process may ask it for its own threads. Linux only; elsewhere a no-op.
(The daemon's own pool, batch too, measured no better: not done.)
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
