"""The one loop that scans a recording for its targets' first appearances.

Shared by ``vlm-monitor scan`` and the console's scans: a sample per interval
of media time, up to ``window`` of them analysed at once and handed on in
order, each target's detector fed in that order. What to do with each step
(print it, keep it, stop at the first find) is the caller's.

``eval`` does not use it: it replays recordings through the daemon's own
streams, so that zones, schedules and the second look are judged as they run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from monitor.config import DetectionConfig
from monitor.detector import Detector, Raised
from monitor.pipeline import FrameAnalyzer, SampleResult, ordered
from monitor.sources.base import Sample
from monitor.sources.files import file_samples


@dataclass(frozen=True, slots=True)
class Step:
    sample: Sample
    result: SampleResult
    found: dict[str, float]  # targets first found with this sample: name -> the offset of the first match


async def first_appearances(video: str, analyzer: FrameAnalyzer, detection: DetectionConfig,
                            window: int, *, interval: float = 1.0,
                            stop: asyncio.Event | None = None) -> AsyncGenerator[Step, None]:
    """Every sample of ``video`` with its verdicts, in order, until the end or ``stop``.

    A target is found once: at the first streak of ``consecutive_matches``,
    reported at the first sample of that streak (the seed's rule)."""
    detectors: dict[str, Detector[float]] = {
        t.name: Detector(detection.consecutive_matches, detection.rearm_after_absent)
        for t in analyzer.targets}
    seen: set[str] = set()
    # Closed with this generator: a caller that stops early cancels the samples in flight.
    async with aclosing(ordered(file_samples(video, interval, stop=stop), analyzer, window)) as pairs:
        async for sample, result in pairs:
            found: dict[str, float] = {}
            for r in result.targets:
                event = detectors[r.target.name].observe(r.observation(detection.min_confidence),
                                                         sample.offset)
                if isinstance(event, Raised) and r.target.name not in seen:
                    seen.add(r.target.name)
                    found[r.target.name] = event.first
            yield Step(sample, result, found)
