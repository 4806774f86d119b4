"""The dispatcher's wake-ups, against the real outbox: an alert published while a sink's worker
is reading an empty outbox is delivered at once, and a drain waits for it."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.model import Alert
from monitor.alerts.outbox import Delivery, Outbox
from monitor.alerts.sink import DeliveryPolicy
from monitor.metrics import Metrics


class Collector:
    name = "collector"
    policy = DeliveryPolicy(frozenset({"stream_up"}), 3600, 1)

    def __init__(self) -> None:
        self.got: list[str] = []

    async def run(self) -> None:
        pass

    async def deliver(self, alert: Alert) -> None:
        self.got.append(alert.id)

    async def close(self) -> None:
        pass


class HeldReads(Outbox):
    """An outbox whose first empty read after a delivery waits until the test lets it answer."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.deliveries = 0
        self.reading = threading.Event()
        self.answer = threading.Event()

    def delivered(self, seq: int, sink: str) -> None:
        super().delivered(seq, sink)
        self.deliveries += 1

    def head(self, sink: str) -> Delivery | None:
        found = super().head(sink)
        if found is None and self.deliveries == 1 and not self.reading.is_set():
            self.reading.set()
            self.answer.wait(10)
        return found


async def test_an_alert_published_during_an_empty_read_is_not_slept_through(tmp_path: Path) -> None:
    outbox = HeldReads(tmp_path / "outbox.sqlite3")
    sink = Collector()
    dispatcher = Dispatcher([sink], Metrics(), outbox)
    task = asyncio.create_task(dispatcher.run())
    try:
        first = Alert.stream_state("cam", True, datetime.now(UTC), "up")
        await dispatcher.publish(first)
        # Delivered, the worker reads the outbox again and finds it empty... and the next alert
        # is committed while that read is under way.
        assert await asyncio.to_thread(outbox.reading.wait, 5) and sink.got == [first.id]
        second = Alert.stream_state("cam", True, datetime.now(UTC), "up again")
        await dispatcher.publish(second)
        outbox.answer.set()  # the stale answer: nothing pending
        assert await dispatcher.drain(5), "the drain ended or timed out with the alert pending"
        assert sink.got == [first.id, second.id]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        outbox.close()
