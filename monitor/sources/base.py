"""What every source hands on: a Sample holding a Frame. Pure data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.uint8]  # BGR, height x width x 3, as OpenCV decodes


class SourceError(Exception):
    """A source that cannot be read, phrased for the user (never holding credentials)."""


@dataclass(frozen=True, slots=True)
class Sample:
    index: int  # 0, 1, 2, … per source
    offset: float  # seconds into the file; seconds since connect for a live stream
    wall: datetime  # UTC time the frame was taken
    frame: Frame
    captured: float  # time.monotonic() when decoded: frame age is measured from here
    # The frame at the source's own resolution, when it is held smaller (a live camera whose
    # targets take a second look keeps it); converted only when called.
    full: Callable[[], Frame] | None = None
    lag: float = 0.0  # how far a live camera's capture ran behind the camera (s)
