"""The daemon: streams → analysis → detectors → alerts, under one TaskGroup.

Lifecycle (after uvicorn's ``server.py`` and hypercorn's ``run.py``): ``run``
is three steps, startup, main loop, shutdown, around one ``AsyncExitStack``
that every part is entered on, so whatever path leaves ``run`` (a failed
start, a signal, a crash) closes what was opened, in reverse order. It takes
the event that ends it, so signals only set that event and tests pass their
own. What the exit code is, and what a reload changes, are pure functions.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from monitor import __version__, logs, malloc
from monitor.alerts.clips import ClipStore, clip_files
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.outbox import Outbox
from monitor.alerts.sink import LiveState, Sink
from monitor.alerts.sinks import make_sinks
from monitor.alerts.snapshots import Snapshots
from monitor.board import Board
from monitor.config import Config, ConfigError, load_config
from monitor.console.auth import load_key
from monitor.console.camera_api import Fleet
from monitor.console.revoked import Revoked
from monitor.console.scans import Scans
from monitor.console.web import Console
from monitor.feedback import Feedback
from monitor.http import HttpServer
from monitor.load import LoopLag, Overload
from monitor.metrics import Metrics
from monitor.modelwatch import ModelWatch
from monitor.running import Streams, plan_reload, stream_targets
from monitor.shards import Shard
from monitor.sources.pool import CapturePool, worker_count
from monitor.stream import Shared
from monitor.systemd import Notifier
from monitor.urls import is_live
from monitor.vlm import VlmClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class DaemonError(Exception):
    """The daemon cannot start or go on; one line for the user. ``code`` is the exit code:
    2 for what the user must fix (config, model name), 1 for what may pass (a disk, a port)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# --- pure rules ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended, as far as the exit code cares."""

    signalled: bool  # stopped by a signal, not because the files ended
    fatal: str | None  # the model server can never be used (wrong model name)
    failed_streams: list[str]
    unusable: dict[str, str]  # stream -> last error, for streams the model could judge no sample of
    undelivered: int
    dead_letters: int


def exit_code(o: Outcome) -> tuple[int, str | None]:
    """The exit code, and the one line for stderr when it is an error. Pure.

    Stopped by a signal, pending alerts are safe on disk: that is a clean stop.
    Ended because the files ended, the job is done only once they are delivered,
    and a run in which the model judged nothing is an unusable model server.
    """
    if o.fatal:
        return EXIT_USAGE, f"model server: {o.fatal}"
    if o.unusable and not o.signalled:
        name, error = next(iter(o.unusable.items()))
        return EXIT_USAGE, f"model server: no sample of stream {name!r} could be analysed ({error})"
    if o.failed_streams:
        return EXIT_FAILED, None
    if not o.signalled and (o.undelivered or o.dead_letters):
        return EXIT_FAILED, None
    return EXIT_OK, None


# --- the daemon ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Stores:
    outbox: Outbox
    snapshots: Snapshots | None
    clips: Snapshots
    sinks: list[Sink]
    dispatcher: Dispatcher
    key: bytes | None  # the console's signing key; None when the console is off


def _unusable(state_dir: Path, e: OSError | sqlite3.Error) -> DaemonError:
    return DaemonError(f"cannot use the state directory {state_dir}: "
                       f"{getattr(e, 'strerror', None) or e}", EXIT_FAILED)


