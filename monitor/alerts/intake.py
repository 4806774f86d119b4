"""An alert's way into the outbox: its snapshot saved, then the alert committed.

Both in a worker thread (an fsync on a slow disk must not stall the event
loop). An alert that cannot be committed (a full disk, a corrupt database) is
not lost and does not stop its stream: it is logged at once, held in memory
(up to ``MAX_UNSTORED``), counted, makes /readyz fail, and is committed when
the disk recovers. Held alerts keep their order: nothing overtakes them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from monitor import logs
from monitor.alerts.model import Alert
from monitor.alerts.outbox import Outbox
from monitor.alerts.snapshots import Snapshots
from monitor.backoff import backoff_delay
from monitor.metrics import Metrics

STORAGE_ERRORS = (OSError, sqlite3.Error)
MAX_UNSTORED = 1000  # alerts held in memory while the outbox cannot be written


@dataclass(frozen=True, slots=True)
class _Unstored:
    alert: Alert
    sinks: list[str]
    snapshot: bytes | None


class Intake:
    def __init__(self, outbox: Outbox, snapshots: Snapshots | None, metrics: Metrics) -> None:
        self.outbox = outbox
        self.snapshots = snapshots
        self.metrics = metrics
        self._unstored: deque[_Unstored] = deque()
        self._added = asyncio.Event()
        self.all_stored = asyncio.Event()  # set while nothing is held
        self.all_stored.set()
        self._log = logs.get("monitor.alerts")

    @property
    def held(self) -> int:
        """Alerts waiting in memory for the outbox."""
        return len(self._unstored)

    async def store(self, alert: Alert, sinks: list[str], snapshot: bytes | None) -> bool:
        """Commit the alert for ``sinks``: True once it is durable, False when it is held."""
        if self._unstored:
            self._hold(_Unstored(alert, sinks, snapshot), "earlier alerts are still waiting")
            return False
        try:
            await asyncio.to_thread(self._store, alert, sinks, snapshot)
        except STORAGE_ERRORS as e:
            self._hold(_Unstored(alert, sinks, snapshot), error_text(e))
            return False
        return True

    async def stored_late(self) -> AsyncIterator[list[str]]:
        """Until cancelled, commit held alerts, oldest first, once the outbox can be written
        again; yields the sinks of each, to be woken."""
        attempt = 0
        while True:
            await self._added.wait()
            while self._unstored:
                item = self._unstored[0]
                try:
                    await asyncio.to_thread(self._store, item.alert, item.sinks, item.snapshot)
                except sqlite3.IntegrityError:  # committed before, the answer was lost
                    pass
                except STORAGE_ERRORS:
                    await asyncio.sleep(backoff_delay(attempt, 1.0, 30.0))
                    attempt += 1
                    continue
                attempt = 0
                self._unstored.popleft()
                self.metrics.alerts_unstored.set(len(self._unstored))
                self._log.info("held alert written to the outbox", alert_id=item.alert.id)
                yield item.sinks
            self.all_stored.set()
            self._added.clear()

    def close(self) -> None:
        if self._unstored:
            self.metrics.alerts_lost.inc(len(self._unstored))
            self._log.error("alerts that could never be written to the outbox are lost "
                            "(each was logged when raised)", count=len(self._unstored))

    def _store(self, alert: Alert, sinks: list[str], snapshot: bytes | None) -> None:
        """In a worker thread: the snapshot first (its name goes into the alert), then the alert."""
        if snapshot is not None and self.snapshots is not None and "snapshot" not in alert.fields:
            try:
                name = self.snapshots.save(alert.id, snapshot)
            except OSError as e:  # a full disk must not cost the alert itself
                self._log.error("cannot save the alert's snapshot", stream=alert.stream,
                                error=e.strerror or type(e).__name__)
            else:
                alert = replace(alert, fields={**alert.fields, "snapshot": name})
        self.outbox.add(alert, sinks)

    def _hold(self, item: _Unstored, reason: str) -> None:
        if len(self._unstored) >= MAX_UNSTORED:
            lost = self._unstored.popleft()
            self.metrics.alerts_lost.inc()
            self._log.error("too many alerts waiting for the outbox; the oldest is lost",
                            alert_id=lost.alert.id, stream=lost.alert.stream)
        self._unstored.append(item)
        self.all_stored.clear()
        self.metrics.alert_store_failures.inc()
        self.metrics.alerts_unstored.set(len(self._unstored))
        payload = item.alert.payload()
        # The log is the one sink that needs no disk of ours: it hears of the alert now.
        self._log.error("alert could not be written to the outbox; held in memory and retried",
                        reason=reason, alert_event=payload.pop("event"), alert_id=payload.pop("id"),
                        **payload)
        self._added.set()


def error_text(e: BaseException) -> str:
    return (e.strerror if isinstance(e, OSError) and e.strerror else None) or f"{type(e).__name__}: {e}"
