from __future__ import annotations

from pathlib import Path

import pytest

from monitor.backoff import backoff_delay
from monitor.sources.base import SourceError
from monitor.sources.files import FileReader, MediaClock, file_samples
from monitor.urls import file_path, is_live
from tests.clips import make_clip


def test_media_clock_samples_once_per_interval() -> None:
    clock = MediaClock(1.0)
    times = [i / 25 for i in range(25 * 5)]
    assert [t for t in times if clock.due(t)] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_media_clock_tolerates_millisecond_timestamps_and_gaps() -> None:
    clock = MediaClock(1.0)
    picked = [t for t in (0.0, 0.333, 0.667, 0.9995, 1.333, 5.2, 5.5, 6.01) if clock.due(t)]
    assert picked == [0.0, 0.9995, 5.2, 6.01]  # one sample for the 1..5 s gap, not a burst


def test_media_clock_other_intervals() -> None:
    clock = MediaClock(2.5)
    assert [t / 10 for t in range(100) if clock.due(t / 10)] == [0.0, 2.5, 5.0, 7.5]


def test_urls() -> None:
    assert is_live("rtsp://cam/stream") and is_live("https://cam/mjpeg")
    assert not is_live("/videos/a.mp4") and not is_live("file:///videos/a.mp4")
    assert file_path("file:///videos/a%20b.mp4") == Path("/videos/a b.mp4")


def test_backoff_is_capped_exponential_with_jitter() -> None:
    assert backoff_delay(0, 1, 30, rng=lambda: 0.0) == 0.5
    assert backoff_delay(3, 1, 30, rng=lambda: 1.0) == 8.0
    assert backoff_delay(50, 1, 30, rng=lambda: 1.0) == 30.0
    assert backoff_delay(50, 1, 30, rng=lambda: 0.0) == 15.0


def test_file_reader_samples_by_media_time(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", seconds=4.5, size=(320, 240), fps=12)
    reader = FileReader(clip, 1.0)
    reader.open()
    offsets = []
    while (item := reader.next()) is not None:
        offset, frame = item
        assert frame.shape == (240, 320, 3)
        offsets.append(offset)
    reader.close()
    assert offsets == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert reader.frames == 54


async def test_file_samples_number_and_stamp_samples(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", seconds=3, size=(160, 120), fps=10)
    samples = [s async for s in file_samples(f"file://{clip}", 0.5)]
    assert [s.index for s in samples] == list(range(6))
    assert [s.offset for s in samples] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_missing_and_corrupt_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        FileReader(tmp_path / "nope.mp4", 1.0).open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01garbage" * 500)
    with pytest.raises(SourceError, match="corrupt or unsupported"):
        reader = FileReader(junk, 1.0)
        reader.open()
        reader.next()
    with pytest.raises(SourceError, match="not a regular file"):
        FileReader(tmp_path, 1.0).open()
