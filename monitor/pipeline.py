"""From a sample to verdicts: preprocess once, ask about every target, keep sample order.

Shared by ``scan`` and the daemon's streams. Up to ``window`` samples of one
source are analysed at once (the model server batches them), and results are
handed on in sample order, since the detector needs them in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from monitor.config import PreprocessConfig, Target
from monitor.detector import Observation
from monitor.modelwatch import ModelPolicy, ReportErrors
from monitor.preprocess import Prepared, prepare
from monitor.prompts import with_lessons
from monitor.scene import SceneGate, thumbnail
from monitor.schedule import active, local
from monitor.sources.base import Sample
from monitor.verdict import Box, Verdict
from monitor.vlm import Analysis, Lease, Unavailable, VlmClient, VlmError
from monitor.zones import Polygon, in_zones, to_frame, view_for

T = TypeVar("T")
R = TypeVar("R")

async def ordered(source: AsyncIterator[T], fn: Callable[[T], Awaitable[R]],
                  window: int) -> AsyncGenerator[tuple[T, R], None]:
    """Map ``fn`` over ``source`` with up to ``window`` calls at once; yield in source order.

    Each result is handed on as soon as it and every result before it are done,
    not when the window fills: a recording paced to real time would otherwise
    alert ``window - 1`` samples late. The source is not read further while the
    window is full, so nothing queues without bound.
    """
    pending: deque[tuple[T, asyncio.Task[R]]] = deque()
    items = aiter(source)
    upcoming: asyncio.Task[T] | None = None
    exhausted = False
    try:
        while True:
            while pending and pending[0][1].done():
                head, task = pending.popleft()
                yield head, task.result()
            if exhausted and not pending:
                return
            if upcoming is None and not exhausted and len(pending) < window:
                upcoming = asyncio.ensure_future(anext(items))
            waits = [t for t in (upcoming, pending[0][1] if pending else None) if t is not None]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if upcoming is not None and upcoming.done():
                try:
                    item = upcoming.result()
                except StopAsyncIteration:
                    exhausted = True
                else:
                    pending.append((item, asyncio.create_task(fn(item))))  # type: ignore[arg-type]
                upcoming = None
    finally:
        left: list[asyncio.Future[Any]] = [t for _, t in pending]
        if upcoming is not None:
            left.append(upcoming)
        for future in left:
            future.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: Target
    verdict: Verdict | None
    error: VlmError | None
    box: Box | None = None  # the verdict's box, relative to the whole frame
    outside: bool = False  # the box lies outside every zone of the target: not a match

    def observation(self, min_confidence: int) -> Observation:
        if self.verdict is None:
            return Observation.UNKNOWN
        if self.outside:
            return Observation.ABSENT
        return Observation.MATCH if self.verdict.is_match(min_confidence) else Observation.ABSENT

    def json(self, min_confidence: int) -> dict[str, Any]:
        """The result as `scan --json` and the console's scans show it."""
        v = self.verdict
        return {"target": self.target.name, "present": v.present if v else None,
                "confidence": v.confidence if v else None, "description": v.description if v else None,
                "match": self.observation(min_confidence) is Observation.MATCH,
                "error": str(self.error) if self.error else None}


@dataclass(frozen=True, slots=True)
class SampleResult:
    sample: Sample  # what was analysed: a live stream's newest frame may replace the one queued
    prepared: Prepared | None
    targets: list[TargetResult]
    analysis: Analysis | None  # the model call (latency, tokens), when it answered
    reused: bool = False  # the scene had not changed: these are an earlier frame's verdicts

    @property
    def off_schedule(self) -> bool:
        """No target was due now: nothing was asked."""
        return not self.targets


