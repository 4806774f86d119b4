"""One stream's effective settings: the global sections resolved into it. A reload restarts
exactly the streams whose settings here changed."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.config.base import Model
from monitor.config.model import PreprocessConfig
from monitor.config.streams import ClipsConfig, DetectionConfig, SceneChangeConfig, StreamConfig


class StreamSettings(Model):
    """Everything one stream runs by (see Config.stream_settings)."""

    stream: StreamConfig
    detection: DetectionConfig
    preprocess: PreprocessConfig  # with the stream's own pixel budget
    scene_change: SceneChangeConfig
    window: int  # samples of a recording analysed at once
    timezone: str | None = None  # for the targets' schedules
    clips: ClipsConfig = ClipsConfig()  # with the stream's own overrides


def stream_settings(streams: Sequence[StreamConfig], *, detection: DetectionConfig,
                    preprocess: PreprocessConfig, scene_change: SceneChangeConfig, clips: ClipsConfig,
                    window: int, timezone: str | None) -> dict[str, StreamSettings]:
    """Each stream's effective settings: the global sections, with what the stream sets itself."""
    out = {}
    for s in streams:
        pre = preprocess
        if s.max_pixels is not None:
            pre = pre.model_copy(update={"max_pixels": s.max_pixels})
        own = clips.model_copy(update=s.clips.model_dump(exclude_none=True))
        out[s.name] = StreamSettings(stream=s, detection=detection, preprocess=pre,
                                     scene_change=scene_change, window=window, timezone=timezone,
                                     clips=own)
    return out
