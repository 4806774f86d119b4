"""One stream's task: its source, the analysis of its samples, its detectors, its alerts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import structlog

from monitor import logs
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.model import Alert
from monitor.alerts.snapshots import Snapshots
from monitor.backoff import backoff_delay
from monitor.config import Config, StreamConfig
from monitor.detector import Cleared, Detector, Observation, Raised
from monitor.metrics import Metrics
from monitor.modelwatch import ModelWatch
from monitor.pipeline import FrameAnalyzer, SampleResult, ordered
from monitor.scene import SceneGate
from monitor.sources.base import SourceError
from monitor.sources.files import file_samples
from monitor.sources.live import Availability, LiveReader, live_samples, newest
from monitor.urls import is_live
from monitor.vlm import BadAnswer, Rejected, Unavailable, VlmClient


@dataclass(frozen=True, slots=True)
class Seen:
    """What the detector remembers of a matching sample."""

    offset: float
    wall: datetime
    confidence: int
    description: str
    jpeg: bytes | None  # what the model was shown, for the alert's snapshot


@dataclass(frozen=True, slots=True)
class Shared:
    """What every stream uses and the daemon owns."""

    client: VlmClient
    watch: ModelWatch
    dispatcher: Dispatcher
    metrics: Metrics
    snapshots: Snapshots | None


class StreamRunner:
    """One stream: its source, its detectors (one per target), its alerts."""

    def __init__(self, cfg: StreamConfig, config: Config, shared: Shared) -> None:
        self.cfg = cfg
        self.config = config  # for detection and preprocess (what a reload may change)
        self.client = shared.client
        self.watch = shared.watch
        self.dispatcher = shared.dispatcher
        self.metrics = shared.metrics
        self.snapshots = shared.snapshots
        self.stopping = asyncio.Event()  # set to stop this stream alone
        self.task: asyncio.Task[None] | None = None
        self.failed = False
        self._down_reason = ""
        self._last_alert: dict[str, float] = {}  # target -> offset of its last alert
        det = config.detection
        self.detectors: dict[str, Detector[Seen]] = {
            t.name: Detector(det.consecutive_matches, det.rearm_after_absent) for t in cfg.targets}
        self.metrics.declare_stream(cfg.name, [t.name for t in cfg.targets])
        self._log = logs.get("monitor.stream")

    async def _wait_for_model(self, error: Unavailable, attempt: int) -> bool:
        """Files wait for the model server rather than lose frames; False once stopping."""
        if error.outcome != "server_error":  # unreachable: the watch probes until it is back
            self.watch.report_down(str(error))
        waits = [asyncio.create_task(self.watch.ready.wait()), asyncio.create_task(self.stopping.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not self.stopping.is_set():
            # A server that answers but fails (5xx) is retried with backoff, not in a hot loop.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff_delay(attempt, 0.5, 30.0))
        for w in waits:
            w.cancel()
        return not self.stopping.is_set()

    async def run(self) -> None:
        structlog.contextvars.bind_contextvars(stream=self.cfg.name)
        url = self.cfg.url.get_secret_value()
        name = self.cfg.name
        live = is_live(url)
        self._log.info("stream starting", url=self.cfg.display_url, live=live,
                       targets=[t.name for t in self.cfg.targets])
        sc = self.config.scene_change
        gate = SceneGate(pixel_delta=sc.pixel_delta, min_changed_fraction=sc.min_changed_fraction,
                         max_reuse_seconds=sc.max_reuse_seconds) if sc.enabled else None
        reader = self._start_live(url) if live else None
        pre = self.config.preprocess
        if self.cfg.max_pixels is not None:
            pre = pre.model_copy(update={"max_pixels": self.cfg.max_pixels})
        analyzer = FrameAnalyzer(
            self.client, self.cfg.targets, pre,
            wait_for_model=None if live else self._wait_for_model,
            model_ready=self.watch.ready.is_set if live else None, gate=gate,
            refresh=(lambda s: newest(reader, s)) if reader is not None else None)
        try:
            if reader is not None:
                source = live_samples(
                    reader, self.cfg.sample_interval_seconds, self.stopping,
                    on_skipped=lambda n: self.metrics.frames_dropped.labels(name, "stale").inc(n))
                window = 2
            else:
                source = file_samples(url, self.cfg.sample_interval_seconds,
                                      realtime=self.cfg.realtime, stop=self.stopping)
                self.metrics.stream_up.labels(name).set(1)
                window = self.config.vlm.max_concurrency
            samples = 0
            async for _, result in ordered(source, analyzer, window):
                samples += 1
                self._handle(result)
            self._log.info("stream stopped" if self.stopping.is_set() else "stream finished",
                           samples=samples)
        except SourceError as e:
            self.failed = True
            self._log.error("stream failed", error=str(e))
        except Exception as e:  # one stream's bug must not take the others down
            self.failed = True
            self._log.error("stream crashed", error=f"{type(e).__name__}: {e}", exc_info=True)
        finally:
            self.metrics.stream_up.labels(name).set(0)
            if reader is not None:
                reader.stop()
                await asyncio.to_thread(reader.join, 15.0)

    def _start_live(self, url: str) -> LiveReader:
        cfg, name = self.cfg, self.cfg.name
        loop = asyncio.get_running_loop()
        log = self._log.bind(stream=name)  # the reader's thread has no contextvars of ours
        availability = Availability(cfg.down_alert_after_seconds)

        def announce(event: str | None) -> None:
            if event is not None:
                reason = "receiving frames" if event == "stream_up" else self._down_reason
                self.dispatcher.publish(
                    Alert.stream_state(name, event == "stream_up", datetime.now(UTC), reason))

        def apply(kind: str, detail: str) -> None:  # on the event loop
            if kind == "reconnect":
                self.metrics.stream_reconnects.labels(name).inc()
            elif kind == "decode":
                log.info("decoding", mode=detail)
            else:
                up = kind == "up"
                self.metrics.stream_up.labels(name).set(1 if up else 0)
                if up:
                    log.info("stream up")
                else:
                    self._down_reason = detail
                    log.warning("stream down", reason=detail)
                    loop.call_later(cfg.down_alert_after_seconds,
                                    lambda: announce(availability.poll(loop.time())))
                announce(availability.update(up, loop.time()))

        def report(kind: str, detail: str) -> None:  # from the capture thread
            loop.call_soon_threadsafe(apply, kind, detail)

        reader = LiveReader(
            url, name, interval=cfg.sample_interval_seconds, decode=cfg.decode,
            transport=cfg.transport, open_timeout_s=cfg.open_timeout_seconds,
            frozen_after_s=cfg.frozen_after_seconds, report=report)
        reader.start()
        return reader

    def _cooling(self, target: str, offset: float) -> bool:
        last = self._last_alert.get(target)
        return last is not None and offset - last < self.config.detection.cooldown_seconds

    def _with_snapshot(self, alert: Alert, jpeg: bytes) -> Alert:
        assert self.snapshots is not None
        try:
            name = self.snapshots.save(alert.id, jpeg)
        except OSError as e:  # a full disk must not cost the alert itself
            self._log.error("cannot save the alert's snapshot", error=e.strerror or type(e).__name__)
            return alert
        return replace(alert, fields={**alert.fields, "snapshot": name})

    def _handle(self, result: SampleResult) -> None:
        name, sample = self.cfg.name, result.sample
        min_conf = self.config.detection.min_confidence
        self.metrics.frames_sampled.labels(name).inc()
        if result.reused:
            self.metrics.verdicts_reused.labels(name).inc()
        elif result.analysis is not None:
            self.metrics.frame_age.labels(name).observe(time.monotonic() - sample.captured)
        for r in result.targets:
            obs = r.observation(min_conf)
            if r.error is not None:
                reason = "model_unavailable" if isinstance(r.error, Unavailable) else "model_error"
                if isinstance(r.error, Unavailable) and r.error.outcome in ("connection_error", "timeout"):
                    self.watch.report_down(str(r.error))  # opens the circuit until the watch sees it back
                self.metrics.frames_dropped.labels(name, reason).inc()
                level = self._log.warning if isinstance(r.error, BadAnswer | Rejected) else self._log.debug
                level("sample not analysed", target=r.target.name, offset=sample.offset,
                      error=str(r.error))
                continue
            verdict = r.verdict
            assert verdict is not None
            self._log.debug("verdict", target=r.target.name, offset=sample.offset,
                            present=verdict.present, confidence=verdict.confidence)
            if obs is Observation.MATCH:
                self.metrics.matches.labels(name, r.target.name).inc()
            jpeg = result.prepared.jpeg if result.prepared else None
            seen = Seen(sample.offset, sample.wall, verdict.confidence, verdict.description, jpeg)
            event = self.detectors[r.target.name].observe(obs, seen)
            if isinstance(event, Raised) and self._cooling(r.target.name, event.first.offset):
                self._log.info("target detected again within the cooldown; no alert",
                               target=r.target.name, offset=event.first.offset)
            elif isinstance(event, Raised):
                first, last = event.first, event.last
                self._last_alert[r.target.name] = first.offset
                alert = Alert.detected(name, r.target.name, first.wall, first.offset,
                                       last.confidence, last.description)
                if self.snapshots is not None and last.jpeg is not None:
                    alert = self._with_snapshot(alert, last.jpeg)
                self.metrics.alerts.labels(name, r.target.name).inc()
                self._log.info("target detected", target=r.target.name, alert_id=alert.id,
                               first_seen_offset_seconds=first.offset)
                self.dispatcher.publish(alert)
            elif isinstance(event, Cleared):
                last = event.last_seen
                self._log.info("target cleared", target=r.target.name, last_seen=last.offset)
                self.dispatcher.publish(Alert.cleared(name, r.target.name, last.wall, last.offset))
