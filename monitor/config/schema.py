"""The config's schema: what each key means, its default and its bounds (pydantic).

Unknown keys are errors (``extra="forbid"``); secrets are ``SecretStr``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from monitor.names import collisions, object_id, topic_part
from monitor.passwords import parse_hash
from monitor.schedule import Rule, parse_rule, zone
from monitor.urls import is_loopback, redact_url

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
# 644x364 (a 16:9 frame) = 299 image tokens for Qwen2.5-VL, against 2,691 for 1080p.
# Far or small targets may need more: 896x504 = 576 tokens.
DEFAULT_MAX_PIXELS = 644 * 364


# An endpoint with max_concurrency: auto starts here and never goes above the ceiling.
AUTO_START_CONCURRENCY = 4
AUTO_MAX_CONCURRENCY = 64


class ConfigError(Exception):
    """A config problem, already phrased as one line for the user."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Stream and sink names become metric labels and log fields: keep them plain.
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def _http_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")


class EndpointConfig(_Model):
    """One model server. Unset model and api_key come from the vlm section."""

    name: Name  # its metric label (``endpoint``); never the URL
    base_url: str
    model: str | None = Field(None, min_length=1)
    api_key: SecretStr | None = None
    # Requests in flight at most; "auto" finds what the server sustains (AIMD on latency).
    max_concurrency: int | Literal["auto"] = 8
    fallback: bool = False  # used only while every primary endpoint is down

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        _http_url(v)
        return v.rstrip("/")

    @field_validator("max_concurrency")
    @classmethod
    def _limit(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 256:
            raise ValueError("must be from 1 to 256, or auto")
        return v


class VlmConfig(_Model):
    base_url: str = DEFAULT_BASE_URL
    model: str = Field(DEFAULT_MODEL, min_length=1)
    api_key: SecretStr = SecretStr("EMPTY")
    max_concurrency: int = Field(8, ge=1, le=256)
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    # A retried frame is a stale frame: keep the budget small.
    max_retries: int = Field(1, ge=0, le=5)
    max_tokens: int = Field(256, ge=16, le=4096)
    # Several model servers instead of base_url: each request goes to the one with the most
    # free capacity; fallbacks only while every primary is down.
    endpoints: list[EndpointConfig] | None = Field(None, min_length=1, max_length=64)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        _http_url(v)
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_way(self) -> VlmConfig:
        if self.endpoints is None:
            return self
        if "base_url" in self.model_fields_set:
            raise ValueError("give either base_url or endpoints, not both")
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError("endpoint names must be unique")
        if all(e.fallback for e in self.endpoints):
            raise ValueError("at least one endpoint must not be a fallback")
        return self

    def resolved_endpoints(self) -> list[EndpointConfig]:
        """The endpoints with model and key filled in; a lone base_url is one named "default"."""
        if self.endpoints is None:
            return [EndpointConfig(name="default", base_url=self.base_url, model=self.model,
                                   api_key=self.api_key, max_concurrency=self.max_concurrency)]
        return [e.model_copy(update={"model": e.model or self.model,
                                     "api_key": e.api_key or self.api_key})
                for e in self.endpoints]

    @property
    def total_concurrency(self) -> int:
        """Requests in flight at most, all endpoints together ("auto" counted at its ceiling)."""
        return sum(e.max_concurrency if isinstance(e.max_concurrency, int) else AUTO_MAX_CONCURRENCY
                   for e in self.resolved_endpoints() if not e.fallback)


def _rule(text: str) -> str:
    parse_rule(text)  # ScheduleError is a ValueError: reported with its key path and line
    return text


ScheduleRule = Annotated[str, AfterValidator(_rule)]


class Target(_Model):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=1000)
    zones: list[Name] = Field(default_factory=list)  # only inside these zones of the stream
    # When it is watched, e.g. "Mon-Fri 19:00-07:00", in the config's timezone; none: always.
    schedule: list[ScheduleRule] = Field(default_factory=list)
    verify: bool = False  # a second, stricter look at a close crop before alerting

    def rules(self) -> list[Rule]:
        return [parse_rule(r) for r in self.schedule]

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"name": v, "description": v}
        return v

    @property
    def prompt_text(self) -> str:
        return self.description or self.name


MIN_ZONE_AREA = 0.001  # of the frame: ~45x45 px at 1080p


def polygon_area(points: list[tuple[float, float]]) -> float:
    """The area a polygon encloses (shoelace formula), in the units of its points squared."""
    twice = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True))
    return abs(twice) / 2


