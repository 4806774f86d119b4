"""The daemon: streams → analysis → detectors → alerts, under one TaskGroup.

Lifecycle (after uvicorn/hypercorn): ``run(shutdown)`` takes the event that
ends it, so signals only set that event and tests pass their own. Shutdown
stops sampling, gives in-flight analysis a grace period, then gives pending
alert deliveries another, and returns the exit code.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from monitor import __version__, logs
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.outbox import Outbox
from monitor.alerts.sinks import make_sinks
from monitor.alerts.snapshots import Snapshots
from monitor.config import Config, ConfigError, StreamConfig, load_config
from monitor.http import HttpServer
from monitor.metrics import Metrics
from monitor.modelwatch import ModelWatch
from monitor.stream import Shared, StreamRunner
from monitor.systemd import Notifier
from monitor.vlm import VlmClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class DaemonError(Exception):
    """The daemon cannot start or go on; one line for the user. ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


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