class FrameAnalyzer:
    """Preprocesses a sample in a worker thread and asks the model about all its targets at once."""

    def __init__(self, client: VlmClient, targets: Sequence[Target], pre: PreprocessConfig,
                 policy: ModelPolicy | None = None, gate: SceneGate | None = None,
                 refresh: Callable[[Sample], Sample] | None = None, thumb_width: int = 0, *,
                 zones: Mapping[str, Sequence[Polygon]] | None = None, tz: ZoneInfo | None = None,
                 lessons: Callable[[str], Sequence[str]] | None = None, background: bool = False) -> None:
        self.client = client
        # A scan from the console: its requests take only slots no camera waits for.
        self.background = background
        self.thumb_width = thumb_width  # also make a thumbnail of each analysed frame
        self.zones = zones or {}  # target name -> its zones' polygons (none: the whole frame)
        self.tz = tz  # the schedules' time zone (None: the host's)
        # A target's earlier false alarms, to tell the model what it is not.
        self.lessons = lessons
        self._rules = {t.name: t.rules() for t in targets}
        self.targets = list(targets)
        self.pre = pre
        self.policy: ModelPolicy = policy or ReportErrors()  # what to do while the server is down
        self.gate = gate
        # Live streams: swap in the newest frame once a model slot is free (see VlmClient.slot).
        self.refresh = refresh
        self._reference: asyncio.Future[SampleResult] | None = None  # the last analysed sample's

    def due(self, wall: datetime) -> list[Target]:
        """The targets whose schedule covers this moment."""
        at = local(wall, self.tz)
        return [t for t in self.targets if active(self._rules[t.name], at)]

    async def __call__(self, sample: Sample) -> SampleResult:
        targets = self.due(sample.wall)
        if not targets:  # nothing to ask about now: the model is not called
            return SampleResult(sample, None, [], None)
        if self.refresh is None and not self.background:
            return await self._gated(sample, targets, None)
        async with self.client.slot(self.background) as lease:
            return await self._gated(self.refresh(sample) if self.refresh else sample, targets, lease)

    async def _gated(self, sample: Sample, targets: list[Target], lease: Lease | None) -> SampleResult:
        if self.gate is None:
            return await self._analyse(sample, targets, lease)
        # Decided before the first await, so in sample order even with several in flight.
        thumb = thumbnail(sample.frame)
        if self._reference is not None and self.gate.unchanged(thumb, sample.offset):
            reference = await asyncio.shield(self._reference)
            if reference.analysis is not None and [r.target for r in reference.targets] == targets:
                return replace(reference, sample=sample, reused=True)
        self.gate.analysed(thumb, sample.offset)
        future: asyncio.Future[SampleResult] = asyncio.get_running_loop().create_future()
        self._reference = future
        try:
            result = await self._analyse(sample, targets, lease)
        except BaseException:
            self.gate.forget()
            future.cancel()
            raise
        if result.analysis is None:
            self.gate.forget()
        future.set_result(result)
        return result

    async def _analyse(self, sample: Sample, targets: list[Target], lease: Lease | None) -> SampleResult:
        pre = self.pre
        view = view_for([self.zones.get(t.name, ()) for t in targets])
        prepared = await asyncio.to_thread(
            prepare, sample.frame, max_pixels=pre.max_pixels, clahe=pre.clahe,
            clip_limit=pre.clahe_clip_limit, tile_grid=pre.clahe_tile_grid,
            jpeg_quality=pre.jpeg_quality, thumb_width=self.thumb_width, view=view)
        analysis, error = await self._ask(prepared, targets, lease)
        if analysis is None:
            return SampleResult(sample, prepared, [TargetResult(t, None, error) for t in targets], None)
        results = [self._placed(t, v, prepared) for t, v in zip(targets, analysis.verdicts, strict=True)]
        return SampleResult(sample, prepared, results, analysis)

    def _placed(self, target: Target, verdict: Verdict, prepared: Prepared) -> TargetResult:
        """The verdict with its box on the whole frame, checked against the target's zones."""
        if verdict.box is None:
            return TargetResult(target, verdict, None)
        box = to_frame(verdict.box, prepared.width, prepared.height, prepared.view)
        zones = self.zones.get(target.name)
        return TargetResult(target, verdict, None, box, bool(zones) and not in_zones(box, zones or ()))

    def prompt(self, target: Target) -> str:
        """The target as the model reads it: with a few of its earlier false alarms, if any."""
        if self.lessons is None:
            return target.prompt_text
        return with_lessons(target.prompt_text, self.lessons(target.name))

    async def _ask(self, prepared: Prepared, targets: list[Target],
                   lease: Lease | None) -> tuple[Analysis | None, VlmError | None]:
        """The model's verdicts, through the slot held for this sample, else one of its own."""
        prompts = [self.prompt(t) for t in targets]
        analyze = lease.analyze if lease is not None else self.client.analyze
        attempt = 0
        while True:
            if not self.policy.available():
                return None, Unavailable("model server unavailable", "circuit_open")
            try:
                return await analyze(prepared.jpeg, prompts), None
            except Unavailable as e:
                if await self.policy.wait(e, attempt):
                    attempt += 1
                    continue
                return None, e
            except VlmError as e:
                return None, e
