"""One stream's task: open its source, run the ordered analysis, close.

The source (a file, or a live camera with its reader thread and hold-off
timer) owns its own lifecycle and hands on samples, or why an interval gave
none. Each result is counted once (``accounting``) and its verdicts are
turned into what to publish by pure logic (``alerting``); this module does the
I/O that calls for (a second look, the snapshot, publishing through
``Dispatcher.publish``, ordering the clip).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from monitor import logs
from monitor.accounting import StreamAccount, Tally
from monitor.alerting import Alerting, Detected, Ended, Verify
from monitor.alerts.clips import ClipStore
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.model import Alert
from monitor.alerts.sink import LiveState
from monitor.alerts.snapshots import with_box
from monitor.backoff import backoff_delay
from monitor.board import THUMB_WIDTH, Board
from monitor.config import StreamSettings
from monitor.feedback import Feedback
from monitor.load import Overload
from monitor.metrics import Metrics
from monitor.modelwatch import FailFast, ModelPolicy, ModelWatch, WaitForServer
from monitor.pipeline import FrameAnalyzer, SampleResult, ordered
from monitor.scene import SceneGate
from monitor.schedule import zone
from monitor.sources.base import Dropped, Sample, SourceError
from monitor.sources.files import file_samples
from monitor.sources.live import LiveSource, StateChange
from monitor.sources.pool import CapturePool
from monitor.sources.worker import CaptureSpec
from monitor.urls import is_live
from monitor.verify import region, second_look
from monitor.vlm import VlmClient
from monitor.zones import area, view_for

# A live stream that crashed starts again after 0.5-1 s, the pause doubling up to this.
RESTART_CAP_S = 60.0


@dataclass(frozen=True, slots=True)
class Shared:
    """What every stream uses and the daemon owns."""

    client: VlmClient
    watch: ModelWatch
    dispatcher: Dispatcher  # events, to the sinks that want them
    state: LiveState  # what is current, to the sinks that show it
    metrics: Metrics
    board: Board | None = None  # what the console shows; None when it is off
    feedback: Feedback | None = None  # judged alerts: their false alarms go into the prompts
    capture: CapturePool | None = None  # the worker processes live cameras are received in
    overload: Overload | None = None  # which cameras fell behind
    clips: ClipStore | None = None  # each alert's clip


def capture_spec(settings: StreamSettings, url: str, *, clips: bool) -> CaptureSpec:
    """How a live camera is to be captured, from its stream's settings. Pure."""
    cfg = settings.stream
    # With zones the model sees only their part of the frame: keep enough pixels for it.
    shown = area(view_for([cfg.zone_polygons(t) for t in cfg.targets]))
    # Packets are held for a clip's seconds before the target appeared, and for as long as the
    # alert takes to be raised after that: the rest of the streak, and 3 s for the model (an
    # alert later than that gets a clip that starts late, and says so).
    streak = (settings.detection.consecutive_matches - 1) * cfg.sample_interval_seconds
    hold = settings.clips.before_seconds + streak + 3.0 if clips else 0.0
    return CaptureSpec(url, cfg.name, cfg.sample_interval_seconds, cfg.decode, cfg.transport,
                       cfg.open_timeout_seconds, cfg.frozen_after_seconds,
                       round(settings.preprocess.max_pixels / shown), clip_hold_s=hold,
                       clip_bytes_per_s=settings.clips.max_mbit_per_second * 1e6 / 8)