class Daemon:
    def __init__(self, config: Config, metrics: Metrics | None = None,
                 notifier: Notifier | None = None, config_path: Path | None = None,
                 shard: Shard | None = None) -> None:
        self.shard = shard
        self.config = self._own(config)
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.notifier = notifier or Notifier()
        self.http: HttpServer | None = None
        self.started = asyncio.Event()  # set once the HTTP port is bound
        self.reloaded = asyncio.Event()  # set after each reload attempt (for tests and logs)
        self._reload_requested = asyncio.Event()
        self._log = logs.get("monitor.daemon")

    def _own(self, config: Config) -> Config:
        """The config as this replica runs it: only the streams of its shard."""
        if self.shard is None:
            return config
        owned = set(self.shard.select(s.name for s in config.streams))
        return config.model_copy(update={"streams": [s for s in config.streams if s.name in owned]})

    def request_reload(self) -> None:
        """SIGHUP: re-read the config file at the next turn of the main loop."""
        self._reload_requested.set()

    async def run(self, shutdown: asyncio.Event) -> int:
        asyncio.get_running_loop().set_exception_handler(logs.LoopErrors())
        async with AsyncExitStack() as stack:
            streams = await self._startup(stack)
            await self._main_loop(streams, shutdown)
            outcome = await self._shutdown(streams, shutdown)
        code, message = exit_code(outcome)
        if message is not None:
            raise DaemonError(message, code)
        if code == EXIT_OK:
            self._log.info("vlm-monitor stopped")
        else:
            self._log.error("vlm-monitor stopped with errors", failed_streams=outcome.failed_streams,
                            undelivered_alerts=outcome.undelivered, dead_letters=outcome.dead_letters)
        return code

    async def _startup(self, stack: AsyncExitStack) -> Streams:
        config = self.config
        loop_lag = LoopLag(self.metrics)
        overload = Overload(self.metrics)
        client = VlmClient(config.vlm, self.metrics, loop_lag)
        stack.push_async_callback(client.close)
        watch = ModelWatch(client)
        state_dir = config.resolved_state_dir()
        stores = await open_stores(config, self.metrics, stack, state_dir, watch)
        dispatcher, clips, key = stores.dispatcher, stores.clips, stores.key
        console = await open_console(config, self.metrics, self.shard, stack, state_dir, stores, client,
                                     partial(self._fleet, client, dispatcher))
        board, scans, feedback = (console.board, console.scans, console.feedback) if console else (None,) * 3
        self.http = await self._listen(stack, console, lambda: watch.reason or dispatcher.problem)
        # The links in clip_ready events name the console as people reach it.
        store = ClipStore(clips, config.clips, dispatcher, self.metrics, key,
                          config.server.public_url or f"http://{config.server.listen.rpartition(':')[0]}:"
                                                      f"{self.http.port}")
        capture = open_capture(config, self.metrics)
        if capture is not None:
            stack.callback(capture.close)  # after the streams: they close their cameras first
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        background = [tasks.create_task(loop_lag.run(), name="loop-lag"),
                      tasks.create_task(overload.run(loop_lag), name="overload"),
                      tasks.create_task(watch.run(), name="model-watch"),
                      tasks.create_task(dispatcher.run(), name="alerts"),
                      tasks.create_task(self._watchdog(), name="watchdog")]
        if scans is not None:
            background.append(tasks.create_task(scans.run(), name="scans"))
        stack.callback(lambda: [t.cancel() for t in background])  # runs before the group is left
        streams = Streams(Shared(client, watch, dispatcher, LiveState(stores.sinks), self.metrics, board,
                                 feedback, capture, overload, store), tasks)
        for settings in config.stream_settings().values():
            streams.start(settings)
        if self.shard is not None:
            self.metrics.shard_info.labels(str(self.shard.index), str(self.shard.count)).set(1)
        self._log.info("vlm-monitor started", version=__version__,
                       listen=f"{config.server.host}:{self.http.port}",
                       streams=len(config.streams), model=config.vlm.model,
                       **({"shard": str(self.shard)} if self.shard else {}))
        self.started.set()
        self.notifier.notify("READY=1", f"STATUS=watching {len(config.streams)} stream(s)")
        return streams

    async def _listen(self, stack: AsyncExitStack, console: Console | None,
                      readiness: Callable[[], str | None]) -> HttpServer:
        """/metrics, /healthz, /readyz and the console, on ``server.listen``."""
        server = self.config.server
        http = HttpServer(server.host, server.port, self.metrics, readiness=readiness, console=console,
                          trusted_proxies=server.trusted_proxies)
        try:
            await http.start()
        except OSError as e:
            raise DaemonError(f"cannot listen on {server.listen}: {e.strerror or type(e).__name__}") from None
        stack.push_async_callback(http.stop)
        return http

    async def _fleet(self, client: VlmClient, dispatcher: Dispatcher) -> dict[str, Any]:
        """The daemon's side of the console's fleet header."""
        return {"due_per_second": round(sum(1 / s.sample_interval_seconds for s in self.config.streams), 1),
                "model_servers": [{"name": e.name, "up": e.healthy} for e in client.endpoints],
                "alerts_pending": await dispatcher.undelivered()}

    async def _main_loop(self, streams: Streams, shutdown: asyncio.Event) -> None:
        """Until a signal, a fatal model error, or every stream has ended; reloads on request."""
        stop_signals = [asyncio.create_task(shutdown.wait()),
                        asyncio.create_task(streams.shared.watch.fatal_event.wait())]
        try:
            while not streams.ended:
                reload = asyncio.create_task(self._reload_requested.wait())
                await asyncio.wait([*stop_signals, reload, *streams.active()],
                                   return_when=asyncio.FIRST_COMPLETED)
                reload.cancel()
                if any(t.done() for t in stop_signals):
                    return
                if self._reload_requested.is_set():
                    self._reload_requested.clear()
                    await self._reload(streams)
        finally:
            for t in stop_signals:
                t.cancel()

    async def _shutdown(self, streams: Streams, shutdown: asyncio.Event) -> Outcome:
        self.notifier.notify("STOPPING=1")
        shared = streams.shared
        watch, dispatcher = shared.watch, shared.dispatcher
        grace = self.config.shutdown_grace_seconds
        if streams.active():
            self._log.info("stopping", reason=watch.fatal or "signal")
            await streams.stop(None, grace)
        if shared.clips is not None:
            # The files ended: their clips are part of the job, as their alerts are.
            await shared.clips.close(grace if shutdown.is_set() or watch.fatal else None)
        if shutdown.is_set() or watch.fatal:
            delivered = await dispatcher.drain(grace)
        else:
            delivered = await self._deliver_or_signal(dispatcher, shutdown, grace)
        undelivered = await dispatcher.undelivered()
        if not delivered:
            self._log.warning("alerts still pending are kept in the outbox for the next start",
                              count=undelivered, outbox=str(dispatcher.outbox.path))
        return Outcome(signalled=shutdown.is_set(), fatal=watch.fatal, failed_streams=streams.failed(),
                       unusable=streams.unusable(), undelivered=undelivered,
                       dead_letters=dispatcher.dead_letters)

    async def _deliver_or_signal(self, dispatcher: Dispatcher, shutdown: asyncio.Event,
                                 grace: float) -> bool:
        """The files are done: deliver their alerts, however long the sinks retry (each gives
        up at its max_age_seconds), unless a signal comes; then only ``grace`` more."""
        drained = asyncio.create_task(dispatcher.drain(None))
        signal = asyncio.create_task(shutdown.wait())
        await asyncio.wait([drained, signal], return_when=asyncio.FIRST_COMPLETED)
        signal.cancel()
        if drained.done():
            return drained.result()
        drained.cancel()
        self._log.info("signal while delivering; giving pending alerts the grace period",
                       grace_seconds=grace)
        return await dispatcher.drain(grace)

    async def _reload(self, streams: Streams) -> None:
        """Apply a new config's streams; a config that does not load changes nothing."""
        try:
            if self.config_path is None:
                raise ConfigError("no config file to reload from")
            new = self._own(await asyncio.to_thread(load_config, self.config_path))
        except Exception as e:  # whatever the new file is, the running config stays
            error = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
            self._log.error("reload rejected; the running config stays", error=error)
            self.reloaded.set()
            return
        plan = plan_reload(self.config, new)
        if plan.fixed:
            self._log.warning("these config sections change only on restart", sections=plan.fixed)
        await streams.apply(plan, self.config)
        self.config = plan.config
        self._log.info("config reloaded", added=plan.added, removed=plan.removed,
                       restarted=plan.restarted)
        self.reloaded.set()

    async def _watchdog(self) -> None:
        """WATCHDOG=1 from the event loop itself: if the loop wedges, the pings stop."""
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


