"""An MQTT sink with Home Assistant-friendly topics, over one long-lived connection.

    {prefix}/availability               "online" / "offline" (retained; "offline" is the will)
    {prefix}/{stream}/status            "online" / "offline" (retained; stream_up / stream_down)
    {prefix}/{stream}/{target}/state    "ON" / "OFF"          (retained; detected / cleared)
    {prefix}/{stream}/events            every alert's JSON payload (not retained)

Messages go out at QoS 1 and count as delivered once the broker acknowledges
them; while the broker is away, deliveries wait in the outbox and are retried.
"""

from __future__ import annotations

import asyncio
import re
import ssl

import aiomqtt

from monitor import logs
from monitor.alerts.model import Alert
from monitor.alerts.sink import DeliveryPolicy, Retry
from monitor.backoff import backoff_delay
from monitor.config import MqttSinkConfig


def topic_part(name: str) -> str:
    """A name as one topic level: lowercase, no '/', '+', '#' or spaces."""
    return re.sub(r"[^a-z0-9_.-]+", "_", name.lower()).strip("_") or "_"


def messages(prefix: str, alert: Alert) -> list[tuple[str, bytes, bool]]:
    """(topic, payload, retain) for one alert. Pure."""
    base = f"{prefix}/{topic_part(alert.stream)}"
    out = [(f"{base}/events", alert.body(), False)]
    target = alert.fields.get("target")
    if alert.event in ("target_detected", "target_cleared") and isinstance(target, str):
        state = b"ON" if alert.event == "target_detected" else b"OFF"
        out.append((f"{base}/{topic_part(target)}/state", state, True))
    elif alert.event in ("stream_up", "stream_down"):
        out.append((f"{base}/status", b"online" if alert.event == "stream_up" else b"offline", True))
    return out


class MqttSink:
    def __init__(self, name: str, cfg: MqttSinkConfig) -> None:
        self.name = name
        self.policy = DeliveryPolicy.of(cfg)
        self.cfg = cfg
        self.prefix = cfg.topic_prefix.rstrip("/")
        self.availability = f"{self.prefix}/availability"
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
                        async for _ in client.messages:  # returns (raises) when the connection drops
                            pass
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

    async def deliver(self, alert: Alert) -> None:
        client = self._client
        if client is None:
            raise Retry("not connected to the MQTT broker")
        try:
            for topic, payload, retain in messages(self.prefix, alert):
                await client.publish(topic, payload, qos=1, retain=retain)
        except aiomqtt.MqttError as e:
            raise Retry(f"MQTT: {type(e).__name__}") from None

    async def close(self) -> None:
        pass
