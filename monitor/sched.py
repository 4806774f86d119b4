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


def batch_process() -> None:
    """Every thread of this process so far (those a library started at import too) runs
    SCHED_BATCH; the threads they start inherit it."""
    with contextlib.suppress(AttributeError, OSError):
        for thread in os.listdir("/proc/self/task"):
            os.sched_setscheduler(int(thread), os.SCHED_BATCH, os.sched_param(0))
