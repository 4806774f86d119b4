"""Each alert's clip: ordered from the capture (or cut from the recording), kept, announced.

The alert itself goes out at once, as ever; its clip follows once its window
has passed and the file is on disk, as a ``clip_ready`` event through the same
dispatcher (so it is durable, retried, and in the console's history). The link
in it is signed (``monitor.links``), so a chat bot or a phone can fetch the
clip without a console session until it expires, which is when retention
would remove the clip anyway. A clip that cannot be written (a full disk, a
camera that dropped) costs only the clip: counted, logged, never the alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from monitor import logs
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.model import Alert
from monitor.alerts.snapshots import Snapshots
from monitor.config import ClipsConfig
from monitor.links import signed
from monitor.metrics import Metrics
from monitor.sources.clips import ClipDone, ClipOrder, cut


class Recorder(Protocol):
    """A live camera's reader (in this process or a capture worker's)."""

    def clip(self, order: ClipOrder, report: Callable[[ClipDone], None]) -> None: ...


def clip_files(directory: Path, cfg: ClipsConfig) -> Snapshots:
    """The clips on disk: one MP4 per alert, the oldest removed first past the size or age."""
    return Snapshots(directory, max_count=1_000_000, max_age_s=cfg.keep_days * 86400,
                     max_bytes=int(cfg.max_total_mb * 1e6), suffix=".mp4")


class ClipStore:
    def __init__(self, files: Snapshots, cfg: ClipsConfig, dispatcher: Dispatcher, metrics: Metrics,
                 key: bytes | None, base_url: str) -> None:
        self.files = files
        self.link_seconds = cfg.keep_days * 86400
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.key = key  # the console's: None when it is off, and then there is no link
        self.base_url = base_url
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = logs.get("monitor.clips")

    def path(self, alert_id: str) -> Path:
        return self.files.path(alert_id)

    def link(self, alert_id: str) -> str | None:
        """The clip's link for those without a session, valid as long as the clip is kept."""
        if self.key is None:
            return None
        expires = int(time.time() + self.link_seconds)
        return signed(self.key, self.base_url, f"/clips/{alert_id}.mp4", expires)

    def order(self, camera: Recorder, alert: Alert, first_seen: datetime, before: float,
              after: float) -> None:
        """Have a live camera's capture write ``alert``'s clip, around when the target appeared."""
        loop = asyncio.get_running_loop()
        t = first_seen.timestamp()
        order = ClipOrder(alert.id, t - before, t + after, str(self.path(alert.id)))
        def report(done: ClipDone) -> None:  # on a capture or listener thread
            with contextlib.suppress(RuntimeError):  # the daemon has stopped: nobody to tell
                loop.call_soon_threadsafe(self._spawn, alert, order, done)
        camera.clip(order, report)

    def cut(self, source: str, alert: Alert, offset: float, before: float, after: float) -> None:
        """A recording's clip, cut from the file around ``offset`` (seconds into it)."""
        order = ClipOrder(alert.id, offset - before, offset + after, str(self.path(alert.id)))

        async def run() -> None:
            await self._announce(alert, None, await asyncio.to_thread(cut, source, order))
        self._track(asyncio.get_running_loop().create_task(run()))

    def _spawn(self, alert: Alert, order: ClipOrder, done: ClipDone) -> None:
        self._track(asyncio.get_running_loop().create_task(self._announce(alert, order, done)))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce(self, alert: Alert, live: ClipOrder | None, done: ClipDone) -> None:
        """``live``: the order a camera's capture served, whose end is wall-clock time."""
        log = self._log.bind(stream=alert.stream, alert_id=alert.id)
        if not done.ok:
            self.metrics.clips.labels("failed").inc()
            log.warning("no clip for this alert", reason=done.note)
            return
        self.metrics.clips.labels("written").inc()
        try:
            await asyncio.to_thread(self.files.prune)
        except OSError as e:
            log.warning("cannot prune the clips", error=e.strerror or type(e).__name__)
        self.metrics.clip_bytes.set(self.files.kept_bytes)
        log.info("clip written", seconds=round(done.seconds, 1), bytes=done.bytes,
                 **({"after_window_s": round(time.time() - live.end, 2)} if live else {}),
                 **({"note": done.note} if done.note else {}))
        await self.dispatcher.publish(Alert.clip_ready(alert, self.link(alert.id), done.seconds, done.note))

    async def close(self, within: float | None) -> None:
        """Let clips being cut or announced finish, for at most ``within`` seconds (None: all)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=within)
