from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from monitor.backoff import backoff_delay
from monitor.sources.base import Dropped, Sample, SourceError
from monitor.sources.capture import Latest
from monitor.sources.files import FileReader, MediaClock, file_samples
from monitor.sources.live import LiveSource
from monitor.sources.worker import CaptureSpec
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


CLOSE_DURING_DECODE = """
import sys, threading, time
from pathlib import Path
from monitor.sources.files import FileReader
reader = FileReader(Path(sys.argv[1]), 1000.0)  # one sample in 1000 s: next() decodes every frame
reader.open()
first = reader.next()
inside = threading.Event()
def read():
    inside.set()
    reader.next()
t = threading.Thread(target=read)
for _ in range(20):
    t = threading.Thread(target=read)
    t.start()
    inside.wait()
    time.sleep(0.01)
    reader.close()  # from another thread, while next() is inside grab()
    t.join()
    reader = FileReader(Path(sys.argv[1]), 1000.0)
    reader.open()
    reader.next()
    inside.clear()
reader.close()
print("survived")
"""


def test_closing_a_file_while_another_thread_decodes_it_does_not_crash(tmp_path: Path) -> None:
    import subprocess
    import sys

    import cv2
    import numpy as np

    clip = tmp_path / "big.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30, (3840, 2160))
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (2160, 3840, 3), dtype=np.uint8)
    for i in range(40):
        writer.write(np.roll(frame, i * 16, axis=1))
    writer.release()
    result = subprocess.run([sys.executable, "-c", CLOSE_DURING_DECODE, str(clip)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-500:])  # -11 was SIGSEGV
    assert "survived" in result.stdout


def test_a_camera_password_holding_at_and_hash_never_reaches_the_diagnosis() -> None:
    from monitor.sources.rtsp import diagnose
    from tests.conftest import free_port

    port = free_port()  # nothing listens there
    reason = diagnose(f"rtsp://u:p@ss#w/rd@127.0.0.1:{port}/stream", 1.0)
    assert f"127.0.0.1:{port}" in reason and "ss" not in reason.replace("address", ""), reason


def test_availability_holds_off_and_says_when_stream_down_falls_due() -> None:
    from monitor.sources.live import Availability

    a = Availability(holdoff=5.0)
    assert a.update(True, 0.0) is None and a.due() is None
    assert a.update(False, 10.0) is None and a.due() == 15.0
    assert a.update(False, 12.0) is None and a.due() == 15.0  # a new reason keeps the first time
    assert a.poll(14.999) is None  # a timer that fires a hair early changes nothing
    assert a.poll(15.0) == "stream_down" and a.due() is None
    assert a.poll(99.0) is None  # once
    assert a.update(True, 100.0) == "stream_up"
    assert a.update(False, 101.0) is None and a.update(True, 102.0) is None  # a blip: nothing


def test_frames_over_the_pixel_limit_are_refused_before_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.sources import files

    clip = make_clip(tmp_path / "c.mp4", seconds=1, size=(320, 240), fps=5)
    assert files.probe_video(clip, 320 * 240) is not None
    with pytest.raises(SourceError, match=r"its frames are 320x240, larger than the 0\.1 megapixels"):
        files.probe_video(clip, 320 * 239)
    monkeypatch.setattr(files, "MAX_PIXELS", 160 * 120)  # a recording named in the config
    reader = FileReader(clip, 1.0)
    with pytest.raises(SourceError, match=r"c\.mp4: its frames are 320x240"):
        reader.open()


def test_cameras_started_apart_sample_in_step() -> None:
    from monitor.sources.live import first_tick

    # Two cameras started 0.37 s apart, one a second: their samples fall in the same instant.
    a, b = first_tick(1000.21, 1.0), first_tick(1000.58, 1.0)
    assert a == b == 1001.0
    assert first_tick(1000.0, 1.0) == 1000.0  # on the grid already: no wait
    assert first_tick(7.3, 2.0) == 8.0 and first_tick(8.1, 2.0) == 10.0  # never before it starts


class JitteryCamera:
    """A keyframe every interval at the phase of the sampling ticks, every other one 20 ms
    late for its tick and the rest 20 ms early: arrival jitter where the phases meet."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.connected_at = time.monotonic()

    def latest(self) -> Latest | None:
        now = time.monotonic()  # the event loop's clock
        k = math.floor(now / self.interval + 0.5)  # the keyframe nearest now
        arrives = k * self.interval + (0.02 if k % 2 == 0 else -0.02)
        k = k if now >= arrives else k - 1
        return Latest(k, now, datetime.now(UTC), np.zeros((4, 4, 3), np.uint8))


async def test_a_keyframe_a_hair_late_for_its_tick_still_counts_for_it() -> None:
    spec = CaptureSpec("rtsp://cam/1", "jittery", 0.2, "keyframes", "tcp", 5.0, 5.0, None)
    source = LiveSource(spec, down_alert_after_s=5.0, on_change=lambda change: None)
    source.reader = JitteryCamera(0.2)  # type: ignore[assignment]
    stop = asyncio.Event()
    items: list[Sample | Dropped] = []
    async for item in source.samples(stop):
        items.append(item)
        if len(items) == 12:
            break
    # Every tick is judged with a frame of its own: none dropped as no_new_frame.
    assert all(isinstance(i, Sample) for i in items), items
