"""What became of one stream's sampling intervals and samples: the metrics, the tally the
exit code reads, what the console shows, and whether the camera fell behind.

One object per stream, called once per interval a source accounts for and once
per result; nothing else of the stream writes these.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from monitor import logs
from monitor.board import Board, TargetView
from monitor.detector import Observation
from monitor.load import CAPTURE_BEHIND_S, Overload
from monitor.metrics import Metrics
from monitor.pipeline import SampleResult
from monitor.vlm import BadAnswer, Late, Rejected, Unavailable


@dataclass
class Tally:
    """What became of a stream's samples: the exit-code rule reads it."""

    samples: int = 0
    analysed: int = 0  # the model answered (or its answer was reused)
    model_errors: int = 0
    last_error: str = ""

    @property
    def model_unusable(self) -> bool:
        """Samples were taken, and the model could judge none of them."""
        return self.samples > 0 and self.analysed == 0 and self.model_errors > 0


class StreamAccount:
    def __init__(self, name: str, metrics: Metrics, board: Board | None, overload: Overload | None,
                 live: bool) -> None:
        self.name = name
        self.metrics = metrics
        self.board = board
        self.overload = overload
        self.live = live
        self.tally = Tally()
        self._received = 0  # bytes the camera had sent when last counted
        self._repeats = logs.Repeats()  # the same model error every sample is one line a minute
        self._log = logs.get("monitor.stream").bind(stream=name)

    def intervals(self, dropped: str | None, n: int, received: int | None = None) -> None:
        """``n`` sampling intervals went by: sampled (None), or dropped at the source, and why;
        ``received``: the bytes the camera has sent so far."""
        self.metrics.intervals.labels(self.name).inc(n)
        if received is not None:
            self.metrics.capture_bytes.labels(self.name).inc(max(0, received - self._received))
            self._received = received
        if dropped == "stale":
            self.behind("samples went stale: the model or the daemon was too busy to take them")
        if dropped is not None:
            self.metrics.frames_dropped.labels(self.name, dropped).inc(n)
            if self.board is not None:
                self.board.dropped(self.name, dropped, n)

    def behind(self, why: str) -> None:
        """This camera fell behind: counted for the overload line, shown on the console."""
        if self.overload is not None:
            self.overload.behind(self.name, time.monotonic())
        if self.board is not None:
            self.board.fell_behind(self.name, why)

    def result(self, result: SampleResult, min_confidence: int) -> str | None:
        """A sample's result, before its verdicts reach the detectors; why it was dropped, if it was."""
        name, sample = self.name, result.sample
        self.metrics.frames_sampled.labels(name).inc()
        if result.off_schedule:
            self.metrics.frames_dropped.labels(name, "off_schedule").inc()
            if self.board is not None:
                self.board.dropped(name, "off_schedule")
            return "off_schedule"
        self.tally.samples += 1
        # Each sample ends one way: reused, analysed, or dropped by the model (once, not per target).
        error = next((r.error for r in result.targets if r.error is not None), None)
        reason = None
        if result.reused:
            self.metrics.verdicts_reused.labels(name).inc()
        elif result.analysis is not None:
            self.metrics.frames_analysed.labels(name).inc()
            self.metrics.frame_age.labels(name).observe(time.monotonic() - sample.captured)
        elif isinstance(error, Late):
            reason = "stale"  # the daemon was short of CPU: not the model server's doing
            self.metrics.frames_dropped.labels(name, reason).inc()
            self.behind("the daemon is short of CPU: answers were read too late")
        elif error is not None:
            reason = "model_unavailable" if isinstance(error, Unavailable) else "model_error"
            self.metrics.frames_dropped.labels(name, reason).inc()
        if self.live:
            self.metrics.capture_lag.observe(sample.lag)
            if sample.lag > CAPTURE_BEHIND_S:
                self.behind(f"capture is {sample.lag:.0f} s behind the camera")
        if result.reused or result.analysis is not None:
            self.tally.analysed += 1
        if isinstance(error, BadAnswer | Rejected):
            self.tally.model_errors += 1
            self.tally.last_error = str(error)
            left_out = self._repeats.check(type(error).__name__, time.monotonic())
            if left_out is not None:
                self._log.warning("sample not analysed", offset=sample.offset, error=str(error),
                                  **({"same_since_last": left_out} if left_out else {}))
        for r in result.targets:
            if r.error is None and r.observation(min_confidence) is Observation.MATCH:
                self.metrics.matches.labels(name, r.target.name).inc()
        return reason

    def show(self, result: SampleResult, reason: str | None, min_confidence: int,
             progress: Callable[[str], str]) -> None:
        """The sample on the console, after the detectors ran (its streak included)."""
        if self.board is None:
            return
        outcome = "reused" if result.reused else "asked" if result.analysis is not None else "dropped"
        verdicts = [TargetView(r.target.name, r.verdict.present if r.verdict else None,
                               r.verdict.confidence if r.verdict else None,
                               r.verdict.description if r.verdict else str(r.error or ""),
                               r.observation(min_confidence) is Observation.MATCH,
                               progress(r.target.name)) for r in result.targets]
        prepared = result.prepared if not result.reused else None
        self.board.sample(self.name, wall=result.sample.wall, offset=result.sample.offset,
                          outcome=outcome, reason=reason, verdicts=verdicts,
                          frame=prepared.jpeg if prepared else None,
                          thumb=prepared.thumb if prepared else None)
