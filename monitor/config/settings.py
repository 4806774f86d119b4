"""One stream's effective settings: the global sections resolved into it. A reload restarts
exactly the streams whose settings here changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from monitor.config.base import Model
from monitor.config.model import PreprocessConfig
from monitor.config.streams import ClipsConfig, DetectionConfig, SceneChangeConfig, StreamConfig

if TYPE_CHECKING:
    from monitor.config.schema import Config


class StreamSettings(Model):
    """Everything one stream runs by (see Config.stream_settings)."""

    stream: StreamConfig
    detection: DetectionConfig
    preprocess: PreprocessConfig  # with the stream's own pixel budget
    scene_change: SceneChangeConfig
    window: int  # samples of a recording analysed at once
    timezone: str | None = None  # for the targets' schedules
    clips: ClipsConfig = ClipsConfig()  # with the stream's own overrides


def stream_settings(config: Config) -> dict[str, StreamSettings]:
    """Each stream's effective settings, global sections resolved into them."""
    out = {}
    for s in config.streams:
        pre = config.preprocess
        if s.max_pixels is not None:
            pre = pre.model_copy(update={"max_pixels": s.max_pixels})
        clips = config.clips.model_copy(update=s.clips.model_dump(exclude_none=True))
        out[s.name] = StreamSettings(stream=s, detection=config.detection, preprocess=pre,
                                     scene_change=config.scene_change,
                                     window=min(config.vlm.total_concurrency, 32),
                                     timezone=config.timezone, clips=clips)
    return out
