"""Where alerts go (``alerts``: log, webhook, MQTT) and the snapshots kept with them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator

from monitor.config.base import Model, Name, http_url

EventName = Literal["target_detected", "target_cleared", "stream_down", "stream_up", "clip_ready"]


def _default_events() -> list[EventName]:
    return ["target_detected", "stream_down", "stream_up", "clip_ready"]


def _all_events() -> list[EventName]:
    return ["target_detected", "target_cleared", "stream_down", "stream_up", "clip_ready"]


class SinkBase(Model):
    """What every sink has: its identity, the events it wants, and how long it retries."""

    # Pending deliveries are kept under the sink's identity: its name, else one
    # derived from where it delivers (see Config.sink_names), never its position.
    name: Name | None = None
    events: list[EventName] = Field(default_factory=_default_events, min_length=1)
    # Failed deliveries are retried with backoff until the alert is this old.
    max_age_seconds: float = Field(86400.0, gt=0, le=30 * 86400)
    retry_max_delay_seconds: float = Field(300.0, ge=1, le=3600)


class LogSinkConfig(SinkBase):
    type: Literal["log"]


class WebhookSinkConfig(SinkBase):
    type: Literal["webhook"]
    # Chat webhooks carry their token in the URL, so it is a secret too.
    url: SecretStr
    secret: SecretStr | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=300)
    # Put the snapshot in the payload (base64), for receivers that cannot reach this host.
    include_image: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        http_url(v.get_secret_value())
        return v


class MqttSinkConfig(SinkBase):
    type: Literal["mqtt"]
    host: str = Field(min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    client_id: str = "vlm-monitor"
    topic_prefix: str = Field("vlm-monitor", pattern=r"^[^#+]+$")
    # Home Assistant MQTT discovery: entities for every camera and target appear by themselves.
    discovery: bool = True
    discovery_prefix: str = Field("homeassistant", pattern=r"^[^#+]+$")
    # target_cleared turns a target's state topic OFF, so it is on by default here.
    events: list[EventName] = Field(default_factory=_all_events, min_length=1)
    retry_max_delay_seconds: float = Field(30.0, ge=1, le=3600)


SinkConfig = Annotated[LogSinkConfig | WebhookSinkConfig | MqttSinkConfig, Field(discriminator="type")]


def log_only() -> list[SinkConfig]:
    return [LogSinkConfig(type="log")]


class SnapshotsConfig(Model):
    enabled: bool = True
    max_count: int = Field(1000, ge=1)
    max_age_days: float = Field(30.0, gt=0)
    max_total_mb: float = Field(500.0, gt=0)
