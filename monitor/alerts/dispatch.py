"""The one place every alert goes through on its way to the sinks.

``publish`` saves the alert's snapshot and commits the alert to the outbox
(in a worker thread: an fsync on a slow disk must not stall the event loop)
before any sink hears of it. Each sink has its own worker, which delivers
that sink's pending alerts oldest first, one at a time (so each stream's
alerts arrive in the order raised), retrying with exponential backoff and
jitter until the sink has it or the alert is older than the sink's maximum
age. A slow or dead receiver delays no other sink and never the detection;
a restart resumes where it stopped.

An alert that cannot be committed (a full disk, a corrupt database) is not
lost and does not stop its stream: it is logged at once, held in memory,
counted, makes /readyz fail, and is committed when the disk recovers.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from monitor import logs
from monitor.alerts.model import Alert
from monitor.alerts.outbox import Outbox
from monitor.alerts.sink import GiveUp, Retry, Sink
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


class Dispatcher:
    def __init__(self, sinks: Sequence[Sink], metrics: Metrics, outbox: Outbox,
                 snapshots: Snapshots | None = None, *, base_delay: float = 1.0) -> None:
        self.sinks = list(sinks)
        self.metrics = metrics
        self.outbox = outbox
        self.snapshots = snapshots
        self.dead_letters = 0  # deliveries given up since start
        self._base_delay = base_delay
        self._wake = {s.name: asyncio.Event() for s in sinks}
        self._idle = {s.name: asyncio.Event() for s in sinks}
        self._pending = {s.name: 0 for s in sinks}  # per sink, as the gauge shows it
        self._unstored: deque[_Unstored] = deque()
        self._unstored_added = asyncio.Event()
        self._all_stored = asyncio.Event()
        self._all_stored.set()
        self._log = logs.get("monitor.alerts")
        for sink in sinks:
            metrics.declare_sink(sink.name)

    async def open(self) -> None:
        """Settle deliveries left for sinks that are no longer configured. Raises storage errors."""
        gone = await asyncio.to_thread(self.outbox.orphans, [s.name for s in self.sinks])
        if gone:
            self._log.warning("pending deliveries to sinks no longer in the config are kept as "
                              "dead letters, not sent elsewhere", sinks=sorted(gone),
                              count=sum(gone.values()))

    async def publish(self, alert: Alert, snapshot: bytes | None = None) -> None:
        """Save the snapshot, commit the alert, wake its sinks. Returns once it is durable, or held."""
        # Stored even when no sink wants it: the outbox is also the console's event history.
        names = [s.name for s in self.sinks if alert.event in s.policy.events]
        if self._unstored:  # keep the order: nothing overtakes an alert still waiting for the disk
            self._hold(_Unstored(alert, names, snapshot), "earlier alerts are still waiting")
            return
        try:
            await asyncio.to_thread(self._store, alert, names, snapshot)
        except STORAGE_ERRORS as e:
            self._hold(_Unstored(alert, names, snapshot), _error(e))
            return
        self._wake_sinks(names)

    def backlog(self) -> int:
        """Deliveries pending, every sink together, as last counted, and alerts not yet stored."""
        return sum(self._pending.values()) + len(self._unstored)

    @property
    def problem(self) -> str | None:
        """Why alerts are not safe right now, for /readyz; None when they are."""
        if self._unstored:
            return f"{len(self._unstored)} alert(s) could not be written to the outbox"
        return None

    async def undelivered(self) -> int:
        """Alerts not yet delivered to every sink: pending in the outbox, or not even stored."""
        try:
            stored = await asyncio.to_thread(
                lambda: sum(self.outbox.pending(s.name)[0] for s in self.sinks))
        except STORAGE_ERRORS:
            stored = 0
        return stored + len(self._unstored)

    async def run(self) -> None:
        """Deliver until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._restore(), name="alerts-restore")
            for sink in self.sinks:
                tg.create_task(sink.run(), name=f"sink-{sink.name}-run")
                tg.create_task(self._worker(sink), name=f"sink-{sink.name}")

    async def drain(self, within: float | None) -> bool:
        """Wait until nothing is pending; False after ``within`` seconds (they stay stored)."""
        try:
            async with asyncio.timeout(within):
                await self._all_stored.wait()
                for idle in self._idle.values():
                    await idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._unstored:
            self.metrics.alerts_lost.inc(len(self._unstored))
            self._log.error("alerts that could never be written to the outbox are lost "
                            "(each was logged when raised)", count=len(self._unstored))
        for sink in self.sinks:
            await sink.close()

    # --- storing -------------------------------------------------------------------

    def _store(self, alert: Alert, names: list[str], snapshot: bytes | None) -> None:
        """In a worker thread: the snapshot first (its name goes into the alert), then the alert."""
        if snapshot is not None and self.snapshots is not None and "snapshot" not in alert.fields:
            try:
                name = self.snapshots.save(alert.id, snapshot)
            except OSError as e:  # a full disk must not cost the alert itself
                self._log.error("cannot save the alert's snapshot", stream=alert.stream,
                                error=e.strerror or type(e).__name__)
            else:
                alert = replace(alert, fields={**alert.fields, "snapshot": name})
        self.outbox.add(alert, names)

    def _hold(self, item: _Unstored, reason: str) -> None:
        if len(self._unstored) >= MAX_UNSTORED:
            lost = self._unstored.popleft()
            self.metrics.alerts_lost.inc()
            self._log.error("too many alerts waiting for the outbox; the oldest is lost",
                            alert_id=lost.alert.id, stream=lost.alert.stream)
        self._unstored.append(item)
        self._all_stored.clear()
        self.metrics.alert_store_failures.inc()
        self.metrics.alerts_unstored.set(len(self._unstored))
        payload = item.alert.payload()
        # The log is the one sink that needs no disk of ours: it hears of the alert now.
        self._log.error("alert could not be written to the outbox; held in memory and retried",
                        reason=reason, alert_event=payload.pop("event"), alert_id=payload.pop("id"),
                        **payload)
        self._unstored_added.set()

    async def _restore(self) -> None:
        """Commit held alerts, oldest first, once the outbox can be written again."""
        attempt = 0
        while True:
            await self._unstored_added.wait()
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
                self._wake_sinks(item.sinks)
            self._all_stored.set()
            self._unstored_added.clear()

    def _wake_sinks(self, names: list[str]) -> None:
        for name in names:
            self._idle[name].clear()
            self._wake[name].set()
            self._pending[name] += 1
            self.metrics.alerts_pending.labels(name).inc()

    # --- delivering ------------------------------------------------------------------

    def _gauges(self, sink: str) -> None:
        count, oldest = self.outbox.pending(sink)
        self._pending[sink] = count
        self.metrics.alerts_pending.labels(sink).set(count)
        self.metrics.alert_oldest_pending.labels(sink).set(oldest or 0)

    async def _worker(self, sink: Sink) -> None:
        attempt = 0
        while True:
            try:
                await self._deliver_next(sink)
                attempt = 0
            except STORAGE_ERRORS as e:  # the outbox failed: its alerts are safe or held, wait
                if attempt == 0:
                    self._log.error("cannot read the outbox; delivery paused", sink=sink.name,
                                    error=_error(e))
                await asyncio.sleep(backoff_delay(attempt, 1.0, 30.0))
                attempt += 1

    async def _deliver_next(self, sink: Sink) -> None:
        name = sink.name
        # Cleared before the outbox is read: an alert published while the read is under way
        # sets it again, so it is neither slept through nor taken for idleness. (Cleared after
        # an empty read, that wake-up was lost: the alert waited for the next one, and a drain
        # ended before it was delivered: a clip_ready published just after its alert.)
        self._wake[name].clear()
        head = await asyncio.to_thread(self.outbox.head, name)
        await asyncio.to_thread(self._gauges, name)
        if head is None:
            if not self._wake[name].is_set():
                self._idle[name].set()
            await self._wake[name].wait()
            return
        delay = head.next_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)  # oldest first: later alerts wait their turn
            return
        alert = Alert.from_body(head.body)
        log = self._log.bind(sink=name, alert_id=alert.id, stream=alert.stream, event=alert.event)
        attempt = head.attempts + 1
        try:
            await sink.deliver(alert)
        except GiveUp as e:
            self.dead_letters += 1
            await asyncio.to_thread(self.outbox.dead, head.seq, name, str(e))
            self.metrics.alert_deliveries.labels(name, "failed").inc()
            log.error("alert refused by the receiver; not retrying (dead letter)", reason=str(e))
        except Exception as e:  # Retry, or a sink's bug: never lose the alert to it
            reason = str(e) if isinstance(e, Retry) else f"{type(e).__name__}: {e}"
            age = time.time() - head.created
            if age > sink.policy.max_age_seconds:
                self.dead_letters += 1
                await asyncio.to_thread(self.outbox.dead, head.seq, name, reason)
                self.metrics.alert_deliveries.labels(name, "failed").inc()
                log.error("alert delivery failed for too long; giving up (dead letter)",
                          reason=reason, attempts=attempt, age_seconds=round(age))
                return
            delay = backoff_delay(attempt - 1, self._base_delay, sink.policy.retry_max_delay)
            await asyncio.to_thread(self.outbox.retry, head.seq, name, time.time() + delay, reason)
            self.metrics.alert_deliveries.labels(name, "retry").inc()
            log.warning("alert delivery failed, will retry", reason=reason, attempt=attempt,
                        retry_in=round(delay, 2))
        else:
            await asyncio.to_thread(self.outbox.delivered, head.seq, name)
            await asyncio.to_thread(self.outbox.prune)
            self.metrics.alert_deliveries.labels(name, "delivered").inc()
            log.debug("alert delivered", attempts=attempt)


def _error(e: BaseException) -> str:
    return (e.strerror if isinstance(e, OSError) and e.strerror else None) or f"{type(e).__name__}: {e}"
