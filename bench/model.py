"""Spending the model well: tokens per sample, calls on a quiet scene, and 3x overload.

    .venv/bin/python -m bench.model [--seconds 60]

The stand-in model server (tests/fakes/vllm.py) answers after 300 ± 100 ms and
serves at most 2 requests at once (its "GPU"), so it serves ~6.7 requests a
second; vLLM, like it, queues the rest without limit. Each part prints the
seed's way of doing the same work beside ours, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

import monitor.sources.live
from monitor import logs
from monitor.app import Daemon
from monitor.config import PreprocessConfig, VlmConfig, parse_config
from monitor.metrics import Metrics
from monitor.patches import image_tokens, target_size
from monitor.preprocess import prepare
from monitor.sources.capture import Latest
from monitor.vlm import VlmClient
from tests.clips import draw_figure, make_clip, scene
from tests.conftest import Receiver
from tests.fakes.vllm import FakeVLM

RED = "a person wearing a red shirt"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def tokens(fake: FakeVLM) -> tuple[int, int]:
    """Prompt tokens the server reports for one 1080p sample: the seed's full frame vs ours."""
    frame = scene(1920, 1080)
    draw_figure(frame, 1000)
    client = VlmClient(VlmConfig(base_url=fake.base_url), Metrics())
    _, full = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 100])
    seed = await client.analyze(full.tobytes(), [RED])
    ours = await client.analyze(prepare(frame, max_pixels=644 * 364).jpeg, [RED])
    await client.close()
    return seed.prompt_tokens, ours.prompt_tokens


def quiet_scene(fake: FakeVLM, tmp: Path) -> tuple[int, int, list[float]]:
    """A 20-minute quiet corridor with three short visits: samples, model calls, alert offsets."""
    clip = make_clip(tmp / "quiet.mp4", seconds=1200, size=(480, 270), fps=2,
                     red=[(100, 106), (555, 560), (1010, 1018)], passerby=False)
    receiver = Receiver().start()
    config = parse_config(yaml.safe_dump({
        "vlm": {"base_url": fake.base_url},
        "streams": [{"name": "corridor", "url": str(clip), "targets": [RED]}],
        "alerts": [{"type": "webhook", "url": receiver.url}],
        "server": {"listen": "127.0.0.1:0"},
        "state_dir": str(tmp / "quiet-state"),
    }), "bench")
    metrics = Metrics()
    before = len(fake.requests)

    async def run() -> int:
        return await Daemon(config, metrics).run(asyncio.Event())

    assert asyncio.run(run()) == 0
    receiver.stop()
    samples = int(metrics.registry.get_sample_value("vlm_monitor_frames_sampled_total",
                                                    {"stream": "corridor"}) or 0)
    offsets = [r.json()["first_seen_offset_seconds"] for r in receiver.received]
    return samples, len(fake.requests) - before, offsets


class SyntheticCamera:
    """Stands in for LiveReader: a camera whose newest frame is always fresh (1 s per frame)."""

    def __init__(self, url: str, name: str, **_: Any) -> None:
        self.connected_at: float | None = time.monotonic()
        self._frame = np.full((360, 640, 3), 100, np.uint8)
        self._lock = threading.Lock()

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def join(self, timeout: float) -> None: ...

    def latest(self) -> Latest:
        now = time.monotonic()
        return Latest(int(now * 25), now, datetime.now(UTC), self._frame)


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1] if len(values) > 1 else 0.0


async def seed_overload(fake: FakeVLM, cameras: int, seconds: float) -> tuple[list[int], list[float], float]:
    """The seed's way: each camera analysed one frame after another from its own unbounded
    buffer (a frame a second arrives, none is dropped), with no bound on requests."""
    client = VlmClient(VlmConfig(base_url=fake.base_url, max_concurrency=256), Metrics())
    jpeg = prepare(np.full((360, 640, 3), 100, np.uint8), max_pixels=644 * 364).jpeg
    start = time.monotonic()
    done = [0] * cameras
    ages: list[float] = []
    backlog_peak = [0]

    async def camera(i: int) -> None:
        buffer: deque[float] = deque()
        produced = 0
        while (now := time.monotonic()) - start < seconds:
            while produced <= now - start:  # one frame per second joins the buffer
                buffer.append(start + produced)
                produced += 1
            backlog_peak[0] = max(backlog_peak[0], len(buffer))
            if not buffer:
                await asyncio.sleep(start + produced - now)
                continue
            taken = buffer.popleft()
            await client.analyze(jpeg, [RED])
            ages.append(time.monotonic() - taken)
            done[i] += 1

    await asyncio.gather(*(camera(i) for i in range(cameras)))
    await client.close()
    return done, ages, backlog_peak[0]


