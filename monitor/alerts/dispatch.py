"""The one place every alert goes through on its way to the sinks.

``publish`` hands the alert to the ``Intake``, which saves its snapshot and
commits it to the outbox (or holds it while the disk fails), before any sink
hears of it. Each sink has its own worker, which delivers that sink's pending
alerts oldest first, one at a time (so each stream's alerts arrive in the
order raised), retrying with exponential backoff and jitter until the sink
has it or the alert is older than the sink's maximum age. A slow or dead
receiver delays no other sink and never the detection; a restart resumes
where it stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from monitor import logs
from monitor.alerts.intake import STORAGE_ERRORS, Intake, error_text
from monitor.alerts.model import Alert
from monitor.alerts.outbox import Outbox
from monitor.alerts.sink import GiveUp, Retry, Sink
from monitor.alerts.snapshots import Snapshots
from monitor.backoff import backoff_delay
from monitor.metrics import Metrics


class Dispatcher:
    def __init__(self, sinks: Sequence[Sink], metrics: Metrics, outbox: Outbox,
                 snapshots: Snapshots | None = None, *, base_delay: float = 1.0) -> None:
        self.sinks = list(sinks)
        self.metrics = metrics
        self.outbox = outbox
        self.dead_letters = 0  # deliveries given up since start
        self._base_delay = base_delay
        self._wake = {s.name: asyncio.Event() for s in sinks}
        self._idle = {s.name: asyncio.Event() for s in sinks}
        self._pending = {s.name: 0 for s in sinks}  # per sink, as the gauge shows it
        self._intake = Intake(outbox, snapshots, metrics)
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
        if await self._intake.store(alert, names, snapshot):
            self._wake_sinks(names)

    def backlog(self) -> int:
        """Deliveries pending, every sink together, as last counted, and alerts not yet stored."""
        return sum(self._pending.values()) + self._intake.held

    @property
    def problem(self) -> str | None:
        """Why alerts are not safe right now, for /readyz; None when they are."""
        held = self._intake.held
        return f"{held} alert(s) could not be written to the outbox" if held else None

    async def undelivered(self) -> int:
        """Alerts not yet delivered to every sink: pending in the outbox, or not even stored."""
        try:
            stored = await asyncio.to_thread(
                lambda: sum(self.outbox.pending(s.name)[0] for s in self.sinks))
        except STORAGE_ERRORS:
            stored = 0
        return stored + self._intake.held

    async def run(self) -> None:
        """Deliver until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._wake_when_stored(), name="alerts-restore")
            for sink in self.sinks:
                tg.create_task(sink.run(), name=f"sink-{sink.name}-run")
                tg.create_task(self._worker(sink), name=f"sink-{sink.name}")

    async def drain(self, within: float | None) -> bool:
        """Wait until nothing is pending; False after ``within`` seconds (they stay stored)."""
        try:
            async with asyncio.timeout(within):
                await self._intake.all_stored.wait()
                for idle in self._idle.values():
                    await idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._intake.close()
        for sink in self.sinks:
            await sink.close()

    async def _wake_when_stored(self) -> None:
        async for names in self._intake.stored_late():
            self._wake_sinks(names)

    def _wake_sinks(self, names: list[str]) -> None:
        for name in names:
            self._idle[name].clear()
            self._wake[name].set()
            self._pending[name] += 1
            self.metrics.alerts_pending.labels(name).inc()

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
                                    error=error_text(e))
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

