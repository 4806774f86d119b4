"""``vlm-monitor scan``: when does the target first appear in this recording?

The seed's job, kept to its rules (one sample per second of video, CLAHE, a
match at confidence >= 7, found after 2 consecutive matches, reported at the
first of them), but several samples are in flight at once and nothing touches
the disk.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import TextIO

from monitor.config import DetectionConfig, PreprocessConfig, Target, VlmConfig
from monitor.detector import Observation
from monitor.metrics import Metrics
from monitor.pipeline import FrameAnalyzer, SampleResult
from monitor.recording import first_appearances
from monitor.sources.base import Sample
from monitor.sources.clips import ClipDone, ClipOrder, cut
from monitor.sources.files import probe_video
from monitor.urls import file_path, is_live
from monitor.vlm import Rejected, Unavailable, VlmClient

EXIT_FOUND, EXIT_NOT_FOUND, EXIT_ERROR = 0, 1, 2


class ScanError(Exception):
    """Scanning cannot go on: one line for the user."""


@dataclass
class ScanOutcome:
    first_detection: float | None
    samples: int
    unknown: int
    clip: ClipDone | None = None  # the clip of the first appearance, when one was asked for


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def one_line(text: str) -> str:
    """Model text made safe for a terminal: control characters (newlines, ANSI escapes) escaped.

    The description is the model's, so it can hold anything, including a line
    that looks like our own ``found:`` summary. Pure.
    """
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def progress_bar(done: float, total: float | None, elapsed: float, width: int = 24) -> str:
    """``[#####-------]  0:12 / 1:00  3.1x  1:30 left``: seconds of video analysed. Pure."""
    rate = done / elapsed if elapsed > 0 else 0.0
    if not total:
        return f"scanning… {_clock(done)} analysed  {rate:.1f}x"
    fraction = max(0.0, min(1.0, done / total))
    filled = round(fraction * width)
    left = f"  {_clock((total - done) / rate)} left" if rate > 0 and done < total else ""
    return (f"[{'#' * filled}{'-' * (width - filled)}] {_clock(done)} / {_clock(total)}"
            f"  {rate:.1f}x{left}")


class Report:
    """Prints the samples and the summary, as text or JSON lines.

    On a terminal (``progress`` given) and without ``every_line``, only matches and
    errors are printed, under a progress bar: an hour of video is not 3,600 lines.
    Piped output, and JSON, have a line per sample.
    """

    def __init__(self, out: TextIO, as_json: bool, progress: TextIO | None,
                 every_line: bool = True) -> None:
        self.out = out
        self.as_json = as_json
        self.progress = progress
        self.every_line = every_line or as_json
        self.duration: float | None = None  # the recording's length, for the bar
        self._started = time.monotonic()

    def sample(self, sample: Sample, result: SampleResult, min_confidence: int) -> None:
        r = result.targets[0]
        obs = r.observation(min_confidence)
        verdict = r.verdict
        if self.progress:
            self.progress.write("\r\x1b[K")
        if self.as_json:
            fields = r.json(min_confidence)
            del fields["target"]  # one target: the lines stay as they were
            line = json.dumps({"second": sample.offset, **fields}, ensure_ascii=False)
        elif verdict is None:
            line = f"{_clock(sample.offset):>8}  ERROR       {one_line(str(r.error))}"
        else:
            label = {Observation.MATCH: "MATCH", Observation.ABSENT: "no"}[obs]
            if obs is Observation.ABSENT and verdict.present:
                label = "unsure"
            line = (f"{_clock(sample.offset):>8}  {label:<6} {verdict.confidence:>2}/10  "
                    f"{one_line(verdict.description)}")
        if self.every_line or obs is not Observation.ABSENT:
            print(line, file=self.out, flush=True)
        if self.progress:
            elapsed = time.monotonic() - self._started
            self.progress.write(progress_bar(sample.offset + 1.0, self.duration, elapsed))
            self.progress.flush()

    def summary(self, outcome: ScanOutcome, target: str, consecutive: int) -> None:
        if self.progress:
            self.progress.write("\r\x1b[K")
            self.progress.flush()
        clip = outcome.clip
        if self.as_json:
            extra = {} if clip is None else {"clip": clip.path if clip.ok else None,
                                             "clip_seconds": round(clip.seconds, 2) if clip.ok else None,
                                             **({} if clip.ok else {"clip_error": clip.note})}
            print(json.dumps({"first_detection_seconds": outcome.first_detection,
                              "found": outcome.first_detection is not None,
                              "target": target, "samples": outcome.samples,
                              "unknown_samples": outcome.unknown, **extra}, ensure_ascii=False),
                  file=self.out, flush=True)
            return
        if outcome.first_detection is not None:
            t = outcome.first_detection
            text = (f"found: {target!r} first appears at {t:g} s ({_clock(t)}), "
                    f"seen in {consecutive} consecutive samples")
        else:
            text = f"not found: {target!r} in {outcome.samples} samples"
            if outcome.unknown:
                text += f" ({outcome.unknown} could not be analysed)"
        if clip is not None:
            text += (f"\nclip: {clip.path} ({clip.seconds:.1f} s from {_clock(clip.began)}, not re-encoded)"
                     if clip.ok else f"\nno clip: {clip.note}")
        print(text, file=self.out, flush=True)


async def scan(video: str, target: Target, vlm: VlmConfig, detection: DetectionConfig,
               pre: PreprocessConfig, report: Report, interval: float = 1.0,
               clip: ClipOrder | None = None) -> ScanOutcome:
    """Scan until the target's first appearance; with ``clip`` (its start and end relative to
    that moment), also cut the recording's clip of it."""
    if is_live(video):
        raise ScanError("scan reads recordings; to watch a live stream, put it in a config for `run`")
    client = VlmClient(vlm, Metrics())
    analyzer = FrameAnalyzer(client, [target], pre)
    outcome = ScanOutcome(None, 0, 0)
    try:
        if report.progress:
            report.duration = await asyncio.to_thread(probe_video, file_path(video))
        # With an "auto" limit the client's endpoint bounds the calls; the window only bounds
        # the frames decoded ahead (a 1080p frame is 6 MB).
        steps = first_appearances(video, analyzer, detection, min(vlm.total_concurrency, 16),
                                  interval=interval)
        async with aclosing(steps):  # the samples in flight are cancelled before the client closes
            async for step in steps:
                error = step.result.targets[0].error
                if isinstance(error, Unavailable | Rejected):
                    raise ScanError(str(error))
                outcome.samples += 1
                outcome.unknown += step.result.targets[0].observation(
                    detection.min_confidence) is Observation.UNKNOWN
                report.sample(step.sample, step.result, detection.min_confidence)
                if step.found:
                    outcome.first_detection = step.found[target.name]
                    break
    finally:
        await client.close()
    if clip is not None and outcome.first_detection is not None:
        t = outcome.first_detection
        outcome.clip = await asyncio.to_thread(
            cut, str(file_path(video)), replace(clip, start=t + clip.start, end=t + clip.end))
    report.summary(outcome, target.name, detection.consecutive_matches)
    return outcome


def exit_code(outcome: ScanOutcome) -> int:
    if outcome.first_detection is not None:
        return EXIT_FOUND
    # "Not found" is only an answer when every sample was actually looked at.
    return EXIT_ERROR if outcome.unknown else EXIT_NOT_FOUND


def progress_stream() -> TextIO | None:
    return sys.stderr if sys.stderr.isatty() else None
