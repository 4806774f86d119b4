"""The daemon: streams → analysis → detectors → alerts, under one TaskGroup.

Lifecycle (after uvicorn/hypercorn): ``run(shutdown)`` takes the event that
ends it, so signals only set that event and tests pass their own. Shutdown
stops sampling, gives in-flight analysis a grace period, then gives pending
alert deliveries another, and returns the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import structlog

from monitor import __version__, logs
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.model import Alert
from monitor.alerts.outbox import Outbox
from monitor.alerts.sinks import make_sinks
from monitor.alerts.snapshots import Snapshots
from monitor.backoff import backoff_delay
from monitor.config import Config, ConfigError, StreamConfig, load_config
from monitor.detector import Cleared, Detector, Observation, Raised
from monitor.http import HttpServer
from monitor.live import Availability, LiveReader, live_samples, newest
from monitor.metrics import Metrics
from monitor.pipeline import FrameAnalyzer, SampleResult, ordered
from monitor.scene import SceneGate
from monitor.sources import SourceError, file_samples, is_live
from monitor.systemd import Notifier
from monitor.vlm import BadAnswer, Rejected, Unavailable, VlmClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class DaemonError(Exception):
    """The daemon cannot start or go on; one line for the user. ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Seen:
    """What the detector remembers of a matching sample."""

    offset: float
    wall: datetime
    confidence: int
    description: str
    jpeg: bytes | None  # what the model was shown, for the alert's snapshot


class ModelWatch:
    """Knows whether the model server is usable; probes it, with backoff, while it is not.

    Logs only when the state or the reason changes, so a dead server is one
    line, not one per frame.
    """

    RECHECK_S = 30.0

    def __init__(self, client: VlmClient) -> None:
        self.client = client
        self.ready = asyncio.Event()
        self.fatal: str | None = None
        self.fatal_event = asyncio.Event()
        self.reason: str | None = "the model server has not been checked yet"
        self._wake = asyncio.Event()
        self._log = logs.get("monitor.vlm")

    def report_down(self, reason: str) -> None:
        if self.ready.is_set():
            self.ready.clear()
            self.reason = reason
            self._log.warning("model server unavailable", reason=reason)
        self._wake.set()

    async def run(self) -> None:
        attempt = 0
        last_reason: str | None = None
        while True:
            status = await self.client.check()
            if status.usable:
                if not self.ready.is_set():
                    self._log.info("model server ready", model=self.client.cfg.model,
                                   max_model_len=status.max_model_len)
                self.reason, last_reason, attempt = None, None, 0
                self.ready.set()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.RECHECK_S)
                continue
            self.ready.clear()
            self.reason = status.reason
            if status.reachable and not status.serves_model:
                # A wrong model name will not mend itself: say so and stop.
                self.fatal = status.reason
                self.fatal_event.set()
                return
            if status.reason != last_reason:
                self._log.warning("model server unavailable, retrying", reason=status.reason)
                last_reason = status.reason
            await asyncio.sleep(backoff_delay(attempt, 1.0, 30.0))
            attempt += 1


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


# Config sections a reload applies; the others need a restart.
RELOADABLE = frozenset({"streams", "detection", "preprocess", "scene_change"})


