"""Zones: polygons in coordinates relative to the frame (0–1), and what the model is shown of them.

The model sees the bounding rectangle of the zones (a little margin around),
with the pixels outside every polygon greyed out: no pixels spent on the
street beyond the fence, and more detail where it matters. Its boxes come
back in the pixels of that image; ``to_frame`` maps them to the frame, and a
match whose box lies outside every zone of its target is not a match.
Geometry only, pure; ``mask`` draws with OpenCV.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from monitor.sources.base import Frame

Point = tuple[float, float]
Polygon = tuple[Point, ...]
Box = tuple[float, float, float, float]  # x1, y1, x2, y2

MARGIN = 0.02  # of the frame, around the zones' rectangle
GREY = (127, 127, 127)


@dataclass(frozen=True, slots=True)
class View:
    """The part of the frame the model is shown: a rectangle, and the polygons kept in it."""

    rect: Box  # relative to the frame
    polygons: tuple[Polygon, ...]  # relative to the frame


def view_of(polygons: Sequence[Polygon]) -> View | None:
    """The rectangle around the polygons, with a margin; None for none (the whole frame)."""
    if not polygons:
        return None
    xs = [x for p in polygons for x, _ in p]
    ys = [y for p in polygons for _, y in p]
    rect = (max(0.0, min(xs) - MARGIN), max(0.0, min(ys) - MARGIN),
            min(1.0, max(xs) + MARGIN), min(1.0, max(ys) + MARGIN))
    return View(rect, tuple(polygons))


def view_for(per_target: Sequence[Sequence[Polygon]]) -> View | None:
    """What one request shows for these targets: their zones' view when every one of them
    is limited to zones, else the whole frame (None)."""
    if not per_target or any(not polygons for polygons in per_target):
        return None
    return view_of([p for polygons in per_target for p in polygons])


def area(view: View | None) -> float:
    """The share of the frame the view shows."""
    if view is None:
        return 1.0
    x1, y1, x2, y2 = view.rect
    return max(1e-6, (x2 - x1) * (y2 - y1))


def crop(frame: Frame, view: View) -> Frame:
    """The view's rectangle of the frame, pixels outside every polygon greyed."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = view.rect
    left, top = int(x1 * w), int(y1 * h)
    right, bottom = max(left + 1, round(x2 * w)), max(top + 1, round(y2 * h))
    part = frame[top:bottom, left:right].copy()
    mask = np.zeros(part.shape[:2], np.uint8)
    for polygon in view.polygons:
        pts = np.array([[x * w - left, y * h - top] for x, y in polygon], np.float32)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    part[mask == 0] = GREY
    return part


def to_frame(box: Box, width: int, height: int, view: View | None) -> Box:
    """A box in the pixels of the image the model saw (``width`` x ``height``), relative to the
    frame. Clamped to the image."""
    x1, y1, x2, y2 = (max(0.0, min(1.0, v / s)) for v, s in zip(box, (width, height, width, height),
                                                              strict=True))
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if view is None:
        return (x1, y1, x2, y2)
    rx1, ry1, rx2, ry2 = view.rect
    sx, sy = rx2 - rx1, ry2 - ry1
    return (rx1 + x1 * sx, ry1 + y1 * sy, rx1 + x2 * sx, ry1 + y2 * sy)


def contains(polygon: Polygon, point: Point) -> bool:
    """Ray casting: whether the point lies inside the polygon."""
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def in_zones(box: Box, polygons: Sequence[Polygon]) -> bool:
    """Whether the box stands in one of the zones: its centre or the middle of its bottom edge
    (where a person's feet are) inside a polygon."""
    x1, y1, x2, y2 = box
    points = [((x1 + x2) / 2, (y1 + y2) / 2), ((x1 + x2) / 2, y2 - 1e-6)]
    return any(contains(p, point) for p in polygons for point in points)
