"""The one place every alert goes through on its way to the sinks.

``publish`` commits the alert to the outbox before any sink hears of it. Each
sink has its own worker, which delivers that sink's pending alerts oldest
first, one at a time (so each stream's alerts arrive in the order raised),
retrying with exponential backoff and jitter until the sink has it or the
alert is older than the sink's maximum age. A slow or dead receiver delays
no other sink and never the detection; a restart resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from monitor import logs
from monitor.alerts.model import Alert
from monitor.alerts.outbox import Outbox
from monitor.alerts.sinks import GiveUp, Retry, Sink
from monitor.backoff import backoff_delay
from monitor.metrics import Metrics


class Dispatcher:
    def __init__(self, sinks: Sequence[Sink], metrics: Metrics, outbox: Outbox, *,
                 base_delay: float = 1.0) -> None:
        self.sinks = list(sinks)
        self.metrics = metrics
        self.outbox = outbox
        self.dead_letters = 0  # deliveries given up since start
        self._base_delay = base_delay
        self._wake = {s.name: asyncio.Event() for s in sinks}
        self._idle = {s.name: asyncio.Event() for s in sinks}
        self._log = logs.get("monitor.alerts")
        for sink in sinks:
            metrics.declare_sink(sink.name)
        gone = outbox.orphans(s.name for s in sinks)
        if gone:
            self._log.warning("pending alerts for sinks no longer configured were dropped", count=gone)

    def publish(self, alert: Alert) -> None:
        """Commit the alert, then wake the sinks that want it. Returns once it is durable."""
        names = [s.name for s in self.sinks if alert.event in s.events]
        if not names:
            return
        self.outbox.add(alert, names)
        for name in names:
            self._idle[name].clear()
            self._wake[name].set()
            self.metrics.alerts_pending.labels(name).inc()

    def pending(self) -> int:
        return sum(self.outbox.pending(s.name)[0] for s in self.sinks)

    async def run(self) -> None:
        """Deliver until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for sink in self.sinks:
                tg.create_task(sink.run(), name=f"sink-{sink.name}-run")
                tg.create_task(self._worker(sink), name=f"sink-{sink.name}")

    async def drain(self, grace: float) -> bool:
        """Wait until no delivery is pending; False after ``grace`` seconds (they stay stored)."""
        try:
            async with asyncio.timeout(grace):
                for idle in self._idle.values():
                    await idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()

    def _gauges(self, sink: str) -> None:
        count, oldest = self.outbox.pending(sink)
        self.metrics.alerts_pending.labels(sink).set(count)
        self.metrics.alert_oldest_pending.labels(sink).set(oldest or 0)

    async def _worker(self, sink: Sink) -> None:
        name = sink.name
        while True:
            head = await asyncio.to_thread(self.outbox.head, name)
            await asyncio.to_thread(self._gauges, name)
            if head is None:
                self._idle[name].set()
                self._wake[name].clear()
                await self._wake[name].wait()
                continue
            delay = head.next_at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)  # oldest first: later alerts wait their turn
                continue
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
                if age > sink.max_age_seconds:
                    self.dead_letters += 1
                    await asyncio.to_thread(self.outbox.dead, head.seq, name, reason)
                    self.metrics.alert_deliveries.labels(name, "failed").inc()
                    log.error("alert delivery failed for too long; giving up (dead letter)",
                              reason=reason, attempts=attempt, age_seconds=round(age))
                    continue
                delay = backoff_delay(attempt - 1, self._base_delay, sink.retry_max_delay)
                await asyncio.to_thread(self.outbox.retry, head.seq, name, time.time() + delay, reason)
                self.metrics.alert_deliveries.labels(name, "retry").inc()
                log.warning("alert delivery failed, will retry", reason=reason, attempt=attempt,
                            retry_in=round(delay, 2))
            else:
                await asyncio.to_thread(self.outbox.delivered, head.seq, name)
                await asyncio.to_thread(self.outbox.prune)
                self.metrics.alert_deliveries.labels(name, "delivered").inc()
                log.debug("alert delivered", attempts=attempt)
