"""Is the daemon itself keeping up? The event loop's lag, and the cameras that fall behind.

A daemon short of CPU must say so, and must not blame others for it: a model
request that "timed out" while the loop could not run for seconds says
nothing about the model server (``LoopLag.worst_since``), and samples that go
stale are the daemon's doing, counted as such. ``Overload`` turns the
per-camera marks into one log line on each change into and out of overload.

Lag alone does not say whose fault it is: the loop may be busy with its own
work, or ready to run and waiting for a core while capture threads, other
processes or other containers hold them (at 300 sub-stream cameras on two
cores it waited ~0.55 s of every second and ran 0.11 s). Linux counts the
second per thread (``/proc/.../schedstat``); ``LoopLag`` reads it at each tick.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from monitor import logs
from monitor.metrics import Metrics

TICK_S = 0.25  # how often the loop's lateness is measured
BEHIND_WINDOW_S = 10.0  # a camera marked behind within this long counts as behind
CAPTURE_BEHIND_S = 2.0  # capture lag past this marks a camera behind
LATE_LOOP_S = 1.0  # a loop this late during a request makes its timeout ours, not the server's


def runqueue_wait_s(schedstat: str) -> float:
    """Seconds a thread spent ready to run but waiting for a CPU, from its ``schedstat``:
    ``<ns on a CPU> <ns waiting on a run queue> <time slices>``."""
    return int(schedstat.split()[1]) / 1e9


def thread_cpu_wait_s(native_id: int) -> float | None:
    """``runqueue_wait_s`` of one of this process's threads; None where Linux does not say."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            return runqueue_wait_s(f.read())
    except (OSError, ValueError, IndexError):
        return None


class LoopLag:
    """Measures how late the event loop runs a timer; remembers the last two minutes of it."""

    def __init__(self, metrics: Metrics | None = None, keep_s: float = 120.0) -> None:
        self.metrics = metrics
        self.keep_s = keep_s
        self._seen: deque[tuple[float, float]] = deque()  # (monotonic time, lag)
        self._waited: deque[tuple[float, float]] = deque()  # (monotonic time, s waited for a CPU)
        self._due: float | None = None  # when the next tick should run

    def _keep(self, window: deque[tuple[float, float]], now: float, value: float) -> None:
        window.append((now, value))
        while window and now - window[0][0] > self.keep_s:
            window.popleft()

    def record(self, now: float, lag: float) -> None:
        self._keep(self._seen, now, lag)
        if self.metrics is not None:
            self.metrics.loop_lag.observe(lag)

    def waited(self, now: float, seconds: float) -> None:
        """The loop's thread waited ``seconds`` for a CPU since the last tick."""
        self._keep(self._waited, now, seconds)
        if self.metrics is not None:
            self.metrics.loop_cpu_wait.inc(seconds)

    def cpu_wait_since(self, since: float) -> float:
        """Seconds the loop's thread waited for a CPU at or after ``since`` (monotonic)."""
        return sum(s for t, s in self._waited if t >= since)

    def worst_since(self, since: float) -> float:
        """The largest lag measured at or after ``since`` (monotonic), 0.0 if none.

        A tick measured after a stall carries the stall's length; a tick that is
        overdue now counts too, so a timeout handled in the same turn of the loop
        as the end of the stall (before the tick has run) still sees it."""
        overdue = time.monotonic() - self._due if self._due is not None else 0.0
        return max(overdue, max((lag for t, lag in self._seen if t >= since), default=0.0))

    def late_during(self, since: float, timeout: float) -> bool:
        """Whether a wait that began at ``since`` and ran out after ``timeout`` ran out
        because this loop was late, rather than because the other side was slow."""
        return self.worst_since(since) >= min(LATE_LOOP_S, timeout / 4)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()  # its clock is time.monotonic()
        thread = threading.get_native_id()
        last = thread_cpu_wait_s(thread)
        while True:
            self._due = loop.time() + TICK_S
            await asyncio.sleep(TICK_S)
            now = loop.time()
            self.record(now, max(0.0, now - self._due))
            if last is not None and (total := thread_cpu_wait_s(thread)) is not None:
                self.waited(now, total - last)
                last = total


@dataclass
class Overload:
    """Which cameras fell behind lately; one log line when the daemon goes into or out of
    overload. Pure but for the log: ``check`` is given the time."""

    metrics: Metrics | None = None
    _behind: dict[str, float] = field(default_factory=dict)  # camera -> when last marked
    _overloaded: bool = False

    def behind(self, stream: str, now: float) -> None:
        """This camera dropped a sample as stale, or its capture lags the camera."""
        self._behind[stream] = now

    def check(self, now: float, loop_lag: float) -> str | None:
        """The change, if any: "overloaded" or "recovered"."""
        for stream in [s for s, t in self._behind.items() if now - t > BEHIND_WINDOW_S]:
            del self._behind[stream]
        count = len(self._behind)
        if self.metrics is not None:
            self.metrics.cameras_behind.set(count)
        overloaded = count > 0 or loop_lag >= LATE_LOOP_S
        if overloaded == self._overloaded:
            return None
        self._overloaded = overloaded
        return "overloaded" if overloaded else "recovered"

    @property
    def count(self) -> int:
        return len(self._behind)

    async def run(self, lag: LoopLag, every_s: float = 2.0) -> None:
        log = logs.get("monitor.load")
        while True:
            await asyncio.sleep(every_s)
            now = time.monotonic()
            worst = lag.worst_since(now - BEHIND_WINDOW_S)
            change = self.check(now, worst)
            # Near 1: the loop had work but no core to run it on; near 0 with a lag: its own work.
            waiting = round(lag.cpu_wait_since(now - BEHIND_WINDOW_S) / BEHIND_WINDOW_S, 2)
            if change == "overloaded":
                log.warning("overloaded: the daemon is short of CPU", cameras_behind=self.count,
                            loop_lag_seconds=round(worst, 3), loop_waiting_for_cpu=waiting)
            elif change == "recovered":
                log.info("keeping up again", loop_lag_seconds=round(worst, 3), loop_waiting_for_cpu=waiting)
