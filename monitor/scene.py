"""Scene-change gating: skip the model when the frame is nearly the one last analysed. Pure.

A quiet corridor at night looks the same for hours; asking the model about
it every second wastes the GPU. Each sample gets a small blurred grey
thumbnail; when fewer than ``min_changed_fraction`` of its pixels differ by
more than ``pixel_delta`` from the last *analysed* frame's, the last verdicts
are reused, for at most ``max_reuse_seconds``. Comparing with the last
analysed frame (not the previous one) means slow drift still adds up to a change.

Change is also judged per region: the thumbnail is cut into a ``grid`` x
``grid`` of tiles and a tile in which ``min_region_fraction`` of the pixels
changed is a change, however quiet the rest. A person 60 px tall in a 1080p
frame is ~10 thumbnail pixels: 0.07% of the whole frame (under the 0.2%
threshold, so their verdicts would be reused for up to 30 s) but ~5% of one
tile of an 8 x 8 grid.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from monitor.scaling import resize
from monitor.sources.base import Image, Yuv

Thumb = npt.NDArray[np.uint8]
THUMB_WIDTH = 160


def thumbnail(frame: Image) -> Thumb:
    """A small blurred grey picture of the frame: ~0.04 ms for a live frame, ~0.2 ms at 1080p.

    Grey is the luma: a YUV frame's own first plane, so it is never converted. A live
    frame is held at the model's size, a few times the thumbnail's: box-filter halvings
    get there cheapest (0.04 against 0.12 ms at 644x364, on the event loop every
    sample). A recording's full-size BGR frame goes bilinear to 2x the size first,
    which reads only the pixels it needs.
    """
    if isinstance(frame, Yuv):
        return blur(resize(frame.planes()[0], THUMB_WIDTH,
                           max(1, round(frame.height * THUMB_WIDTH / frame.width))))
    h, w = frame.shape[:2]
    tw, th = THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))
    small = cv2.resize(frame, (tw * 2, th * 2), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(small, (tw, th), interpolation=cv2.INTER_AREA)
    return blur(small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))


def blur(gray: cv2.typing.MatLike) -> Thumb:
    """Sensor noise out of the comparison."""
    return np.asarray(cv2.GaussianBlur(gray, (3, 3), 0), np.uint8)


def changed_fraction(a: Thumb, b: Thumb, pixel_delta: int) -> float:
    return float(np.count_nonzero(cv2.absdiff(a, b) > pixel_delta)) / a.size


def region_changed_fraction(a: Thumb, b: Thumb, pixel_delta: int, grid: int) -> float:
    """The largest share of changed pixels in any tile of a ``grid`` x ``grid`` cut."""
    changed = (cv2.absdiff(a, b) > pixel_delta).astype(np.float32)
    h, w = changed.shape
    if grid <= 1 or h < grid or w < grid:
        return float(changed.mean())
    # INTER_AREA to grid x grid averages each tile: its share of changed pixels.
    shares = cv2.resize(changed, (grid, grid), interpolation=cv2.INTER_AREA)
    return float(shares.max())


class SceneGate:
    def __init__(self, *, pixel_delta: int = 20, min_changed_fraction: float = 0.002,
                 max_reuse_seconds: float = 30.0, grid: int = 8, min_region_fraction: float = 0.02) -> None:
        self.pixel_delta = pixel_delta
        self.min_changed_fraction = min_changed_fraction
        self.grid = grid
        self.min_region_fraction = min_region_fraction
        self.max_reuse_seconds = max_reuse_seconds
        self._ref: Thumb | None = None
        self._ref_at = 0.0

    def unchanged(self, thumb: Thumb, at: float) -> bool:
        """True when the last analysed verdicts still hold for this frame (taken at ``at`` s)."""
        ref = self._ref
        if ref is None or ref.shape != thumb.shape or at - self._ref_at > self.max_reuse_seconds:
            return False
        if changed_fraction(ref, thumb, self.pixel_delta) >= self.min_changed_fraction:
            return False
        return self.grid <= 1 or region_changed_fraction(
            ref, thumb, self.pixel_delta, self.grid) < self.min_region_fraction

    def analysed(self, thumb: Thumb, at: float) -> None:
        self._ref, self._ref_at = thumb, at

    def forget(self) -> None:
        """The last analysis failed: its verdicts are nothing to reuse."""
        self._ref = None
