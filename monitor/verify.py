"""The second look (``verify: true``): before a streak raises an alert, ask once more about a
close crop of the frame around the box (or the zones), with a stricter question.

Hallucinated matches rarely survive a closer, differently framed look; a
poster or a reflection is easier to tell at twice the pixels. The region is
pure geometry; ``second_look`` is one model call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from monitor.config import PreprocessConfig, Target
from monitor.preprocess import prepare
from monitor.prompts import strict
from monitor.sources.base import Frame
from monitor.verdict import Box, Verdict
from monitor.vlm import VlmClient, VlmError
from monitor.zones import View

PAD = 0.5  # of the box's size, on each side
MIN_SIDE = 0.2  # of the frame: a tiny box still gets some context


def region(box: Box | None, view: View | None) -> Box | None:
    """What the second look is shown, relative to the frame: the box with room around it,
    else the zones' rectangle, else the whole frame (None). Pure."""
    if box is None:
        return view.rect if view is not None else None
    x1, y1, x2, y2 = box
    w, h = max(x2 - x1, MIN_SIDE), max(y2 - y1, MIN_SIDE)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w, half_h = w * (1 + 2 * PAD) / 2, h * (1 + 2 * PAD) / 2
    return (max(0.0, cx - half_w), max(0.0, cy - half_h), min(1.0, cx + half_w), min(1.0, cy + half_h))


@dataclass(frozen=True, slots=True)
class Outcome:
    confirmed: bool
    verdict: Verdict | None
    error: VlmError | None
    seconds: float  # the model time it added


async def second_look(client: VlmClient, frame: Frame, target: Target, area: Box | None,
                      pre: PreprocessConfig, min_confidence: int) -> Outcome:
    h, w = frame.shape[:2]
    if area is not None:
        x1, y1, x2, y2 = area
        frame = frame[int(y1 * h):max(int(y1 * h) + 1, round(y2 * h)),
                      int(x1 * w):max(int(x1 * w) + 1, round(x2 * w))]
    prepared = await asyncio.to_thread(prepare, frame, max_pixels=pre.max_pixels, clahe=pre.clahe,
                                       clip_limit=pre.clahe_clip_limit, tile_grid=pre.clahe_tile_grid,
                                       jpeg_quality=pre.jpeg_quality)
    start = asyncio.get_running_loop().time()
    try:
        analysis = await client.analyze(prepared.jpeg, [strict(target.prompt_text)])
    except VlmError as e:
        return Outcome(False, None, e, asyncio.get_running_loop().time() - start)
    verdict = analysis.verdicts[0]
    return Outcome(verdict.is_match(min_confidence), verdict, None,
                   asyncio.get_running_loop().time() - start)
