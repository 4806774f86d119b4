"""``ordered``: results in source order, handed on as soon as they can be, a bounded window."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

from monitor.pipeline import ordered


async def paced(n: int, every: float, produced: dict[int, float]) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(every)
        produced[i] = time.monotonic()
        yield i


async def test_a_paced_source_gets_each_result_at_once_not_when_the_window_fills() -> None:
    produced: dict[int, float] = {}
    lag: list[float] = []

    async def quick(i: int) -> int:
        await asyncio.sleep(0.01)
        return i * 10

    async for item, result in ordered(paced(5, 0.3, produced), quick, window=8):
        assert result == item * 10
        lag.append(time.monotonic() - produced[item])
    # Before, each result waited for 7 more samples (2.1 s here); now only for its own call.
    assert max(lag) < 0.2, lag


async def test_results_keep_source_order_and_the_window_bounds_calls_in_flight() -> None:
    rng = random.Random(3)
    inflight = peak = 0

    async def source() -> AsyncIterator[int]:
        for i in range(40):
            yield i

    async def slow(i: int) -> int:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(rng.uniform(0, 0.02))
        inflight -= 1
        return i

    out = [r async for _, r in ordered(source(), slow, window=4)]
    assert out == list(range(40))
    assert peak == 4


async def test_stopping_early_cancels_calls_in_flight_and_closes_the_source() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        try:
            for i in range(100):
                yield i
        finally:
            closed.set()

    async def slow(i: int) -> int:
        await asyncio.sleep(0 if i == 0 else 10)
        return i

    gen = ordered(source(), slow, window=3)
    async for _, r in gen:
        assert r == 0
        break
    await gen.aclose()
    assert closed.is_set()
    assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left running
