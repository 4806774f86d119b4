"""One stream's task: samples → analysis → detectors → alerts.

The source (a file, or a live camera with its reader thread and hold-off
timer) owns its own lifecycle; this module only turns its samples into
verdicts, verdicts into detector events, and events into alerts, each of
which leaves the stream once, through ``Dispatcher.publish``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import structlog

from monitor import logs
from monitor.alerts.clips import ClipStore
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.model import Alert
from monitor.alerts.snapshots import with_box
from monitor.board import THUMB_WIDTH, Board, TargetView
from monitor.config import StreamSettings
from monitor.detector import Cleared, Detector, Observation, Raised
from monitor.feedback import Feedback
from monitor.load import CAPTURE_BEHIND_S, Overload
from monitor.metrics import Metrics
from monitor.modelwatch import FailFast, ModelPolicy, ModelWatch, WaitForServer
from monitor.pipeline import FrameAnalyzer, SampleResult, TargetResult, ordered
from monitor.preprocess import to_bgr
from monitor.scene import SceneGate
from monitor.schedule import zone
from monitor.sources.base import Frame, Sample, SourceError
from monitor.sources.files import file_samples
from monitor.sources.live import LiveSource, StateChange
from monitor.sources.pool import CapturePool
from monitor.sources.worker import CaptureSpec
from monitor.urls import is_live
from monitor.verdict import Box
from monitor.verify import region, second_look
from monitor.vlm import BadAnswer, Late, Rejected, Unavailable, VlmClient
from monitor.zones import View, area, view_for


@dataclass(frozen=True, slots=True)
class Seen:
    """What the detector remembers of a matching sample."""

    offset: float
    wall: datetime
    confidence: int
    description: str
    jpeg: bytes | None  # what the model was shown, for the alert's snapshot
    model: str | None  # the model that judged it
    box: Box | None = None  # the target's box, relative to the frame
    mark: Box | None = None  # the same box, relative to the image the model was shown
    frame: Callable[[], Frame] | None = None  # the frame at full size, for a second look (verify)
    view: View | None = None  # the zones' part of it the model was shown


@dataclass(frozen=True, slots=True)
class Shared:
    """What every stream uses and the daemon owns."""

    client: VlmClient
    watch: ModelWatch
    dispatcher: Dispatcher
    metrics: Metrics
    board: Board | None = None  # what the console shows; None when it is off
    feedback: Feedback | None = None  # judged alerts: their false alarms go into the prompts
    capture: CapturePool | None = None  # the worker processes live cameras are received in
    overload: Overload | None = None  # which cameras fell behind
    clips: ClipStore | None = None  # each alert's clip


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


class StreamRunner:
    """One stream: its detectors (one per target) and its alerts."""

    def __init__(self, settings: StreamSettings, shared: Shared) -> None:
        self.settings = settings
        self.cfg = settings.stream
        self.client = shared.client
        self.watch = shared.watch
        self.dispatcher = shared.dispatcher
        self.metrics = shared.metrics
        self.board = shared.board
        self.feedback = shared.feedback
        self.capture = shared.capture
        self.overload = shared.overload
        self.clips = shared.clips if settings.clips.enabled else None
        self._live: LiveSource | None = None
        self._received = 0  # bytes the live source had received when last counted
        self.stopping = asyncio.Event()  # set to stop this stream alone
        self.task: asyncio.Task[None] | None = None
        self.failed = False
        self.tally = Tally()
        self._last_alert: dict[str, float] = {}  # target -> offset of its last alert
        self._repeats = logs.Repeats()  # the same model error every sample is one line a minute
        self._announcements: asyncio.TaskGroup  # stream_down/up being published, while running
        det = settings.detection
        self.detectors: dict[str, Detector[Seen]] = {
            t.name: Detector(det.consecutive_matches, det.rearm_after_absent) for t in self.cfg.targets}
        self.metrics.declare_stream(self.cfg.name, [t.name for t in self.cfg.targets])
        self._log = logs.get("monitor.stream")

    async def run(self) -> None:
        structlog.contextvars.bind_contextvars(stream=self.cfg.name)
        url = self.cfg.url.get_secret_value()
        live = is_live(url)
        self._log.info("stream starting", url=self.cfg.display_url, live=live,
                       targets=[t.name for t in self.cfg.targets])
        try:
            # The group holds stream_down/up alerts on their way to the outbox; it is left
            # only once they are stored, after the source has stopped.
            async with asyncio.TaskGroup() as self._announcements:
                await self._run(url, live)
        finally:
            self.metrics.stream_up.labels(self.cfg.name).set(0)

    async def _run(self, url: str, live: bool) -> None:
        try:
            async with AsyncExitStack() as stack:
                samples, analyzer, window = await self._open(stack, url, live)
                async for _, result in ordered(samples, analyzer, window):
                    await self._handle(result)
            self._log.info("stream stopped" if self.stopping.is_set() else "stream finished",
                           samples=self.tally.samples, analysed=self.tally.analysed,
                           model_errors=self.tally.model_errors)
        except SourceError as e:
            self.failed = True
            self._log.error("stream failed", error=str(e))
        except Exception as e:  # one stream's bug must not take the others down
            self.failed = True
            self._log.error("stream crashed", error=f"{type(e).__name__}: {e}", exc_info=True)

    async def _open(self, stack: AsyncExitStack, url: str,
                    live: bool) -> tuple[AsyncIterator[Sample], FrameAnalyzer, int]:
        cfg, settings = self.cfg, self.settings
        sc = settings.scene_change
        gate = SceneGate(pixel_delta=sc.pixel_delta, min_changed_fraction=sc.min_changed_fraction,
                         max_reuse_seconds=sc.max_reuse_seconds, grid=sc.grid,
                         min_region_fraction=sc.min_region_fraction) if sc.enabled else None
        thumbs = THUMB_WIDTH if self.board is not None else 0
        zoned = {t.name: cfg.zone_polygons(t) for t in cfg.targets if t.zones}

        def analyzer(policy: ModelPolicy, refresh: Callable[[Sample], Sample] | None) -> FrameAnalyzer:
            feedback = self.feedback
            return FrameAnalyzer(
                self.client, cfg.targets, settings.preprocess, policy, gate, refresh, thumb_width=thumbs,
                zones=zoned, tz=zone(settings.timezone),
                lessons=(lambda target: feedback.lessons(cfg.name, target)) if feedback else None)
        if not live:
            self.metrics.stream_up.labels(cfg.name).set(1)
            if self.board is not None:
                self.board.state(cfg.name, True, "reading the file")
            await self.dispatcher.camera(cfg.name, True)
            analyze = analyzer(WaitForServer(self.watch, self.stopping), None)
            samples = file_samples(url, cfg.sample_interval_seconds, realtime=cfg.realtime,
                                   stop=self.stopping)
            return self._counted(samples), analyze, settings.window
        shown = area(view_for([zoned.get(t.name, ()) for t in cfg.targets]))
        clips = settings.clips
        # Packets are held for a clip's seconds before the target appeared, and for as long as
        # the alert takes to be raised after that: the rest of the streak, and 3 s for the model
        # (an alert later than that gets a clip that starts late, and says so).
        streak = (settings.detection.consecutive_matches - 1) * cfg.sample_interval_seconds
        hold = clips.before_seconds + streak + 3.0 if self.clips is not None else 0.0
        spec = CaptureSpec(url, cfg.name, cfg.sample_interval_seconds, cfg.decode, cfg.transport,
                           cfg.open_timeout_seconds, cfg.frozen_after_seconds,
                           # With zones the model sees only their part of the frame: keep enough
                           # pixels for it.
                           round(settings.preprocess.max_pixels / shown),
                           clip_hold_s=hold, clip_bytes_per_s=clips.max_mbit_per_second * 1e6 / 8)
        source = await stack.enter_async_context(LiveSource(
            spec, down_alert_after_s=cfg.down_alert_after_seconds, on_change=self._changed,
            keep_full=any(t.verify for t in cfg.targets), capture=self.capture))
        self._live = source
        # Two at once: one frame with the model while the next is prepared.
        return (source.samples(self.stopping, account=self._account),
                analyzer(FailFast(self.watch), source.newest), 2)

    def _account(self, dropped: str | None, n: int) -> None:
        """``n`` sampling intervals went by: sampled (None), or dropped at the source, and why."""
        self.metrics.intervals.labels(self.cfg.name).inc(n)
        if self._live is not None:
            received = self._live.reader.received
            self.metrics.capture_bytes.labels(self.cfg.name).inc(max(0, received - self._received))
            self._received = received
        if dropped == "stale":
            self._behind("samples went stale: the model or the daemon was too busy to take them")
        if dropped is not None:
            self.metrics.frames_dropped.labels(self.cfg.name, dropped).inc(n)
            if self.board is not None:
                self.board.dropped(self.cfg.name, dropped, n)

    def _behind(self, why: str) -> None:
        """This camera fell behind: counted for the overload line, shown on the console."""
        if self.overload is not None:
            self.overload.behind(self.cfg.name, time.monotonic())
        if self.board is not None:
            self.board.fell_behind(self.cfg.name, why)

    async def _counted(self, samples: AsyncIterator[Sample]) -> AsyncIterator[Sample]:
        """A recording's samples: one per interval of media time, so each is an interval."""
        async for sample in samples:
            self._account(None, 1)
            yield sample

    def _changed(self, change: StateChange) -> None:
        """A live source's news, on the event loop."""
        name, log = self.cfg.name, self._log.bind(stream=self.cfg.name)  # called outside our task
        if change.kind == "reconnect":
            self.metrics.stream_reconnects.labels(name).inc()
        elif change.kind == "decode":
            log.info("decoding", mode=change.detail)
        elif change.kind in ("up", "down"):
            up = change.kind == "up"
            self.metrics.stream_up.labels(name).set(1 if up else 0)
            if self.board is not None:
                self.board.state(name, up, change.detail)
            if up:
                log.info("stream up")
            else:
                log.warning("stream down", reason=change.detail)
            self._announcements.create_task(self.dispatcher.camera(name, up))
        else:
            alert = Alert.stream_state(name, change.kind == "stream_up", datetime.now(UTC), change.detail)
            self._announcements.create_task(self.dispatcher.publish(alert))

    def _show(self, result: SampleResult, reason: str | None, min_conf: int) -> None:
        assert self.board is not None
        outcome = "reused" if result.reused else "asked" if result.analysis is not None else "dropped"
        verdicts = [TargetView(r.target.name, r.verdict.present if r.verdict else None,
                            r.verdict.confidence if r.verdict else None,
                            r.verdict.description if r.verdict else str(r.error or ""),
                            r.observation(min_conf) is Observation.MATCH,
                            self.detectors[r.target.name].progress()) for r in result.targets]
        prepared = result.prepared if not result.reused else None
        self.board.sample(self.cfg.name, wall=result.sample.wall, offset=result.sample.offset,
                          outcome=outcome, reason=reason, verdicts=verdicts,
                          frame=prepared.jpeg if prepared else None,
                          thumb=prepared.thumb if prepared else None)

    def _seen(self, result: SampleResult, r: TargetResult) -> Seen:
        sample, prepared, verdict = result.sample, result.prepared, r.verdict
        assert verdict is not None
        mark = None
        if prepared is not None and verdict.box is not None:
            x1, y1, x2, y2 = verdict.box
            w, h = prepared.width, prepared.height
            mark = (max(0.0, x1 / w), max(0.0, y1 / h), min(1.0, x2 / w), min(1.0, y2 / h))
        return Seen(sample.offset, sample.wall, verdict.confidence, verdict.description,
                    prepared.jpeg if prepared else None, result.analysis.model if result.analysis else None,
                    r.box, mark, (sample.full or partial(to_bgr, sample.frame)) if r.target.verify else None,
                    prepared.view if prepared else None)

    async def _confirmed(self, r: TargetResult, event: Raised[Seen]) -> bool:
        """A second look at the frame that completed the streak; False holds the alert back."""
        last = event.last
        if last.frame is None:
            return True
        frame = await asyncio.to_thread(last.frame)
        outcome = await second_look(self.client, frame, r.target, region(last.box, last.view),
                                    self.settings.preprocess, self.settings.detection.min_confidence)
        result = "error" if outcome.error else "confirmed" if outcome.confirmed else "refused"
        self.metrics.verifications.labels(result).inc()
        self.metrics.verification_seconds.observe(outcome.seconds)
        # A poster that is always there is refused every sample: a line a minute, not a second.
        left_out = 0 if outcome.confirmed else self._repeats.check(f"verify {r.target.name}",
                                                                   time.monotonic())
        if left_out is not None:
            self._log.info("second look " + result, target=r.target.name, offset=last.offset,
                           **({"error": str(outcome.error)} if outcome.error else {}),
                           **({"description": outcome.verdict.description} if outcome.verdict else {}),
                           **({"same_since_last": left_out} if left_out else {}))
        return outcome.confirmed

    def _clip(self, alert: Alert, first: Seen) -> None:
        """Order the alert's clip: from the camera's held packets, or cut from the recording."""
        if self.clips is None:
            return
        before, after = self.settings.clips.before_seconds, self.settings.clips.after_seconds
        if self._live is not None:
            self.clips.order(self._live.reader, alert, first.wall, before, after)
        else:
            self.clips.cut(self.cfg.url.get_secret_value(), alert, first.offset, before, after)

    def _cooling(self, target: str, offset: float) -> bool:
        last = self._last_alert.get(target)
        return last is not None and offset - last < self.settings.detection.cooldown_seconds

    async def _handle(self, result: SampleResult) -> None:
        name, sample = self.cfg.name, result.sample
        min_conf = self.settings.detection.min_confidence
        self.metrics.frames_sampled.labels(name).inc()
        if result.off_schedule:
            self.metrics.frames_dropped.labels(name, "off_schedule").inc()
            if self.board is not None:
                self.board.dropped(name, "off_schedule")
            return
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
            self._behind("the daemon is short of CPU: answers were read too late")
        elif error is not None:
            reason = "model_unavailable" if isinstance(error, Unavailable) else "model_error"
            self.metrics.frames_dropped.labels(name, reason).inc()
            self.watch.note(error)
        if self._live is not None:
            self.metrics.capture_lag.observe(sample.lag)
            if sample.lag > CAPTURE_BEHIND_S:
                self._behind(f"capture is {sample.lag:.0f} s behind the camera")
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
            obs = r.observation(min_conf)
            if r.error is not None:
                continue
            verdict = r.verdict
            assert verdict is not None
            self._log.debug("verdict", target=r.target.name, offset=sample.offset,
                            present=verdict.present, confidence=verdict.confidence)
            if obs is Observation.MATCH:
                self.metrics.matches.labels(name, r.target.name).inc()
            seen = self._seen(result, r)
            event = self.detectors[r.target.name].observe(obs, seen)
            if isinstance(event, Raised) and self._cooling(r.target.name, event.first.offset):
                self._log.info("target detected again within the cooldown; no alert",
                               target=r.target.name, offset=event.first.offset)
            elif isinstance(event, Raised) and r.target.verify and not await self._confirmed(r, event):
                self.detectors[r.target.name].refuse(event)
            elif isinstance(event, Raised):
                first, last = event.first, event.last
                self._last_alert[r.target.name] = first.offset
                alert = Alert.detected(name, r.target.name, first.wall, first.offset,
                                       last.confidence, last.description, last.model, last.box)
                self.metrics.alerts.labels(name, r.target.name).inc()
                self._log.info("target detected", target=r.target.name, alert_id=alert.id,
                               first_seen_offset_seconds=first.offset)
                snapshot = last.jpeg
                if snapshot is not None and last.mark is not None:
                    snapshot = await asyncio.to_thread(with_box, snapshot, last.mark)
                await self.dispatcher.publish(alert, snapshot=snapshot)
                self._clip(alert, first)
            elif isinstance(event, Cleared):
                last = event.last_seen
                self._log.info("target cleared", target=r.target.name, last_seen=last.offset)
                await self.dispatcher.publish(Alert.cleared(name, r.target.name, last.wall, last.offset))
        if self.board is not None:  # after the detectors: the streak shown includes this sample
            self._show(result, reason, min_conf)

