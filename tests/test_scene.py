from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from monitor.scene import SceneGate, thumbnail
from tests.clips import draw_figure, make_clip, scene
from tests.conftest import Receiver, cli
from tests.fakes.vllm import FakeVLM


def frame(figure_at: int | None = None, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    img = scene(1920, 1080)
    if figure_at is not None:
        draw_figure(img, figure_at, (110, 110, 110))  # grey: a change in shape, not in colour
    if noise:
        jitter = np.random.default_rng(seed).normal(0, noise, img.shape)
        img = np.clip(img + jitter, 0, 255).astype(np.uint8)
    return img


def test_sensor_noise_is_no_change_but_a_person_entering_is() -> None:
    gate = SceneGate()
    gate.analysed(thumbnail(frame()), 0.0)
    assert gate.unchanged(thumbnail(frame(noise=6, seed=1)), 1.0)
    assert gate.unchanged(thumbnail(frame(noise=6, seed=2)), 2.0)
    assert not gate.unchanged(thumbnail(frame(figure_at=1500)), 3.0)


def test_a_small_far_figure_is_a_change() -> None:
    small = scene(1920, 1080)
    small[500:600, 900:940] = (40, 40, 40)  # 40x100 px in 1080p: 0.2% of the frame
    gate = SceneGate()
    gate.analysed(thumbnail(frame()), 0.0)
    assert not gate.unchanged(thumbnail(small), 1.0)


def test_reuse_is_bounded_in_time_and_forgotten_after_a_failure() -> None:
    gate = SceneGate(max_reuse_seconds=10)
    thumb = thumbnail(frame())
    gate.analysed(thumb, 0.0)
    assert gate.unchanged(thumb, 10.0) and not gate.unchanged(thumb, 10.5)
    gate.forget()
    assert not gate.unchanged(thumb, 1.0)


def test_quiet_scene_costs_few_model_calls_and_misses_no_event(
        tmp_path: Path, fake_vlm: FakeVLM, receiver: Receiver) -> None:
    clip = make_clip(tmp_path / "quiet.mp4", seconds=90, size=(640, 360), fps=5,
                     red=[(20, 25), (70, 74)], passerby=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "vlm": {"base_url": fake_vlm.base_url},
        "streams": [{"name": "corridor", "url": str(clip), "targets": ["a person wearing a red shirt"]}],
        "alerts": [{"type": "webhook", "url": receiver.url}], "clips": {"enabled": False},
        "server": {"listen": "127.0.0.1:0"},
        "state_dir": str(tmp_path / "state"),
    }))
    result = cli("run", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert [r.json()["first_seen_offset_seconds"] for r in receiver.received] == [20, 70]
    # 90 samples; the model saw the frames where something changed and one per 30 s otherwise.
    assert len(fake_vlm.requests) <= 90 / 5
