"""The adaptive concurrency limit against a simulated server that queues past its capacity."""

from __future__ import annotations

import heapq

from monitor.limits import AimdLimit


def simulate(capacity: int, service: float, limit: AimdLimit, requests: int = 4000) -> list[float]:
    """A closed loop: the client keeps ``limit.limit`` requests in flight; the server serves
    ``capacity`` at once, each in ``service`` s, and queues the rest (as vLLM does)."""
    now, latencies = 0.0, []
    servers = [0.0] * capacity  # when each of the server's slots is next free
    inflight: list[tuple[float, float, bool]] = []  # (done at, sent at, saturated)
    sent = 0
    while sent < requests or inflight:
        while sent < requests and len(inflight) < limit.limit:
            saturated = len(inflight) + 1 >= limit.limit
            start = max(now, heapq.heappop(servers))
            heapq.heappush(servers, start + service)
            heapq.heappush(inflight, (start + service, now, saturated))
            sent += 1
        done, at, saturated = heapq.heappop(inflight)
        now = done
        latencies.append(done - at)
        limit.update(done - at, saturated)
    return latencies


def test_it_settles_near_the_servers_capacity_with_latency_bounded() -> None:
    limit = AimdLimit(start=4)
    latencies = simulate(capacity=12, service=0.3, limit=limit)
    late = sorted(latencies[-1000:])
    assert 10 <= limit.limit <= 18, limit.limit
    assert late[int(len(late) * 0.95)] <= 0.3 * 2, late[int(len(late) * 0.95)]


def test_a_fixed_limit_far_above_capacity_queues_and_one_far_below_wastes_the_server() -> None:
    high = simulate(capacity=4, service=0.3, limit=AimdLimit(start=32, lowest=32, highest=32))
    assert sorted(high)[int(len(high) * 0.95)] >= 0.3 * 7  # 32 in flight on 4 slots: 8 rounds queued
    adaptive = AimdLimit(start=32)
    simulate(capacity=4, service=0.3, limit=adaptive)
    assert adaptive.limit <= 6  # it came down to what the server takes


def test_one_slow_answer_does_not_collapse_the_limit() -> None:
    limit = AimdLimit(start=10)
    for _ in range(50):
        limit.update(0.3, saturated=True)
    before = limit.limit
    limit.update(3.0, saturated=True)
    limit.update(3.0, saturated=True)
    assert limit.limit >= int(before * 0.9)
