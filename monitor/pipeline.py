"""From a sample to verdicts: preprocess once, ask about every target, keep sample order.

Shared by ``scan`` and the daemon's streams. Up to ``window`` samples of one
source are analysed at once (the model server batches them), and results are
handed on in sample order, since the detector needs them in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from monitor.config import PreprocessConfig, Target
from monitor.detector import Observation
from monitor.modelwatch import ModelPolicy, ReportErrors
from monitor.preprocess import Prepared, prepare
from monitor.scene import SceneGate, thumbnail
from monitor.sources.base import Sample
from monitor.verdict import Verdict
from monitor.vlm import Analysis, Unavailable, VlmClient, VlmError

T = TypeVar("T")
R = TypeVar("R")


async def ordered(source: AsyncIterator[T], fn: Callable[[T], Awaitable[R]],
                  window: int) -> AsyncIterator[tuple[T, R]]:
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

    def observation(self, min_confidence: int) -> Observation:
        if self.verdict is None:
            return Observation.UNKNOWN
        return Observation.MATCH if self.verdict.is_match(min_confidence) else Observation.ABSENT


@dataclass(frozen=True, slots=True)
class SampleResult:
    sample: Sample  # what was analysed: a live stream's newest frame may replace the one queued
    prepared: Prepared | None
    targets: list[TargetResult]
    analysis: Analysis | None  # the model call (latency, tokens), when it answered
    reused: bool = False  # the scene had not changed: these are an earlier frame's verdicts


class FrameAnalyzer:
    """Preprocesses a sample in a worker thread and asks the model about all its targets at once."""

    def __init__(self, client: VlmClient, targets: Sequence[Target], pre: PreprocessConfig,
                 policy: ModelPolicy | None = None, gate: SceneGate | None = None,
                 refresh: Callable[[Sample], Sample] | None = None, thumb_width: int = 0) -> None:
        self.client = client
        self.thumb_width = thumb_width  # also make a thumbnail of each analysed frame
        self.targets = list(targets)
        self.pre = pre
        self.policy: ModelPolicy = policy or ReportErrors()  # what to do while the server is down
        self.gate = gate
        # Live streams: swap in the newest frame once a model slot is free (see VlmClient.slot).
        self.refresh = refresh
        self._reference: asyncio.Future[SampleResult] | None = None  # the last analysed sample's

    async def __call__(self, sample: Sample) -> SampleResult:
        if self.refresh is None:
            return await self._gated(sample)
        async with self.client.slot():
            return await self._gated(self.refresh(sample))

    async def _gated(self, sample: Sample) -> SampleResult:
        if self.gate is None:
            return await self._analyse(sample)
        # Decided before the first await, so in sample order even with several in flight.
        thumb = thumbnail(sample.frame)
        if self._reference is not None and self.gate.unchanged(thumb, sample.offset):
            reference = await asyncio.shield(self._reference)
            if reference.analysis is not None:
                return replace(reference, sample=sample, reused=True)
        self.gate.analysed(thumb, sample.offset)
        future: asyncio.Future[SampleResult] = asyncio.get_running_loop().create_future()
        self._reference = future
        try:
            result = await self._analyse(sample)
        except BaseException:
            self.gate.forget()
            future.cancel()
            raise
        if result.analysis is None:
            self.gate.forget()
        future.set_result(result)
        return result

    async def _analyse(self, sample: Sample) -> SampleResult:
        pre = self.pre
        prepared = await asyncio.to_thread(
            prepare, sample.frame, max_pixels=pre.max_pixels, clahe=pre.clahe,
            clip_limit=pre.clahe_clip_limit, tile_grid=pre.clahe_tile_grid,
            jpeg_quality=pre.jpeg_quality, thumb_width=self.thumb_width)
        analysis, error = await self._ask(prepared)
        if analysis is None:
            return SampleResult(sample, prepared, [TargetResult(t, None, error) for t in self.targets],
                                None)
        results = [TargetResult(t, v, None) for t, v in zip(self.targets, analysis.verdicts, strict=True)]
        return SampleResult(sample, prepared, results, analysis)

    async def _ask(self, prepared: Prepared) -> tuple[Analysis | None, VlmError | None]:
        prompts = [t.prompt_text for t in self.targets]
        attempt = 0
        while True:
            if not self.policy.available():
                return None, Unavailable("model server unavailable", "circuit_open")
            try:
                return await self.client.analyze(prepared.jpeg, prompts), None
            except Unavailable as e:
                if await self.policy.wait(e, attempt):
                    attempt += 1
                    continue
                return None, e
            except VlmError as e:
                return None, e