class ZoneConfig(_Model):
    name: Name
    polygon: list[tuple[float, float]] = Field(min_length=3, max_length=100)

    @field_validator("polygon")
    @classmethod
    def _relative(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for x, y in v:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"point [{x:g}, {y:g}] is outside the frame: coordinates are 0 to 1")
        return v

    @model_validator(mode="after")
    def _has_area(self) -> ZoneConfig:
        # Three equal or collinear points passed, and the model was shown a 28x28 grey image:
        # the target could never alert.
        share = polygon_area(self.polygon)
        if share < MIN_ZONE_AREA:
            raise ValueError(f"zone {self.name!r} covers {share:.3%} of the frame, less than the "
                             f"{MIN_ZONE_AREA:.1%} a zone needs (are its points in a line?)")
        return self


class ClipOverride(_Model):
    """A stream's own clip settings; what it leaves out comes from the top-level ``clips``."""

    enabled: bool | None = None
    before_seconds: float | None = Field(None, ge=0, le=60)
    after_seconds: float | None = Field(None, ge=0, le=300)


class ClipsConfig(_Model):
    """A short video with every alert, from the camera's own packets (see monitor/sources/clips.py)."""

    enabled: bool = True
    before_seconds: float = Field(5.0, ge=0, le=60)
    after_seconds: float = Field(10.0, ge=0, le=300)
    max_total_mb: float = Field(2000.0, gt=0)
    keep_days: float = Field(7.0, gt=0, le=3650)  # also how long a clip's signed link works
    # A camera's packets held in memory are bounded at this bitrate: one that suddenly sends
    # more keeps the bound, and its clips are shorter (the event says so).
    max_mbit_per_second: float = Field(16.0, gt=0, le=1000)


class StreamConfig(_Model):
    name: Name
    # Camera URLs carry passwords: kept secret, shown only through redact_url().
    url: SecretStr
    targets: list[Target] = Field(min_length=1)
    zones: list[ZoneConfig] = Field(default_factory=list)
    sample_interval_seconds: float = Field(1.0, gt=0, le=3600)
    # This camera's pixel budget, if not preprocess.max_pixels (far targets need more).
    max_pixels: int | None = Field(None, ge=28 * 28 * 4, le=12_845_056)
    # Files are read as fast as the model allows unless paced to real time.
    realtime: bool = False
    # Live streams only:
    transport: Literal["tcp", "udp"] = "tcp"
    decode: Literal["auto", "keyframes", "all"] = "auto"
    open_timeout_seconds: float = Field(10.0, gt=0, le=300)
    # No new frame for this long and the stream is down, even if its socket is open.
    frozen_after_seconds: float = Field(10.0, gt=0, le=3600)
    # stream_down goes to the sinks only after this long down (stream_up only after it).
    down_alert_after_seconds: float = Field(60.0, ge=0, le=86400)
    clips: ClipOverride = ClipOverride()

    @field_validator("url")
    @classmethod
    def _nonempty(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _known_zones(self) -> StreamConfig:
        names = [z.name for z in self.zones]
        if len(set(names)) != len(names):
            raise ValueError("zone names must be unique within a stream")
        for t in self.targets:
            unknown = [z for z in t.zones if z not in names]
            if unknown:
                raise ValueError(f"target {t.name!r} names unknown zone {unknown[0]!r} "
                                 f"(this stream's zones: {', '.join(names) or 'none'})")
        return self

    def zone_polygons(self, target: Target) -> list[tuple[tuple[float, float], ...]]:
        by_name = {z.name: tuple(z.polygon) for z in self.zones}
        return [by_name[z] for z in target.zones]

    @property
    def display_url(self) -> str:
        return redact_url(self.url.get_secret_value())


class DetectionConfig(_Model):
    min_confidence: int = Field(7, ge=1, le=10)
    consecutive_matches: int = Field(2, ge=1, le=100)
    # An episode ends after this many absent samples in a row; then it may alert again.
    rearm_after_absent: int = Field(3, ge=1, le=10000)
    # At least this long (of media time; since connect for live) between two alerts
    # for the same stream and target, even if the episode ended in between.
    cooldown_seconds: float = Field(0.0, ge=0, le=86400)


class PreprocessConfig(_Model):
    clahe: bool = True
    clahe_clip_limit: float = Field(2.0, gt=0, le=40)
    clahe_tile_grid: int = Field(8, ge=1, le=64)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=28 * 28 * 4, le=12_845_056)
    jpeg_quality: int = Field(85, ge=10, le=100)


EventName = Literal["target_detected", "target_cleared", "stream_down", "stream_up", "clip_ready"]


def _default_events() -> list[EventName]:
    return ["target_detected", "stream_down", "stream_up", "clip_ready"]


class SceneChangeConfig(_Model):
    """Reuse the last verdicts while the scene has not changed (see monitor/scene.py)."""

    enabled: bool = True
    pixel_delta: int = Field(20, ge=1, le=255)
    min_changed_fraction: float = Field(0.002, gt=0, le=1)
    max_reuse_seconds: float = Field(30.0, ge=0, le=3600)
    # Per region too: a grid x grid cut, a tile with this share changed is a change (1: off).
    grid: int = Field(8, ge=1, le=32)
    min_region_fraction: float = Field(0.02, gt=0, le=1)


