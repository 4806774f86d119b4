from __future__ import annotations

import cv2
import numpy as np
import pytest

from monitor.patches import image_tokens, target_size
from monitor.preprocess import clahe_luma, prepare, to_bgr
from monitor.scene import thumbnail
from monitor.sources.base import Yuv
from monitor.zones import View

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
    from monitor.scaling import resize

    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[::2] = 255  # a one-pixel stripe pattern aliases badly without a box filter
    out = resize(frame, 644, 364)
    assert out.shape == (364, 644, 3)
    assert 100 < out.mean() < 155 and out.std() < 30


def test_resize_of_odd_sides_halves_exactly_and_keeps_the_picture() -> None:
    from monitor.scaling import resize

    plane = np.zeros((91, 161), np.uint8)
    plane[:, 80:] = 200  # left dark, right bright: a halving that misplaced columns would smear it
    out = resize(plane, 40, 22)
    assert out.shape == (22, 40)
    assert out[:, :18].max() == 0 and out[:, 22:].min() == 200


def _scene() -> np.ndarray:
    """Coloured blocks on a dim background: colour and local contrast to check."""
    frame = np.full((364, 644, 3), 40, np.uint8)
    frame[40:160, 60:260] = (30, 30, 200)  # red
    frame[200:330, 300:600] = (200, 60, 30)  # blue
    frame[100:180, 400:480] = (60, 180, 60)  # green
    return frame


def _as_yuv(frame: np.ndarray) -> Yuv:
    """What a capture worker holds: JPEG-range YUV 4:2:0 (the decoder's yuvj420p)."""
    ycc = cv2.cvtColor(frame, cv2.COLOR_BGR2YCrCb)
    h, w = frame.shape[:2]
    y, cr, cb = cv2.split(ycc)
    u = cv2.resize(cb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    v = cv2.resize(cr, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return Yuv(np.concatenate([y, u.reshape(-1, w), v.reshape(-1, w)]))


def test_a_yuv_frame_is_prepared_as_its_bgr_twin_is() -> None:
    bgr = _scene()
    yuv = _as_yuv(bgr)
    assert np.abs(to_bgr(yuv).astype(int) - bgr).mean() < 3  # the same picture, either form
    for clahe in (False, True):
        a = prepare(bgr, max_pixels=644 * 364, clahe=clahe, thumb_width=160)
        b = prepare(yuv, max_pixels=644 * 364, clahe=clahe, thumb_width=160)
        assert (a.width, a.height) == (b.width, b.height) == (644, 364)
        da = cv2.imdecode(np.frombuffer(a.jpeg, np.uint8), cv2.IMREAD_COLOR).astype(int)
        db = cv2.imdecode(np.frombuffer(b.jpeg, np.uint8), cv2.IMREAD_COLOR).astype(int)
        assert np.abs(da - db).mean() < 4, clahe  # colours and contrast as on the BGR path
        assert np.argmax(db[100, 150]) == 2 and np.argmax(db[260, 450]) == 0  # red stays red
        assert a.thumb is not None and b.thumb is not None
        tb = cv2.imdecode(np.frombuffer(b.thumb, np.uint8), cv2.IMREAD_COLOR)
        assert tb.shape == (90, 160, 3)


def test_a_yuv_frame_is_resized_and_cropped_to_zones_too() -> None:
    yuv = _as_yuv(_scene())
    small = prepare(yuv, max_pixels=320 * 180, clahe=True)
    assert (small.width, small.height) == target_size(644, 364, 320 * 180)
    view = View((0.0, 0.0, 0.5, 0.5), (((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5)),))
    zoned = prepare(yuv, max_pixels=644 * 364, clahe=False, view=view)
    picture = cv2.imdecode(np.frombuffer(zoned.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert zoned.view == view and np.argmax(picture[picture.shape[0] // 2, picture.shape[1] // 2]) == 2


def test_the_scene_gate_sees_a_yuv_frame_as_its_bgr_twin() -> None:
    bgr = _scene()
    a, b = thumbnail(bgr), thumbnail(_as_yuv(bgr))
    assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() < 2
