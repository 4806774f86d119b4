"""Capped exponential backoff with jitter, shared by reconnects, model probes and deliveries."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(attempt: int, base: float = 1.0, cap: float = 30.0,
                  rng: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempt`` (0-based): uniform in [c/2, c], c = min(cap, base*2^n).

    The jitter keeps many streams (or daemons) that failed together from retrying in lockstep.
    """
    ceiling = min(cap, base * 2.0 ** min(attempt, 30))
    return ceiling / 2 + rng() * ceiling / 2
