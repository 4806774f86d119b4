from __future__ import annotations

import cv2
import numpy as np
import pytest

from monitor.patches import image_tokens, target_size
from monitor.preprocess import clahe_luma, prepare

BUDGET = 896 * 504


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1920, 1080), (896, 504)), ((1280, 720), (896, 504)), ((640, 360), (644, 364)),
     ((768, 576), (756, 588)), ((100, 50), (112, 56)), ((10, 10), (28, 28))],
)
def test_target_size_is_multiples_of_28_within_budget(size: tuple[int, int], expected: tuple[int, int]) -> None:
    w, h = target_size(*size, BUDGET)
    assert (w, h) == expected
    assert w % 28 == 0 and h % 28 == 0 and w * h <= BUDGET


def test_target_size_keeps_aspect_for_many_sizes() -> None:
    for width in range(160, 4000, 97):
        for height in (120, 480, 1080, 2160):
            w, h = target_size(width, height, BUDGET)
            assert w % 28 == 0 and h % 28 == 0 and w * h <= BUDGET
            assert abs(w / h - width / height) / (width / height) < 0.35


def test_image_tokens_match_qwen_for_known_sizes() -> None:
    # FACTS.md: 1920x1080 -> 2,691 (+2); 644x364 -> 299 (+2); 448x448 -> 256 (+2).
    assert image_tokens(*target_size(1920, 1080, 12_845_056)) == 2691 + 2
    assert image_tokens(644, 364) == 299 + 2
    assert image_tokens(448, 448) == 256 + 2


def test_clahe_raises_local_contrast_and_keeps_colour() -> None:
    rng = np.random.default_rng(0)
    dull = (110 + rng.integers(0, 12, (360, 640, 1))).astype(np.uint8).repeat(3, axis=2)
    dull[100:200, 100:200] = (40, 40, 150)  # a dull red patch
    out = clahe_luma(dull)
    assert out.shape == dull.shape and out.dtype == np.uint8
    assert out[:, 300:].std() > dull[:, 300:].std() * 1.5
    b, g, r = out[150, 150].astype(int)
    assert r > g + 40 and r > b + 40


def test_prepare_gives_a_decodable_jpeg_at_the_target_size() -> None:
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[:, :960] = (0, 0, 255)
    p = prepare(frame, max_pixels=BUDGET)
    assert (p.width, p.height) == (896, 504)
    assert p.image_tokens == 578
    decoded = cv2.imdecode(np.frombuffer(p.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (504, 896, 3)
    # Left half red, right half black: the image was not flipped or channel-swapped.
    assert decoded[250, 100, 2] > 200 and decoded[250, 100, 0] < 60
    assert decoded[250, 800].max() < 60


def test_prepare_rejects_non_bgr_frames() -> None:
    with pytest.raises(ValueError, match="BGR"):
        prepare(np.zeros((10, 10), np.uint8), max_pixels=BUDGET)


def test_default_budget_is_about_300_tokens_for_common_camera_sizes() -> None:
    from monitor.config import DEFAULT_MAX_PIXELS

    for size in [(1920, 1080), (1280, 720), (2560, 1440), (3840, 2160)]:
        assert target_size(*size, DEFAULT_MAX_PIXELS) == (644, 364)
    assert image_tokens(644, 364) * 8 < image_tokens(*target_size(1920, 1080, 12_845_056))


def test_resize_halves_then_interpolates_to_the_exact_size() -> None:
    from monitor.preprocess import resize

    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[::2] = 255  # a one-pixel stripe pattern aliases badly without a box filter
    out = resize(frame, 644, 364)
    assert out.shape == (364, 644, 3)
    assert 100 < out.mean() < 155 and out.std() < 30
