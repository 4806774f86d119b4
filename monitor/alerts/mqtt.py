"""An MQTT sink with Home Assistant-friendly topics (``topics``) and discovery (``discovery``),
over one long-lived connection.

Alerts go out at QoS 1 and count as delivered once the broker acknowledges
them; while the broker is away, deliveries wait in the outbox and are
retried. What is current rather than an event (a camera up or down, the
model server's state, the alerts pending) is kept here and published,
retained, as it changes and again on every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence

import aiomqtt

from monitor import logs
from monitor.alerts import discovery
from monitor.alerts.model import Alert
from monitor.alerts.sink import DaemonStatus, DeliveryPolicy, Retry
from monitor.alerts.snapshots import Snapshots
from monitor.alerts.topics import messages
from monitor.backoff import backoff_delay
from monitor.config import MqttSinkConfig
from monitor.names import topic_part

# (whether the model server is usable, alerts pending): read every STATUS_S.
STATUS_S = 10.0
# How long to listen for the retained discovery configs of an earlier run.
RETAINED_S = 1.0


class MqttSink:
    def __init__(self, name: str, cfg: MqttSinkConfig, snapshots: Snapshots | None = None,
                 streams: Sequence[tuple[str, Sequence[str]]] = (),
                 status: DaemonStatus | None = None) -> None:
        self.name = name
        self.policy = DeliveryPolicy.of(cfg)
        self.cfg = cfg
        self.prefix = cfg.topic_prefix.rstrip("/")
        self.availability = f"{self.prefix}/availability"
        self.snapshots = snapshots
        self.status = status  # the model server's state and the backlog, published as retained topics
        self._streams = list(streams)
        self._camera: dict[str, bytes] = {}  # stream -> b"online" / b"offline", the latest
        self._published: set[str] = set()  # discovery config topics that are ours now
        self._client: aiomqtt.Client | None = None
        self._log = logs.get("monitor.alerts.mqtt").bind(sink=name)

    def _connect(self) -> aiomqtt.Client:
        cfg = self.cfg
        return aiomqtt.Client(
            cfg.host, cfg.port, identifier=cfg.client_id, keepalive=30, timeout=10,
            username=cfg.username, password=cfg.password.get_secret_value() if cfg.password else None,
            will=aiomqtt.Will(self.availability, b"offline", qos=1, retain=True),
            tls_context=ssl.create_default_context() if cfg.tls else None)

    async def run(self) -> None:
        """Keep a connection to the broker, reconnecting with backoff; until cancelled."""
        attempt = 0
        last_error = ""
        while True:
            try:
                async with self._connect() as client:
                    await client.publish(self.availability, b"online", qos=1, retain=True)
                    self._client, attempt, last_error = client, 0, ""
                    self._log.info("connected to the MQTT broker", broker=f"{self.cfg.host}:{self.cfg.port}")
                    try:
                        await self._connected(client)
                    except asyncio.CancelledError:
                        self._client = None
                        await client.publish(self.availability, b"offline", qos=1, retain=True)
                        raise
            except aiomqtt.MqttError as e:
                error = type(e).__name__ if not str(e) else str(e)[:120]
                if error != last_error:
                    self._log.warning("MQTT broker unavailable, reconnecting", error=error)
                    last_error = error
            finally:
                self._client = None
            await asyncio.sleep(backoff_delay(attempt, 1.0, 30.0))
            attempt += 1

    async def _connected(self, client: aiomqtt.Client) -> None:
        """While connected: discovery, the current states, then the status every STATUS_S.
        Returns (raises) when the connection drops."""
        retained: set[str] = set()
        wildcard = f"{self.cfg.discovery_prefix}/+/{discovery.node_id(self.prefix)}/+/config"
        if self.cfg.discovery:
            await client.subscribe(wildcard, qos=1)

        async def listen() -> None:
            async for message in client.messages:
                if message.payload:
                    retained.add(str(message.topic))

        listener = asyncio.create_task(listen())  # ends (raises) when the connection drops
        try:
            if self.cfg.discovery:
                await asyncio.sleep(RETAINED_S)  # the broker sends what is retained at once
                await client.unsubscribe(wildcard)
                self._published = retained
                await self._discover(client)
            for stream, state in list(self._camera.items()):
                await client.publish(self._status_topic(stream), state, qos=1, retain=True)
            while not listener.done():
                await self._publish_status(client)
                await asyncio.wait([listener], timeout=STATUS_S)
            listener.result()
        finally:
            listener.cancel()

    async def _discover(self, client: aiomqtt.Client) -> None:
        """Publish the configs of today's streams and targets; delete those of removed ones."""
        wanted = discovery.configs(self.prefix, self.cfg.discovery_prefix, self._streams)
        for topic in sorted(self._published - set(wanted)):
            await client.publish(topic, b"", qos=1, retain=True)  # an empty config removes it
        for topic, payload in wanted.items():
            await client.publish(topic, discovery.encode(payload), qos=1, retain=True)
        self._published = set(wanted)

    async def _publish_status(self, client: aiomqtt.Client) -> None:
        if self.status is None:
            return
        usable, pending = self.status()
        await client.publish(f"{self.prefix}/model", b"online" if usable else b"offline",
                             qos=1, retain=True)
        await client.publish(f"{self.prefix}/alerts_pending", str(pending).encode(), qos=1, retain=True)

    def _status_topic(self, stream: str) -> str:
        return f"{self.prefix}/{topic_part(stream)}/status"

    async def camera(self, stream: str, up: bool) -> None:
        """A camera came up or went down: its status, at once (alerts wait for a hold-off)."""
        state = b"online" if up else b"offline"
        if self._camera.get(stream) == state:
            return
        self._camera[stream] = state
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):  # republished on reconnect
                await client.publish(self._status_topic(stream), state, qos=1, retain=True)

    async def streams_changed(self, streams: Sequence[tuple[str, Sequence[str]]]) -> None:
        """After a reload: entities of new streams and targets appear, removed ones go."""
        self._streams = list(streams)
        names = {s for s, _ in streams}
        self._camera = {s: v for s, v in self._camera.items() if s in names}
        client = self._client
        if client is not None and self.cfg.discovery:
            with contextlib.suppress(aiomqtt.MqttError):  # done again on reconnect
                await self._discover(client)

    async def deliver(self, alert: Alert) -> None:
        client = self._client
        if client is None:
            raise Retry("not connected to the MQTT broker")
        try:
            for topic, payload, retain in messages(self.prefix, alert):
                await client.publish(topic, payload, qos=1, retain=retain)
            snapshot = alert.fields.get("snapshot")
            target = alert.fields.get("target")
            if self.snapshots is not None and isinstance(snapshot, str) and isinstance(target, str):
                jpeg = await asyncio.to_thread(self.snapshots.read, snapshot)
                if jpeg is not None:
                    topic = f"{self.prefix}/{topic_part(alert.stream)}/{topic_part(target)}/snapshot"
                    await client.publish(topic, jpeg, qos=1, retain=True)
        except aiomqtt.MqttError as e:
            raise Retry(f"MQTT: {type(e).__name__}") from None

    async def close(self) -> None:
        pass