class Daemon:
    def __init__(self, config: Config, metrics: Metrics | None = None,
                 notifier: Notifier | None = None, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.notifier = notifier or Notifier()
        self.http: HttpServer | None = None
        self.started = asyncio.Event()  # set once the HTTP port is bound
        self.reloaded = asyncio.Event()  # set after each reload attempt (for tests and logs)
        self._reload_requested = asyncio.Event()
        self._streams: dict[str, StreamRunner] = {}
        self._log = logs.get("monitor.daemon")

    def request_reload(self) -> None:
        """SIGHUP: re-read the config file at the next turn of the main loop."""
        self._reload_requested.set()

    async def run(self, shutdown: asyncio.Event) -> int:
        config = self.config
        client = VlmClient(config.vlm, self.metrics)
        watch = ModelWatch(client)
        state_dir = config.resolved_state_dir()
        try:
            outbox = Outbox(state_dir / "outbox.sqlite3")
            snap = config.snapshots
            snapshots = Snapshots(state_dir / "snapshots", max_count=snap.max_count,
                                  max_age_s=snap.max_age_days * 86400,
                                  max_bytes=int(snap.max_total_mb * 1e6)) if snap.enabled else None
        except (OSError, sqlite3.Error) as e:
            await client.close()
            raise DaemonError(f"cannot use the state directory {state_dir}: "
                              f"{getattr(e, 'strerror', None) or e}") from None
        dispatcher = Dispatcher(make_sinks(config.alerts, config.sink_names(), snapshots),
                                self.metrics, outbox)
        shared = Shared(client, watch, dispatcher, self.metrics, snapshots)
        self.http = HttpServer(config.server.host, config.server.port, self.metrics,
                               readiness=lambda: watch.reason)
        try:
            await self.http.start()
        except OSError as e:
            await client.close()
            await dispatcher.close()
            raise DaemonError(f"cannot listen on {config.server.listen}: "
                              f"{e.strerror or type(e).__name__}") from None
        self._log.info("vlm-monitor started", version=__version__,
                       listen=f"{config.server.host}:{self.http.port}",
                       streams=len(config.streams), model=config.vlm.model)
        self.started.set()
        self.notifier.notify("READY=1", f"STATUS=watching {len(config.streams)} stream(s)")
        grace = config.shutdown_grace_seconds
        try:
            async with asyncio.TaskGroup() as tg:
                background = [tg.create_task(watch.run(), name="model-watch"),
                              tg.create_task(dispatcher.run(), name="alerts"),
                              tg.create_task(self._watchdog(), name="watchdog")]
                for stream in config.streams:
                    self._start_stream(tg, stream, config, shared)
                await self._main_loop(tg, shared, shutdown)
                self.notifier.notify("STOPPING=1")
                if any(r.task and not r.task.done() for r in self._streams.values()):
                    self._log.info("stopping", reason=watch.fatal or "signal")
                    await self._stop_streams(list(self._streams), grace)
                delivered = await dispatcher.drain(grace)
                for t in background:
                    t.cancel()
            pending = dispatcher.pending()
        finally:
            await self.http.stop()
            await client.close()
            await dispatcher.close()
            outbox.close()
        if watch.fatal:
            raise DaemonError(f"model server: {watch.fatal}")
        if not delivered:
            self._log.warning("alerts still pending are kept in the outbox for the next start",
                              count=pending, outbox=str(outbox.path))
        failed = [name for name, r in self._streams.items() if r.failed]
        # Stopped by a signal, pending alerts are safe on disk: that is a clean stop.
        # Ended because the files ended, the job is only done once they are delivered.
        finite_run = not shutdown.is_set()
        if failed or (finite_run and (not delivered or dispatcher.dead_letters)):
            self._log.error("vlm-monitor stopped with errors", failed_streams=failed,
                            undelivered_alerts=pending, dead_letters=dispatcher.dead_letters)
            return EXIT_FAILED
        self._log.info("vlm-monitor stopped")
        return EXIT_OK

    async def _main_loop(self, tg: asyncio.TaskGroup, shared: Shared, shutdown: asyncio.Event) -> None:
        """Until a signal, a fatal model error, or every stream has ended; reloads on request."""
        stop_signals = [asyncio.create_task(shutdown.wait()),
                        asyncio.create_task(shared.watch.fatal_event.wait())]
        try:
            while True:
                active = [r.task for r in self._streams.values() if r.task and not r.task.done()]
                if not active:
                    return
                reload = asyncio.create_task(self._reload_requested.wait())
                await asyncio.wait([*stop_signals, reload, *active], return_when=asyncio.FIRST_COMPLETED)
                reload.cancel()
                if any(t.done() for t in stop_signals):
                    return
                if self._reload_requested.is_set():
                    self._reload_requested.clear()
                    await self._reload(tg, shared)
        finally:
            for t in stop_signals:
                t.cancel()

    def _start_stream(self, tg: asyncio.TaskGroup, cfg: StreamConfig, config: Config,
                      shared: Shared) -> None:
        runner = StreamRunner(cfg, config, shared)
        runner.task = tg.create_task(runner.run(), name=f"stream-{cfg.name}")
        self._streams[cfg.name] = runner

    async def _stop_streams(self, names: list[str], grace: float) -> None:
        """Stop sampling, give in-flight analysis ``grace`` seconds, then cancel it."""
        runners = [self._streams[n] for n in names]
        for r in runners:
            r.stopping.set()
        tasks = [r.task for r in runners if r.task is not None and not r.task.done()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _reload(self, tg: asyncio.TaskGroup, shared: Shared) -> None:
        """Apply a new config's streams; a config that does not load changes nothing."""
        try:
            if self.config_path is None:
                raise ConfigError("no config file to reload from")
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as e:
            self._log.error("reload rejected; the running config stays", error=str(e))
            self.reloaded.set()
            return
        old = self.config
        fixed = [k for k in type(old).model_fields if k not in RELOADABLE
                 and getattr(old, k) != getattr(new, k)]
        if fixed:
            self._log.warning("these config sections change only on restart", sections=fixed)
        applied = old.model_copy(update={k: getattr(new, k) for k in RELOADABLE})
        everything = any(getattr(old, k) != getattr(new, k) for k in RELOADABLE - {"streams"})
        old_streams = {s.name: s for s in old.streams}
        new_streams = {s.name: s for s in new.streams}
        removed = [n for n in old_streams if n not in new_streams]
        changed = [n for n in old_streams if n in new_streams
                   and (everything or old_streams[n] != new_streams[n])]
        added = [n for n in new_streams if n not in old_streams]
        await self._stop_streams(removed + changed, old.shutdown_grace_seconds)
        for name in removed:
            del self._streams[name]
            self.metrics.forget_stream(name, [t.name for t in old_streams[name].targets])
        for name in changed + added:
            self._start_stream(tg, new_streams[name], applied, shared)
        self.config = applied
        self._log.info("config reloaded", added=added, removed=removed, restarted=changed)
        self.reloaded.set()

    async def _watchdog(self) -> None:
        """WATCHDOG=1 from the event loop itself: if the loop wedges, the pings stop."""
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
