"""The adaptive concurrency limit against a simulated server that queues past its capacity."""

from __future__ import annotations

import heapq

from monitor.limits import AimdLimit


def simulate(capacity: int, service: float, limit: AimdLimit, requests: int = 4000) -> tuple[list[float], float]:
    """A closed loop: the client keeps ``limit.limit`` requests in flight; the server serves
    ``capacity`` at once, each in ``service`` s, and queues the rest (as vLLM does).
    Returns each answer's latency and when the last came."""
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
        saturated = saturated or len(inflight) + 1 >= limit.limit  # as the client judges it
        now = done
        latencies.append(done - at)
        limit.update(done - at, saturated)
    return latencies, now


def test_it_settles_near_the_servers_capacity_with_latency_bounded() -> None:
    limit = AimdLimit(start=4)
    latencies, _ = simulate(capacity=12, service=0.3, limit=limit)
    late = sorted(latencies[-1000:])
    assert 10 <= limit.limit <= 18, limit.limit
    assert late[int(len(late) * 0.95)] <= 0.3 * 2, late[int(len(late) * 0.95)]


def test_a_fixed_limit_far_above_capacity_queues_and_one_far_below_wastes_the_server() -> None:
    high, _ = simulate(capacity=4, service=0.3, limit=AimdLimit(start=32, lowest=32, highest=32))
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


def test_it_doubles_until_the_first_sign_of_queueing_then_grows_by_one() -> None:
    limit = AimdLimit(start=4)
    for _ in range(4):
        limit.update(0.3, saturated=True)
    assert limit.limit == 8 and limit.slow_start
    for _ in range(8):
        limit.update(0.3, saturated=True)
    assert limit.limit == 16
    for _ in range(16):  # a round of queued answers: the first cut ends the doubling
        limit.update(0.6, saturated=True)
    assert limit.limit == 14 and not limit.slow_start
    for _ in range(14):
        limit.update(0.3, saturated=True)
    assert limit.limit == 15


def test_a_short_recording_reaches_the_servers_capacity_within_a_few_rounds() -> None:
    """24 samples (a 24 s recording) on a server that takes 6 at once: the seed's loop needs
    24 rounds; the limit must not spend the recording getting to 6."""
    _, seed = simulate(capacity=6, service=0.3, limit=AimdLimit(start=1, lowest=1, highest=1), requests=24)
    _, auto = simulate(capacity=6, service=0.3, limit=AimdLimit(), requests=24)
    # 24 / 6 = 4 rounds at the least; starting at 4 took 5 (4.8x)
    assert seed / auto >= 5.5, seed / auto