async def open_stores(config: Config, metrics: Metrics, stack: AsyncExitStack, state_dir: Path,
                      watch: ModelWatch) -> _Stores:
    """What lives in the state directory: the outbox and the dispatcher on it, snapshots,
    clips, the console's key. A disk that fails now may not later: exit 1, systemd retries."""
    try:
        outbox = Outbox(state_dir / "outbox.sqlite3")
        stack.callback(outbox.close)
        snap = config.snapshots
        snapshots = Snapshots(state_dir / "snapshots", max_count=snap.max_count,
                              max_age_s=snap.max_age_days * 86400,
                              max_bytes=int(snap.max_total_mb * 1e6)) if snap.enabled else None
        # Sinks that show what is current (MQTT) read the model's state and the backlog.
        sinks = make_sinks(config.alerts, config.sink_names(), snapshots, stream_targets(config),
                           status=lambda: (watch.ready.is_set(), dispatcher.backlog()))
        dispatcher = Dispatcher(sinks, metrics, outbox, snapshots)
        stack.push_async_callback(dispatcher.close)
        await dispatcher.open()
        clips = clip_files(state_dir / "clips", config.clips)
        await asyncio.to_thread(clips.prune)
        metrics.clip_bytes.set(clips.kept_bytes)
        key = load_key(state_dir / "console.key") if config.console.enabled else None
    except (OSError, sqlite3.Error) as e:
        raise _unusable(state_dir, e) from None
    return _Stores(outbox, snapshots, clips, sinks, dispatcher, key)


