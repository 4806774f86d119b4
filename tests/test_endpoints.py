"""Several model endpoints: routing by free capacity, one dying and coming back, a fallback."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from monitor.app import Daemon
from monitor.config import ConfigError, VlmConfig, parse_config
from monitor.metrics import Metrics
from monitor.preprocess import prepare
from monitor.vlm import VlmClient
from tests.clips import make_clip
from tests.conftest import Receiver, free_port
from tests.fakes.vllm import FakeVLM

RED = "a person wearing a red shirt"
SMALL = "Qwen/Qwen2.5-VL-3B-Instruct"


def config_error(vlm: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(yaml.safe_dump({"vlm": vlm, "streams": [{"name": "a", "url": "a.mp4",
                                                              "targets": ["x"]}]}), "c", {})
    return str(e.value)


def test_endpoint_config() -> None:
    one = {"name": "gpu0", "base_url": "http://gpu0:8000/v1"}
    assert "either base_url or endpoints" in config_error({"base_url": "http://x/v1", "endpoints": [one]})
    assert "unique" in config_error({"endpoints": [one, one]})
    assert "must not be a fallback" in config_error({"endpoints": [{**one, "fallback": True}]})
    assert "1 to 256, or auto" in config_error({"endpoints": [{**one, "max_concurrency": 0}]})
    cfg = VlmConfig.model_validate({"model": "M", "api_key": "k", "endpoints": [
        one, {"name": "small", "base_url": "http://cpu:8000/v1", "model": SMALL, "fallback": True,
              "max_concurrency": "auto"}]})
    gpu0, small = cfg.resolved_endpoints()
    assert (gpu0.model, gpu0.api_key and gpu0.api_key.get_secret_value()) == ("M", "k")
    assert small.model == SMALL and cfg.total_concurrency == 8  # fallbacks are not counted
    lone = VlmConfig(base_url="http://x:1/v1", max_concurrency=3).resolved_endpoints()
    assert [(e.name, e.max_concurrency) for e in lone] == [("default", 3)]


def jpeg() -> bytes:
    return prepare(np.full((360, 640, 3), 120, np.uint8), max_pixels=644 * 364).jpeg


async def test_requests_go_where_there_is_room_and_each_limit_holds() -> None:
    fast, slow = FakeVLM().start(), FakeVLM().start()
    fast.latency, slow.latency = 0.05, 0.4
    metrics = Metrics()
    client = VlmClient(VlmConfig.model_validate({"max_retries": 0, "endpoints": [
        {"name": "fast", "base_url": fast.base_url, "max_concurrency": 2},
        {"name": "slow", "base_url": slow.base_url, "max_concurrency": 4}]}), metrics)
    try:
        results = await asyncio.gather(*(client.analyze(jpeg(), [RED]) for _ in range(40)))
    finally:
        await client.close()
        fast.stop()
        slow.stop()
    assert fast.max_inflight <= 2 and slow.max_inflight <= 4
    # The fast one frees its slots sooner, so it takes more of the work; both take some.
    assert len(fast.requests) > len(slow.requests) > 0
    assert {r.endpoint for r in results} == {"fast", "slow"}
    assert metrics.registry.get_sample_value("vlm_monitor_endpoint_requests_total",
                                             {"endpoint": "fast", "outcome": "ok"}) == len(fast.requests)


async def run_file(vlm: dict[str, Any], clip: Path, receiver: Receiver,
                   during: Any = None) -> Metrics:
    state = tempfile.TemporaryDirectory()
    config = parse_config(yaml.safe_dump({
        "vlm": {"max_retries": 0, "timeout_seconds": 5, **vlm},
        "streams": [{"name": "f", "url": str(clip), "targets": [RED], "realtime": True}],
        "alerts": [{"type": "webhook", "url": receiver.url}], "clips": {"enabled": False},
        "scene_change": {"enabled": False},
        "server": {"listen": "127.0.0.1:0"}, "state_dir": state.name}), "t", {})
    metrics = Metrics()
    daemon = Daemon(config, metrics)
    task = asyncio.create_task(daemon.run(asyncio.Event()))
    await daemon.started.wait()
    if during is not None:
        await during(metrics)
    assert await asyncio.wait_for(task, 60) == 0
    state.cleanup()
    return metrics


async def test_an_endpoint_killed_mid_run_loses_no_frame_and_takes_its_share_again(
        tmp_path: Path, receiver: Receiver) -> None:
    clip = make_clip(tmp_path / "red.mp4", seconds=14, size=(640, 360), fps=10, red=(9, 14))
    a, b, small = FakeVLM().start(), FakeVLM().start(), FakeVLM(model=SMALL).start()
    a.latency = b.latency = 0.2
    restarted_at = 0.0

    async def kill_and_revive(metrics: Metrics) -> None:
        nonlocal restarted_at
        await asyncio.sleep(2.5)
        port = a.port
        await asyncio.to_thread(a.stop)
        await asyncio.sleep(3)
        await asyncio.to_thread(a.start, port)
        restarted_at = time.monotonic()

    try:
        metrics = await run_file({"endpoints": [
            {"name": "a", "base_url": a.base_url, "max_concurrency": 1},
            {"name": "b", "base_url": b.base_url, "max_concurrency": 1},
            {"name": "small", "base_url": small.base_url, "model": SMALL, "fallback": True}]},
            clip, receiver, kill_and_revive)
    finally:
        for fake in (a, b, small):
            fake.stop()
    # Every second of the recording was judged, though a died under it.
    assert metrics.registry.get_sample_value("vlm_monitor_frames_analysed_total", {"stream": "f"}) == 14
    assert [r.json()["first_seen_offset_seconds"] for r in receiver.received] == [9]
    assert receiver.received[0].json()["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert [r for r in a.requests if r.at > restarted_at], "the revived endpoint got no traffic"
    assert small.requests == []  # a primary was always up


async def test_the_fallback_judges_only_while_every_primary_is_down(
        tmp_path: Path, receiver: Receiver) -> None:
    clip = make_clip(tmp_path / "red.mp4", seconds=6, size=(640, 360), fps=10, red=(2, 6))
    small = FakeVLM(model=SMALL).start()
    try:
        await run_file({"endpoints": [
            {"name": "gpu0", "base_url": f"http://127.0.0.1:{free_port()}/v1"},
            {"name": "small", "base_url": small.base_url, "model": SMALL, "fallback": True}]},
            clip, receiver)
    finally:
        small.stop()
    assert len(small.requests) >= 6
    alert = receiver.received[0].json()
    assert alert["first_seen_offset_seconds"] == 2 and alert["model"] == SMALL
