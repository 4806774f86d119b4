"""The config's schema: the whole file, its sections (``model``, ``streams``, ``sinks``,
``server``) checked together. Unknown keys are errors (``extra="forbid"``); secrets are
``SecretStr``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from monitor.config.base import Model
from monitor.config.model import PreprocessConfig, VlmConfig
from monitor.config.server import ConsoleConfig, LoggingConfig, ServerConfig
from monitor.config.settings import StreamSettings, stream_settings
from monitor.config.sinks import MqttSinkConfig, SinkConfig, SnapshotsConfig, WebhookSinkConfig, log_only
from monitor.config.streams import (
    CaptureConfig,
    ClipsConfig,
    DetectionConfig,
    SceneChangeConfig,
    StreamConfig,
)
from monitor.names import collisions, object_id, topic_part
from monitor.schedule import zone
from monitor.urls import is_loopback


class Config(Model):
    vlm: VlmConfig = VlmConfig()
    streams: list[StreamConfig] = Field(min_length=1)
    detection: DetectionConfig = DetectionConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    scene_change: SceneChangeConfig = SceneChangeConfig()
    alerts: list[SinkConfig] = Field(default_factory=lambda: log_only())
    server: ServerConfig = ServerConfig()
    state_dir: Path | None = None
    snapshots: SnapshotsConfig = SnapshotsConfig()
    console: ConsoleConfig = ConsoleConfig()
    capture: CaptureConfig = CaptureConfig()
    clips: ClipsConfig = ClipsConfig()
    logging: LoggingConfig = LoggingConfig()
    # On SIGTERM: how long in-flight analysis, then alert delivery, may each take.
    shutdown_grace_seconds: float = Field(10.0, ge=0, le=600)
    timezone: str | None = None  # for schedules, e.g. Europe/Berlin; default: the host's

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        zone(v)
        return v

    @model_validator(mode="after")
    def _console_needs_users_off_loopback(self) -> Config:
        if self.console.enabled and not self.server.users and not is_loopback(self.server.host):
            raise ValueError(f"server.listen is {self.server.listen}, off this machine, and no "
                             f"server.users are configured: add users (see `vlm-monitor "
                             f"hash-password`), listen on 127.0.0.1, or set console.enabled: false")
        return self

    @model_validator(mode="after")
    def _distinct_on_mqtt(self) -> Config:
        """MQTT topics and Home Assistant ids fold case, punctuation and letters outside ASCII:
        two names that fold alike would share a state topic (one's OFF clears the other) and an
        entity (one's discovery config overwrites the other's)."""
        if not any(isinstance(sink, MqttSinkConfig) for sink in self.alerts):
            return self
        forms = (topic_part, object_id)
        clash = collisions([st.name for st in self.streams], *forms)
        if clash is not None:
            raise ValueError(f"streams {clash[0]!r} and {clash[1]!r} would share MQTT topics and Home "
                             "Assistant entities: rename one")
        for st in self.streams:
            clash = collisions([t.name for t in st.targets], *forms)
            if clash is not None:
                raise ValueError(f"stream {st.name!r}: targets {clash[0]!r} and {clash[1]!r} would share "
                                 "MQTT topics and Home Assistant entities: rename one")
        return self

    def stream_settings(self) -> dict[str, StreamSettings]:
        """Each stream's effective settings (``monitor.config.settings``)."""
        return stream_settings(self.streams, detection=self.detection, preprocess=self.preprocess,
                               scene_change=self.scene_change, clips=self.clips,
                               window=min(self.vlm.total_concurrency, 32), timezone=self.timezone)

    def resolved_state_dir(self, env: Mapping[str, str] = os.environ) -> Path:
        if self.state_dir is not None:
            return self.state_dir
        if env.get("STATE_DIRECTORY"):
            # systemd may pass several, colon-separated; the first is ours.
            return Path(env["STATE_DIRECTORY"].split(":")[0])
        return Path.home() / ".local" / "state" / "vlm-monitor"

    def sink_names(self) -> list[str]:
        """Each sink's identity: its name, else its type and a digest of where it delivers.

        Pending deliveries are stored under this identity, so it must not follow the
        sink's position in the list: a webhook inserted before another would get the
        other's pending alerts. The digest keeps the URL's token out of labels and logs.
        """
        names: list[str] = []
        for sink in self.alerts:
            if sink.name:
                base = sink.name
            elif isinstance(sink, WebhookSinkConfig):
                base = f"webhook-{_digest(sink.url.get_secret_value())}"
            elif isinstance(sink, MqttSinkConfig):
                base = f"mqtt-{_digest(f'{sink.host}:{sink.port}/{sink.topic_prefix}')}"
            else:
                base = sink.type
            name, n = base, 2
            while name in names:  # the same destination twice: told apart by order
                name, n = f"{base}-{n}", n + 1
            names.append(name)
        return names


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]
