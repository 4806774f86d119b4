"""The cameras and recordings (``streams``), what is looked for in them, and how: detection,
the scene-change gate, clips, capture."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from monitor.config.base import Model, Name
from monitor.schedule import Rule, parse_rule
from monitor.urls import redact_url


def _rule(text: str) -> str:
    parse_rule(text)  # ScheduleError is a ValueError: reported with its key path and line
    return text


ScheduleRule = Annotated[str, AfterValidator(_rule)]


class Target(Model):
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


class ZoneConfig(Model):
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


class ClipOverride(Model):
    """A stream's own clip settings; what it leaves out comes from the top-level ``clips``."""

    enabled: bool | None = None
    before_seconds: float | None = Field(None, ge=0, le=60)
    after_seconds: float | None = Field(None, ge=0, le=300)


class ClipsConfig(Model):
    """A short video with every alert, from the camera's own packets (see monitor/sources/clips.py)."""

    enabled: bool = True
    before_seconds: float = Field(5.0, ge=0, le=60)
    after_seconds: float = Field(10.0, ge=0, le=300)
    max_total_mb: float = Field(2000.0, gt=0)
    keep_days: float = Field(7.0, gt=0, le=3650)  # also how long a clip's signed link works
    # A camera's packets held in memory are bounded at this bitrate: one that suddenly sends
    # more keeps the bound, and its clips are shorter (the event says so).
    max_mbit_per_second: float = Field(16.0, gt=0, le=1000)


class StreamConfig(Model):
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


class DetectionConfig(Model):
    min_confidence: int = Field(7, ge=1, le=10)
    consecutive_matches: int = Field(2, ge=1, le=100)
    # An episode ends after this many absent samples in a row; then it may alert again.
    rearm_after_absent: int = Field(3, ge=1, le=10000)
    # At least this long (of media time; since connect for live) between two alerts
    # for the same stream and target, even if the episode ended in between.
    cooldown_seconds: float = Field(0.0, ge=0, le=86400)


class SceneChangeConfig(Model):
    """Reuse the last verdicts while the scene has not changed (see monitor/scene.py)."""

    enabled: bool = True
    pixel_delta: int = Field(20, ge=1, le=255)
    min_changed_fraction: float = Field(0.002, gt=0, le=1)
    max_reuse_seconds: float = Field(30.0, ge=0, le=3600)
    # Per region too: a grid x grid cut, a tile with this share changed is a change (1: off).
    grid: int = Field(8, ge=1, le=32)
    min_region_fraction: float = Field(0.02, gt=0, le=1)


class CaptureConfig(Model):
    """Where live cameras are received and decoded."""

    # Worker processes, each receiving a group of cameras; auto: one per 50 cameras, at most
    # two per core; 0: threads of the daemon's own process (they then share its GIL).
    workers: Literal["auto"] | Annotated[int, Field(ge=0, le=256)] = "auto"
