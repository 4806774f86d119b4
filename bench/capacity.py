"""How fast one model endpoint is used: fixed limits on requests in flight against the
adaptive one (max_concurrency: auto), and the seed's one-at-a-time loop, in one run.

    .venv/bin/python -m bench.capacity [--capacity 6] [--latency 0.3] [--requests 300]

The stand-in model server serves ``capacity`` requests at once, each in
``latency`` s, and queues the rest without limit, as vLLM does: past its
capacity, more in flight buys only latency. Each client sends the same
``requests`` (one 644x364 frame each) as fast as its limit lets it, as
``scan`` does with a recording.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import numpy as np

from monitor.config import VlmConfig
from monitor.metrics import Metrics
from monitor.preprocess import prepare
from monitor.vlm import VlmClient
from tests.fakes.vllm import FakeVLM

TARGET = "a person wearing a red shirt"


async def drive(fake: FakeVLM, limit: int | str, requests: int) -> tuple[float, float, float, int]:
    """(requests/s, p50 latency, p95 latency, the limit at the end)."""
    client = VlmClient(VlmConfig.model_validate({"max_retries": 0, "endpoints": [
        {"name": "gpu", "base_url": fake.base_url, "max_concurrency": limit}]}), Metrics())
    jpeg = prepare(np.full((364, 644, 3), 110, np.uint8), max_pixels=644 * 364).jpeg
    start = time.monotonic()
    results = await asyncio.gather(*(client.analyze(jpeg, [TARGET]) for _ in range(requests)))
    took = time.monotonic() - start
    final = client.endpoints[0].limit
    await client.close()
    latencies = sorted(r.latency for r in results)
    return (requests / took, statistics.median(latencies), latencies[int(0.95 * len(latencies))], final)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--capacity", type=int, default=6)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    fake = FakeVLM().start()
    fake.capacity, fake.latency = args.capacity, args.latency
    rows = []
    try:
        for label, limit in [("seed: one at a time", 1), ("fixed 4 (scan before)", 4),
                             ("fixed 8 (daemon default)", 8), ("fixed 32", 32), ("auto", "auto")]:
            rate, p50, p95, final = asyncio.run(drive(fake, limit, args.requests))
            rows.append((label, rate, p50, p95, final))
            print(label, round(rate, 2), round(p50, 3), round(p95, 3), final, flush=True)
    finally:
        fake.stop()
    ceiling = args.capacity / args.latency
    print(f"\nstand-in: {args.capacity} at once, {args.latency:g} s each (at most {ceiling:.1f} "
          f"requests/s), {args.requests} requests per client")
    print("| client | requests/s | of the server's ceiling | p50 latency | p95 latency | limit at the end |")
    print("|---|---|---|---|---|---|")
    for label, rate, p50, p95, final in rows:
        print(f"| {label} | {rate:.1f} | {rate / ceiling:.0%} | {p50:.2f} s | {p95:.2f} s | {final} |")
    seed = rows[0][1]
    print(f"auto is {rows[-1][1] / seed:.1f}x the seed's loop and {rows[-1][1] / rows[1][1]:.1f}x "
          "scan's old fixed 4")


if __name__ == "__main__":
    main()
