"""The sinks: log and webhook here, MQTT in its own module; ``make_sinks`` builds them all.

A sink delivers one alert or raises Retry (try later) or GiveUp (monitor.alerts.sink).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import replace

import httpx

from monitor import __version__, logs
from monitor.alerts.model import Alert
from monitor.alerts.mqtt import MqttSink
from monitor.alerts.sink import DaemonStatus, DeliveryPolicy, GiveUp, Retry, Sink
from monitor.alerts.snapshots import Snapshots
from monitor.config import LogSinkConfig, SinkConfig, WebhookSinkConfig


class LogSink:
    def __init__(self, name: str, cfg: LogSinkConfig) -> None:
        self.name = name
        self.policy = DeliveryPolicy.of(cfg)
        self._log = logs.get("monitor.alert")

    async def deliver(self, alert: Alert) -> None:
        payload = alert.payload()
        event, event_id = payload.pop("event"), payload.pop("id")
        # A clip_ready names its alert (alert_id) and has its own id besides.
        ids = {"event_id": event_id} if "alert_id" in payload else {"alert_id": event_id}
        self._log.warning(event, **ids, **payload)

    async def run(self) -> None:
        pass

    async def close(self) -> None:
        pass


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSink:
    """POSTs one alert per request; 2xx delivered, 408/429/5xx/network retried, other 4xx not."""

    def __init__(self, name: str, cfg: WebhookSinkConfig, snapshots: Snapshots | None = None) -> None:
        self.name = name
        self.policy = DeliveryPolicy.of(cfg)
        self._url = cfg.url.get_secret_value()
        self._secret = cfg.secret.get_secret_value().encode() if cfg.secret else None
        self._snapshots = snapshots if cfg.include_image else None
        self._client = httpx.AsyncClient(timeout=cfg.timeout_seconds, follow_redirects=False)

    def _body(self, alert: Alert) -> bytes:
        snapshot = alert.fields.get("snapshot")
        if self._snapshots is not None and isinstance(snapshot, str):
            jpeg = self._snapshots.read(snapshot)
            if jpeg is not None:
                image = base64.b64encode(jpeg).decode("ascii")
                return replace(alert, fields={**alert.fields, "image_jpeg_base64": image}).body()
        return alert.body()

    async def deliver(self, alert: Alert) -> None:
        # The snapshot is read from disk in a thread: never file I/O on the event loop.
        body = await asyncio.to_thread(self._body, alert) if self._snapshots else alert.body()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"vlm-monitor/{__version__}",
            "Idempotency-Key": alert.id,
        }
        if self._secret is not None:
            headers["X-Signature-256"] = signature(self._secret, body)
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise Retry("timed out") from None
        except httpx.HTTPError as e:
            raise Retry(f"network error ({type(e).__name__})") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        if status >= 500 or status in (408, 429):
            raise Retry(f"HTTP {status}")
        raise GiveUp(f"HTTP {status}")

    async def run(self) -> None:
        pass

    async def close(self) -> None:
        await self._client.aclose()


def make_sinks(configs: list[SinkConfig], names: list[str], snapshots: Snapshots | None = None,
               streams: Sequence[tuple[str, Sequence[str]]] = (), status: DaemonStatus | None = None,
               ) -> list[Sink]:
    sinks: list[Sink] = []
    for cfg, name in zip(configs, names, strict=True):
        if isinstance(cfg, LogSinkConfig):
            sinks.append(LogSink(name, cfg))
        elif isinstance(cfg, WebhookSinkConfig):
            sinks.append(WebhookSink(name, cfg, snapshots))
        else:
            sinks.append(MqttSink(name, cfg, snapshots, streams, status))
    return sinks
