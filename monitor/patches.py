"""Qwen2.5-VL's image patches: how many tokens an image costs, and the size that fits a budget.

Pure arithmetic, free of OpenCV, so that capture workers can size frames with it.
"""

from __future__ import annotations

import math

PATCH = 28


def image_tokens(width: int, height: int) -> int:
    """Qwen2.5-VL's image tokens for an image whose sides are multiples of 28 (+2 markers)."""
    return (width // PATCH) * (height // PATCH) + 2


def target_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """Sides rounded to multiples of 28, scaled down to at most max_pixels; aspect kept.

    The same rule as Qwen2.5-VL's own ``smart_resize``, so the server resizes nothing.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    w = max(PATCH, round(width / PATCH) * PATCH)
    h = max(PATCH, round(height / PATCH) * PATCH)
    if w * h > max_pixels:
        beta = math.sqrt(width * height / max_pixels)
        # The epsilon keeps 1280/0.7-style exact ratios from flooring one patch short.
        w = max(PATCH, math.floor(width / beta / PATCH + 1e-9) * PATCH)
        h = max(PATCH, math.floor(height / beta / PATCH + 1e-9) * PATCH)
        # Flooring both sides can cost a whole patch row; take it back if it fits
        # and brings the aspect closer (1920x1080 -> 644x364 rather than 644x336).
        aspect = width / height
        for cw, ch in ((w + PATCH, h), (w, h + PATCH)):
            if cw * ch <= max_pixels and abs(cw / ch - aspect) < abs(w / h - aspect):
                w, h = cw, ch
    return w, h