def _all_events() -> list[EventName]:
    return ["target_detected", "target_cleared", "stream_down", "stream_up", "clip_ready"]


class SinkBase(_Model):
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
        _http_url(v.get_secret_value())
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


def _log_only() -> list[SinkConfig]:
    return [LogSinkConfig(type="log")]


class UserConfig(_Model):
    name: Name
    password_hash: SecretStr  # from `vlm-monitor hash-password`

    @field_validator("password_hash")
    @classmethod
    def _ours(cls, v: SecretStr) -> SecretStr:
        parse_hash(v.get_secret_value())
        return v


class ServerConfig(_Model):
    listen: str = "127.0.0.1:9108"
    # Where people reach the console (behind a TLS proxy: https://...). With https, its
    # session cookie is sent only over TLS.
    public_url: str | None = None
    # Reverse proxies (addresses or networks) whose X-Forwarded-For names the client: the
    # login throttle then counts each client, not the proxy that all of them share.
    trusted_proxies: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for text in v:
            try:
                ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not an IP address or network, e.g. 10.0.0.0/8") from None
        return v
    # Who may use the console and its API. Required when `listen` is not a loopback address.
    users: list[UserConfig] = Field(default_factory=list)

    @field_validator("users")
    @classmethod
    def _unique_users(cls, v: list[UserConfig]) -> list[UserConfig]:
        names = [u.name for u in v]
        if len(set(names)) != len(names):
            raise ValueError("user names must be unique")
        return v

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be an http(s) URL with a host and no query, e.g. https://cameras.example.org")
        if parts.username or parts.password:
            raise ValueError("must not hold credentials")
        return v.rstrip("/")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9108")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class SnapshotsConfig(_Model):
    enabled: bool = True
    max_count: int = Field(1000, ge=1)
    max_age_days: float = Field(30.0, gt=0)
    max_total_mb: float = Field(500.0, gt=0)


class ConsoleConfig(_Model):
    """The web console (served on server.listen) and its scans of uploaded recordings."""

    enabled: bool = True
    recent_samples: int = Field(300, ge=10, le=5000)  # per camera, in memory, for "why no alert?"
    upload_max_mb: float = Field(2048.0, gt=0)
    # An upload's frames may be at most this big (a small file can hold huge frames that take
    # gigabytes to decode); refused with 400 before any frame is decoded.
    max_upload_pixels: int = Field(4096 * 2160, ge=64 * 64, le=7680 * 4320)
    scans_keep: int = Field(20, ge=1, le=1000)  # finished scans kept in the state directory
    scans_max_total_mb: float = Field(1024.0, gt=0)  # their results' thumbnails, all together
    # Model slots a scan may hold at once; it takes them only when no camera is waiting.
    scan_concurrency: int = Field(2, ge=1, le=64)


class CaptureConfig(_Model):
    """Where live cameras are received and decoded."""

    # Worker processes, each receiving a group of cameras; auto: one per 50 cameras, at most
    # two per core; 0: threads of the daemon's own process (they then share its GIL).
    workers: Literal["auto"] | Annotated[int, Field(ge=0, le=256)] = "auto"


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class StreamSettings(_Model):
    """Everything one stream runs by (see Config.stream_settings)."""

    stream: StreamConfig
    detection: DetectionConfig
    preprocess: PreprocessConfig  # with the stream's own pixel budget
    scene_change: SceneChangeConfig
    window: int  # samples of a recording analysed at once
    timezone: str | None = None  # for the targets' schedules
    clips: ClipsConfig = ClipsConfig()  # with the stream's own overrides


class Config(_Model):
    vlm: VlmConfig = VlmConfig()
    streams: list[StreamConfig] = Field(min_length=1)
    detection: DetectionConfig = DetectionConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    scene_change: SceneChangeConfig = SceneChangeConfig()
    alerts: list[SinkConfig] = Field(default_factory=lambda: _log_only())
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
        """Each stream's effective settings, global sections resolved into them.

        A reload restarts exactly the streams whose settings here changed.
        """
        out = {}
        for s in self.streams:
            pre = self.preprocess
            if s.max_pixels is not None:
                pre = pre.model_copy(update={"max_pixels": s.max_pixels})
            clips = self.clips.model_copy(update=s.clips.model_dump(exclude_none=True))
            out[s.name] = StreamSettings(stream=s, detection=self.detection, preprocess=pre,
                                         scene_change=self.scene_change,
                                         window=min(self.vlm.total_concurrency, 32),
                                         timezone=self.timezone, clips=clips)
        return out

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
