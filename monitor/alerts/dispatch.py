"""The one place every alert goes through on its way to the sinks.

Each sink has its own queue and worker, so a slow or dead receiver delays no
other sink and never the detection; one worker per sink keeps each sink's
alerts in the order they were raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from monitor import logs
from monitor.alerts.model import Alert
from monitor.alerts.sinks import GiveUp, Retry, Sink
from monitor.backoff import backoff_delay
from monitor.metrics import Metrics


class Dispatcher:
    def __init__(self, sinks: Sequence[Sink], metrics: Metrics, *,
                 max_attempts: Callable[[Sink], int] = lambda sink: getattr(sink, "max_attempts", 1),
                 base_delay: float = 1.0, max_delay: float = 60.0) -> None:
        self.sinks = list(sinks)
        self.metrics = metrics
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._queues: dict[str, asyncio.Queue[Alert]] = {s.name: asyncio.Queue() for s in sinks}
        self._pending = 0
        self._log = logs.get("monitor.alerts")
        for sink in sinks:
            metrics.declare_sink(sink.name)

    def publish(self, alert: Alert) -> None:
        for sink in self.sinks:
            if alert.event not in sink.events:
                continue
            self._queues[sink.name].put_nowait(alert)
            self._pending += 1
            self.metrics.alerts_pending.labels(sink.name).inc()

    def pending(self) -> int:
        """Deliveries not yet done (delivered or given up), over all sinks."""
        return self._pending

    async def run(self) -> None:
        """Deliver until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for sink in self.sinks:
                tg.create_task(self._worker(sink), name=f"sink-{sink.name}")

    async def drain(self, grace: float) -> bool:
        """Wait until every published alert has been dealt with; False after ``grace`` seconds."""
        try:
            async with asyncio.timeout(grace):
                for q in self._queues.values():
                    await q.join()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()

    async def _worker(self, sink: Sink) -> None:
        queue = self._queues[sink.name]
        while True:
            alert = await queue.get()
            try:
                await self._deliver(sink, alert)
            finally:
                queue.task_done()
                self._pending -= 1
                self.metrics.alerts_pending.labels(sink.name).dec()

    async def _deliver(self, sink: Sink, alert: Alert) -> None:
        log = self._log.bind(sink=sink.name, alert_id=alert.id, stream=alert.stream)
        max_attempts = self._max_attempts(sink)
        for attempt in range(1, max_attempts + 1):
            try:
                await sink.deliver(alert)
            except Retry as e:
                if attempt == max_attempts:
                    self.metrics.alert_deliveries.labels(sink.name, "failed").inc()
                    log.error("alert delivery failed, giving up", reason=str(e), attempts=attempt)
                    return
                self.metrics.alert_deliveries.labels(sink.name, "retry").inc()
                delay = backoff_delay(attempt - 1, self._base_delay, self._max_delay)
                log.warning("alert delivery failed, will retry", reason=str(e),
                            attempt=attempt, retry_in=round(delay, 2))
                await asyncio.sleep(delay)
            except GiveUp as e:
                self.metrics.alert_deliveries.labels(sink.name, "failed").inc()
                log.error("alert rejected by the receiver, not retrying", reason=str(e))
                return
            else:
                self.metrics.alert_deliveries.labels(sink.name, "delivered").inc()
                log.debug("alert delivered", attempts=attempt)
                return