def overload(fake: FakeVLM, cameras: int, seconds: float, tmp: Path) -> tuple[list[int], float, float, float]:
    """Ours: the daemon with live streams; returns analysed samples per camera, p95 frame age,
    RSS at a third of the run and at its end."""
    monitor.sources.live.LiveReader = SyntheticCamera  # type: ignore[misc,assignment]
    config = parse_config(yaml.safe_dump({
        "vlm": {"base_url": fake.base_url, "max_concurrency": 4},
        "streams": [{"name": f"cam{i:02d}", "url": f"rtsp://127.0.0.1/cam{i}", "targets": [RED]}
                    for i in range(cameras)],
        "scene_change": {"enabled": False},  # every sample asks the model: the worst case
        "alerts": [{"type": "log"}],
        "server": {"listen": "127.0.0.1:0"},
        "state_dir": str(tmp / "overload-state"),
    }), "bench")
    metrics = Metrics()
    rss: list[float] = []

    async def run() -> None:
        shutdown = asyncio.Event()
        daemon = Daemon(config, metrics)
        task = asyncio.create_task(daemon.run(shutdown))
        await asyncio.sleep(seconds / 3)
        rss.append(rss_mib())
        await asyncio.sleep(seconds * 2 / 3)
        rss.append(rss_mib())
        shutdown.set()
        await task

    asyncio.run(run())
    def value(name: str, **labels: str) -> int:
        return int(metrics.registry.get_sample_value(f"vlm_monitor_{name}", labels) or 0)

    done = [value("frames_sampled_total", stream=s)
            - value("frames_dropped_total", stream=s, reason="model_unavailable")
            - value("frames_dropped_total", stream=s, reason="model_error")
            for s in (f"cam{i:02d}" for i in range(cameras))]
    # p95 frame age from the histogram, interpolated inside its bucket as Prometheus does.
    buckets = [(float(s.labels["le"]), s.value) for m in metrics.registry.collect()
               if m.name == "vlm_monitor_frame_age_seconds" for s in m.samples if s.name.endswith("_bucket")]
    by_le: dict[float, float] = {}
    for le, v in buckets:
        by_le[le] = by_le.get(le, 0) + v
    total = by_le[float("inf")]
    lower, below = 0.0, 0.0
    p95 = float("inf")
    for le in sorted(by_le):
        if by_le[le] >= 0.95 * total:
            p95 = lower + (le - lower) * (0.95 * total - below) / max(1.0, by_le[le] - below)
            break
        lower, below = le, by_le[le]
    return done, p95, rss[0], rss[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each overload run")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    logs.configure("error", "console")
    fake = FakeVLM().start()
    fake.latency, fake.jitter, fake.capacity = 0.3, 0.1, 2
    capacity = fake.capacity / fake.latency
    cameras = round(3 * capacity)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        seed_tokens, our_tokens = asyncio.run(tokens(fake))
        seed_image = image_tokens(*target_size(1920, 1080, 12_845_056))
        our_image = image_tokens(*target_size(1920, 1080, PreprocessConfig().max_pixels))
        print("1. tokens per 1080p sample")
        print(f"   image tokens (Qwen2.5-VL's rule): seed {seed_image:,}   vlm-monitor {our_image:,}   "
              f"{seed_image / our_image:.1f}x fewer")
        print(f"   whole prompt, as the stand-in server counts it: seed {seed_tokens:,}   "
              f"vlm-monitor {our_tokens:,}   {seed_tokens / our_tokens:.1f}x fewer\n")

        samples, calls, offsets = quiet_scene(fake, tmp)
        per_hour = calls / (samples / 3600)
        print("2. quiet corridor, 20 min of video at 1 sample/s, visits at 100 s, 555 s, 1010 s")
        print(f"   seed {samples} calls ({3600:,}/camera-hour)   vlm-monitor {calls} calls "
              f"({per_hour:,.0f}/camera-hour)   {samples / calls:.1f}x fewer")
        print(f"   alerts at {offsets} s (ground truth [100, 555, 1010])\n")

        print(f"3. {cameras} cameras at 1 sample/s against a server that serves ~{capacity:.1f} requests/s "
              f"(3x overload), {args.seconds:g} s")
        seed_done, seed_ages, backlog = asyncio.run(seed_overload(fake, cameras, args.seconds))
        done, p95, rss_early, rss_late = overload(fake, cameras, args.seconds, tmp)
        print(f"   {'':34}{'seed':>12}{'vlm-monitor':>14}")
        print(f"   {'samples analysed, fewest/most':34}{min(seed_done) / max(seed_done):>12.2f}"
              f"{min(done) / max(done):>14.2f}")
        print(f"   {'samples analysed, total':34}{sum(seed_done):>12}{sum(done):>14}")
        print(f"   {'p95 frame age (s)':34}{quantile(seed_ages, 0.95):>12.1f}{p95:>14.1f}")
        print(f"   {'frames waiting, most per camera':34}{backlog:>12}{'0':>14}")
        print(f"   memory (RSS) at 1/3 and end of our run: {rss_early:.0f} MiB -> {rss_late:.0f} MiB")
    fake.stop()


if __name__ == "__main__":
    main()