async def open_console(config: Config, metrics: Metrics, shard: Shard | None, stack: AsyncExitStack,
                       state_dir: Path, stores: _Stores, client: VlmClient, fleet: Fleet) -> Console | None:
    """The console and what it keeps (its board, scans, feedback); None when it is off."""
    if stores.key is None:
        return None
    key, cc = stores.key, config.console
    board = Board(cc.recent_samples)
    board.set_streams(stream_targets(config))

    def build() -> Console:  # blocking: files and SQLite
        scans = Scans(state_dir / "scans", client, config.detection, config.preprocess,
                      concurrency=cc.scan_concurrency, keep=cc.scans_keep,
                      max_bytes=int(cc.scans_max_total_mb * 1e6))
        scans.load()
        feedback = Feedback(state_dir / "feedback.sqlite3")
        for (stream, target, verdict), n in feedback.counts().items():
            metrics.feedback.labels(stream, target, verdict).set(n)
        return Console(cc, config.server, key, board, stores.outbox, stores.snapshots, stores.clips, feedback,
                       scans, Revoked(state_dir / "sessions.sqlite3"), metrics, fleet,
                       shard=str(shard) if shard else None)
    try:
        console = await asyncio.to_thread(build)
    except (OSError, sqlite3.Error) as e:
        raise _unusable(state_dir, e) from None
    stack.callback(console.feedback.close)
    stack.callback(console.close)
    return console


def open_capture(config: Config, metrics: Metrics) -> CapturePool | None:
    """The capture workers for the live cameras, if any and if wanted."""
    live = sum(1 for s in config.streams if is_live(s.url.get_secret_value()))
    workers = worker_count(config.capture.workers, live)
    if workers == 0:
        if live:
            malloc.tune()  # capture threads here: keep their big buffers out of the arenas
        return None
    pool = CapturePool(workers, metrics).start()
    logs.get("monitor.daemon").info("capture workers started", workers=workers, cameras=live)
    return pool