class StreamRunner:
    """One stream's lifecycle: open its source, run the ordered analysis, close.

    What each result means is decided elsewhere: ``StreamAccount`` counts it
    (metrics, tally, console), ``Alerting`` turns its verdicts into what to
    publish; this task does the I/O those decisions call for.
    """

    def __init__(self, settings: StreamSettings, shared: Shared) -> None:
        self.settings = settings
        self.cfg = settings.stream
        self.client = shared.client
        self.watch = shared.watch
        self.dispatcher = shared.dispatcher
        self.state = shared.state
        self.metrics = shared.metrics
        self.board = shared.board
        self.feedback = shared.feedback
        self.capture = shared.capture
        self.clips = shared.clips if settings.clips.enabled else None
        self.live = is_live(settings.stream.url.get_secret_value())
        self.account = StreamAccount(self.cfg.name, shared.metrics, shared.board, shared.overload, self.live)
        self.alerting = Alerting(self.cfg.name, self.cfg.targets, settings.detection)
        self._live: LiveSource | None = None
        self.stopping = asyncio.Event()  # set to stop this stream alone
        self.task: asyncio.Task[None] | None = None
        self.failed = False
        self._repeats = logs.Repeats()  # a second look refused every sample is one line a minute
        self._announcements: asyncio.TaskGroup  # stream_down/up being published, while running
        self.metrics.declare_stream(self.cfg.name, [t.name for t in self.cfg.targets])
        self._log = logs.get("monitor.stream")

    @property
    def tally(self) -> Tally:
        return self.account.tally

    async def run(self) -> None:
        structlog.contextvars.bind_contextvars(stream=self.cfg.name)
        url = self.cfg.url.get_secret_value()
        self._log.info("stream starting", url=self.cfg.display_url, live=self.live,
                       targets=[t.name for t in self.cfg.targets])
        try:
            # The group holds stream_down/up alerts on their way to the outbox; it is left
            # only once they are stored, after the source has stopped.
            async with asyncio.TaskGroup() as self._announcements:
                attempt = 0
                while True:
                    began = time.monotonic()
                    if not await self._run(url) or not self.live or self.stopping.is_set():
                        break
                    # A bug met by one camera's frames: the camera is still there to watch.
                    if time.monotonic() - began > RESTART_CAP_S:
                        attempt = 0  # it had run a while: not a crash loop
                    delay = backoff_delay(attempt, 1.0, RESTART_CAP_S)
                    attempt += 1
                    self.metrics.stream_up.labels(self.cfg.name).set(0)
                    if self.board is not None:
                        self.board.state(self.cfg.name, False, f"crashed; restarting in {delay:.0f} s")
                    try:
                        await asyncio.wait_for(self.stopping.wait(), delay)
                        break
                    except TimeoutError:
                        self.failed = False
                        self._log.info("stream restarting")
        finally:
            self.metrics.stream_up.labels(self.cfg.name).set(0)

    async def _run(self, url: str) -> bool:
        """One run of the stream, until it ends, fails or stops; whether it crashed."""
        try:
            async with AsyncExitStack() as stack:
                samples, analyzer, window = await self._open(stack, url)
                async for _, result in ordered(self._accounted(samples), analyzer, window):
                    await self._handle(result)
            tally = self.tally
            self._log.info("stream stopped" if self.stopping.is_set() else "stream finished",
                           samples=tally.samples, analysed=tally.analysed, model_errors=tally.model_errors)
        except SourceError as e:
            self.failed = True
            self._log.error("stream failed", error=str(e))
        except Exception as e:  # one stream's bug must not take the others down
            self.failed = True
            self._log.error("stream crashed", error=f"{type(e).__name__}: {e}", exc_info=True)
            return True
        return False

    async def _open(self, stack: AsyncExitStack,
                    url: str) -> tuple[AsyncIterator[Sample | Dropped], FrameAnalyzer, int]:
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
        if not self.live:
            self.metrics.stream_up.labels(cfg.name).set(1)
            if self.board is not None:
                self.board.state(cfg.name, True, "reading the file")
            await self.state.camera(cfg.name, True)
            analyze = analyzer(WaitForServer(self.watch, self.stopping), None)
            samples = file_samples(url, cfg.sample_interval_seconds, realtime=cfg.realtime,
                                   stop=self.stopping)
            return samples, analyze, settings.window
        source = await stack.enter_async_context(LiveSource(
            capture_spec(settings, url, clips=self.clips is not None),
            down_alert_after_s=cfg.down_alert_after_seconds, on_change=self._changed,
            keep_full=any(t.verify for t in cfg.targets), capture=self.capture))
        self._live = source
        # Two at once: one frame with the model while the next is prepared.
        return source.samples(self.stopping), analyzer(FailFast(self.watch), source.newest), 2

    async def _accounted(self, items: AsyncIterator[Sample | Dropped]) -> AsyncIterator[Sample]:
        """The source's samples; every interval it stands for is accounted for on the way (a
        recording's sample is one interval of media time)."""
        async for item in items:
            received = self._live.reader.received if self._live is not None else None
            if isinstance(item, Dropped):
                self.account.intervals(item.reason, item.count, received)
            else:
                self.account.intervals(None, 1, received)
                yield item

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
            self._announcements.create_task(self.state.camera(name, up))
        else:
            alert = Alert.stream_state(name, change.kind == "stream_up", datetime.now(UTC), change.detail)
            self._announcements.create_task(self.dispatcher.publish(alert))

    async def _handle(self, result: SampleResult) -> None:
        min_conf = self.settings.detection.min_confidence
        reason = self.account.result(result, min_conf)
        if result.off_schedule:
            return
        for r in result.targets:
            if r.verdict is not None:
                self._log.debug("verdict", target=r.target.name, offset=result.sample.offset,
                                present=r.verdict.present, confidence=r.verdict.confidence)
        for step in self.alerting.observe(result):
            if isinstance(step, Verify):
                confirmed = self.alerting.confirmed(step, await self._second_look(step))
                if confirmed is not None:
                    await self._publish(confirmed)
            elif isinstance(step, Detected):
                await self._publish(step)
            elif isinstance(step, Ended):
                self._log.info("target cleared", target=step.alert.fields["target"],
                               last_seen=step.last.offset)
                await self.dispatcher.publish(step.alert)
            else:
                self._log.info("target detected again within the cooldown; no alert",
                               target=step.target, offset=step.offset)
        # After the detectors: the streak shown includes this sample.
        self.account.show(result, reason, min_conf, self.alerting.progress)

    async def _second_look(self, step: Verify) -> bool:
        """A second look at the frame that completed the streak; False holds the alert back."""
        last, target = step.event.last, step.target
        assert last.frame is not None
        frame = await asyncio.to_thread(last.frame)
        outcome = await second_look(self.client, frame, target, region(last.box, last.view),
                                    self.settings.preprocess, self.settings.detection.min_confidence)
        result = "error" if outcome.error else "confirmed" if outcome.confirmed else "refused"
        self.metrics.verifications.labels(result).inc()
        self.metrics.verification_seconds.observe(outcome.seconds)
        # A poster that is always there is refused every sample: a line a minute, not a second.
        left_out = 0 if outcome.confirmed else self._repeats.check(f"verify {target.name}", time.monotonic())
        if left_out is not None:
            self._log.info("second look " + result, target=target.name, offset=last.offset,
                           **({"error": str(outcome.error)} if outcome.error else {}),
                           **({"description": outcome.verdict.description} if outcome.verdict else {}),
                           **({"same_since_last": left_out} if left_out else {}))
        return outcome.confirmed

    async def _publish(self, detected: Detected) -> None:
        """The alert, its snapshot (the box drawn on what the model saw), then its clip."""
        alert, first, last = detected.alert, detected.first, detected.last
        self.metrics.alerts.labels(self.cfg.name, alert.fields["target"]).inc()
        self._log.info("target detected", target=alert.fields["target"], alert_id=alert.id,
                       first_seen_offset_seconds=first.offset)
        snapshot = last.jpeg
        if snapshot is not None and last.mark is not None:
            snapshot = await asyncio.to_thread(with_box, snapshot, last.mark)
        await self.dispatcher.publish(alert, snapshot=snapshot)
        if self.clips is None:
            return
        before, after = self.settings.clips.before_seconds, self.settings.clips.after_seconds
        if self._live is not None:
            self.clips.order(self._live.reader, alert, first.wall, before, after)
        else:
            self.clips.cut(self.cfg.url.get_secret_value(), alert, first.offset, before, after)
