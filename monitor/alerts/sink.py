"""What a sink is, to the dispatcher: a name, the events it wants, how long to retry, deliver()."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from monitor.alerts.model import Alert
from monitor.config import SinkBase


class Retry(Exception):
    """Delivery failed in a way that may pass: try again later."""


class GiveUp(Exception):
    """Delivery failed in a way that retrying will not mend."""


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """One block of delivery settings, the same for every kind of sink."""

    events: frozenset[str]  # the alert events this sink wants
    max_age_seconds: float  # retried until the alert is this old, then a dead letter
    retry_max_delay: float  # the longest wait between two tries

    @classmethod
    def of(cls, cfg: SinkBase) -> DeliveryPolicy:
        return cls(frozenset(cfg.events), cfg.max_age_seconds, cfg.retry_max_delay_seconds)


class Sink(Protocol):
    name: str  # its identity in the outbox and its metric label (config.sink_names)
    policy: DeliveryPolicy

    async def run(self) -> None: ...  # whatever the sink keeps up (a connection), until cancelled

    async def deliver(self, alert: Alert) -> None: ...

    async def close(self) -> None: ...


# What the daemon is like now, for the sinks that show it: (model server usable, alerts pending).
DaemonStatus = Callable[[], tuple[bool, int]]


@runtime_checkable
class StateSink(Protocol):
    """A sink that also shows what is current, not only events (MQTT for Home Assistant); it
    is built with the daemon's ``DaemonStatus`` and reads it itself."""

    async def camera(self, stream: str, up: bool) -> None: ...

    async def streams_changed(self, streams: Sequence[tuple[str, Sequence[str]]]) -> None: ...


class LiveState:
    """What is current, on its way to the sinks that show it: cameras up or down, and which
    streams and targets there are (after a reload). Events go through the ``Dispatcher``."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = [s for s in sinks if isinstance(s, StateSink)]

    async def camera(self, stream: str, up: bool) -> None:
        for sink in self.sinks:
            await sink.camera(stream, up)

    async def streams_changed(self, streams: Sequence[tuple[str, Sequence[str]]]) -> None:
        for sink in self.sinks:
            await sink.streams_changed(streams)
