"""Capture in worker processes, and the daemon under a CPU shortage (issue 20).

The slot, the lag and the overload rules are pure and tested as such; the
workers against the real GStreamer RTSP server; the "late, not down" rule
against the stand-in model with the event loop really stalled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from monitor.load import LoopLag, Overload, runqueue_wait_s
from monitor.metrics import Metrics
from monitor.modelwatch import ModelWatch
from monitor.preprocess import to_bgr
from monitor.sources.base import Yuv
from monitor.sources.capture import Lag
from monitor.sources.live import LiveSource
from monitor.sources.pool import CapturePool, worker_count
from monitor.sources.slot import FIELDS, FrameSlot, capacity, memory
from monitor.sources.worker import CaptureSpec
from monitor.vlm import Late, Unavailable
from tests.conftest import ROOT, free_port
from tests.fakes.vllm import FakeVLM
from tests.rtsp import RtspServer
from tests.test_live import daemon, live, until, value
from tests.test_vlm import client_for, jpeg, sample

RED = "a person wearing a red shirt"


# --- pure parts -------------------------------------------------------------------------------

def test_a_slot_hands_over_whole_frames_and_copies_each_once() -> None:
    fd, buffer = memory(capacity(64 * 48), "t")
    try:
        writer, reader = FrameSlot(buffer), FrameSlot(buffer)
        assert reader.read() is None  # nothing written yet
        frame = Yuv(np.random.default_rng(1).integers(0, 255, (72, 64), np.uint8))  # 64x48, 4:2:0
        assert writer.write(frame, 12.5, 1_700_000_000.0, 10.0, 0.25, 4096)
        got = reader.read()
        assert got is not None and got.taken == 12.5 and got.wall == 1_700_000_000.0
        assert (got.frame.width, got.frame.height) == (64, 48)
        assert np.array_equal(got.frame.data, frame.data)
        assert reader.read() is got  # unchanged: not copied again
        assert reader.header()[3:6] == (10.0, 0.25, 4096)
        frame.data[:] = 7
        assert writer.write(frame, 13.5, 1_700_000_001.0, 10.0, 0.0, 8192)
        newer = reader.read()
        assert newer is not None and newer.seq > got.seq and int(newer.frame.data.max()) == 7
        assert not np.array_equal(got.frame.data, newer.frame.data)  # the first copy is the reader's own
        # A frame larger than the slot is refused, and the last one stays.
        assert not writer.write(Yuv(np.zeros((150, 100), np.uint8)), 14.0, 0.0, 10.0, 0.0, 0)
        assert reader.read() is newer
    finally:
        buffer.close()
        os.close(fd)


def test_a_torn_read_is_never_handed_on() -> None:
    fd, buffer = memory(capacity(32 * 32), "t")
    try:
        slot = FrameSlot(buffer)
        slot.write(Yuv(np.full((48, 32), 1, np.uint8)), 1.0, 0.0, 1.0, 0.0, 0)
        first = slot.read()
        # A writer caught in the middle of its write: the sequence number is odd.
        seq = slot.header()[0]
        buffer[0:8] = (seq + 1).to_bytes(8, "little")
        assert slot.read() is first  # the last whole frame, not the half-written one
        # A header whose sizes cannot be (0 px, or more than the slot holds) is never taken.
        for i, (width, height) in enumerate(((0, 0), (32, 0), (4096, 4096))):
            FIELDS.pack_into(buffer, 8, 2.0, 0.0, 1.0, 0.0, 0, width, height)
            buffer[0:8] = (seq + 2 * (i + 1)).to_bytes(8, "little")  # even: whole, were it not for its sizes
            assert slot.read() is first
    finally:
        buffer.close()
        os.close(fd)


# A capture worker's side of a slot: frames of two sizes, each of its own value, written
# as fast as Python can, as a worker would at a hundred cameras' worth of keyframes.
RACING_WRITER = """
import mmap, sys, time
import numpy as np
from monitor.sources.base import Yuv
from monitor.sources.slot import FrameSlot
slot = FrameSlot(mmap.mmap(int(sys.argv[1]), int(sys.argv[2])))
frames = [Yuv(np.full((48, 32), 1, np.uint8)), Yuv(np.full((24, 16), 2, np.uint8))]
print("ready", flush=True)
end, i = time.monotonic() + float(sys.argv[3]), 0
while time.monotonic() < end:
    slot.write(frames[i % 2], 1.0, 0.0, 1.0, 0.0, i)
    i += 1
"""


def test_a_reader_racing_a_writer_in_another_process_gets_only_whole_frames() -> None:
    """The header's own write must not be seen half done: ``struct.pack_into`` zeroes its
    bytes first, and a reader once took a frame 0 px wide from it (a stream crashed)."""
    fd, buffer = memory(capacity(32 * 32), "t")
    writer = subprocess.Popen([sys.executable, "-c", RACING_WRITER, str(fd), str(len(buffer)), "5"],
                              pass_fds=[fd], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        reader, seen, frames = FrameSlot(buffer), set(), 0
        end = time.monotonic() + 1.5
        while time.monotonic() < end and writer.poll() is None:
            got = reader.read()
            if got is None:
                continue
            frames += 1
            f = got.frame
            assert (f.width, f.height, int(f.data.min()), int(f.data.max())) in {(32, 32, 1, 1),
                                                                                 (16, 16, 2, 2)}
            seen.add(f.width)
        assert seen == {32, 16} and frames > 1000
    finally:
        writer.kill()
        writer.wait()
        buffer.close()
        os.close(fd)


def test_capture_lag_is_how_far_arrival_falls_behind_media_time() -> None:
    lag = Lag()
    lag.packet(100.0, 0.0)  # the first packet: the reference
    lag.packet(101.0, 1.0)
    assert lag.seconds == 0.0
    lag.packet(101.2, 2.0)  # came early (a burst): a better reference, still no lag
    assert lag.seconds == 0.0
    lag.packet(105.2, 3.0)  # 3 s of media took 4 s to read from the reference
    assert lag.seconds == pytest.approx(3.0)
    lag.restart()
    lag.packet(200.0, 0.0)
    assert lag.seconds == 0.0


def test_worker_count() -> None:
    assert worker_count("auto", 0, cpus=2) == 0  # recordings only: no workers
    assert worker_count("auto", 1, cpus=2) == 1
    assert worker_count("auto", 50, cpus=2) == 1
    assert worker_count("auto", 51, cpus=2) == 2
    assert worker_count("auto", 100, cpus=2) == 2
    assert worker_count("auto", 200, cpus=2) == 4
    assert worker_count("auto", 1000, cpus=2) == 4  # at most two per core
    assert worker_count(0, 100, cpus=2) == 0
    assert worker_count(3, 10, cpus=2) == 3


def test_overload_is_one_line_into_it_and_one_out() -> None:
    metrics = Metrics()
    o = Overload(metrics)
    assert o.check(0.0, 0.0) is None
    o.behind("a", 1.0)
    o.behind("b", 1.5)
    assert o.check(2.0, 0.0) == "overloaded"
    assert metrics.registry.get_sample_value("vlm_monitor_cameras_behind") == 2
    o.behind("a", 3.0)
    assert o.check(4.0, 0.0) is None  # still overloaded: no new line
    assert o.check(12.0, 0.0) is None  # b forgotten (10 s), a still behind
    assert o.count == 1
    assert o.check(14.0, 0.0) == "recovered"
    assert o.check(15.0, 2.0) == "overloaded"  # a loop seconds late is overload by itself


def test_a_loop_stall_during_a_wait_makes_the_timeout_ours() -> None:
    lag = LoopLag()
    now = time.monotonic()
    lag.record(now - 50, 3.0)  # long before: irrelevant
    lag.record(now - 5, 0.01)
    assert not lag.late_during(now - 10, timeout=30)
    lag.record(now - 1, 2.0)  # a 2 s stall, measured after the wait began
    assert lag.late_during(now - 10, timeout=30)
    assert not lag.late_during(now - 0.5, timeout=30)  # a wait that began after it


def test_the_loop_counts_the_time_it_waited_for_a_cpu() -> None:
    """The loop's thread and a busy process share one core: the loop, busy too, is ready to
    run about half the time it does not run, and says so (the kernel's count, not a guess)."""
    assert runqueue_wait_s("812345 2500000000 7\n") == 2.5
    metrics = Metrics()
    lag = LoopLag(metrics)
    cpus = os.sched_getaffinity(0)
    cpu = min(cpus)

    async def busy(seconds: float) -> float:
        """The loop busy for ``seconds``, giving the ticks their turn; its wait, as counted."""
        ticking = asyncio.create_task(lag.run())
        await asyncio.sleep(0.3)  # a tick or so first: the count starts from there
        before = sample(metrics, "vlm_monitor_event_loop_cpu_wait_seconds_total")
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            sum(range(20_000))
            await asyncio.sleep(0)
        await asyncio.sleep(0.3)  # the last tick
        ticking.cancel()
        await asyncio.gather(ticking, return_exceptions=True)
        waited = sample(metrics, "vlm_monitor_event_loop_cpu_wait_seconds_total") - before
        assert lag.cpu_wait_since(began) == pytest.approx(waited, abs=0.3)
        return waited

    with subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{cpu}}})\n"
                           "print(flush=True)\nwhile True: pass"], stdout=subprocess.PIPE) as hog:
        try:
            assert hog.stdout is not None and hog.stdout.readline()  # pinned and spinning
            os.sched_setaffinity(0, {cpu})  # this thread only: the loop's
            waited = asyncio.run(busy(1.5))
        finally:
            os.sched_setaffinity(0, cpus)
            hog.kill()
    assert 0.3 < waited < 1.5, waited


# --- a stalled loop does not count a live model server down ------------------------------------

async def test_a_starved_loop_does_not_mark_a_live_model_server_down(fake_vlm: FakeVLM) -> None:
    """The answer comes in 0.3 s, but the loop cannot read it for 2 s: the 1 s timeout runs
    out. That is the daemon's lateness (``late``), not a server timeout; the watch keeps the
    server up. Without the loop's lag to go by, the same stall reads as a dead server."""
    fake_vlm.latency = 0.3

    async def stalled_request(lagging: bool) -> tuple[BaseException | None, Metrics, bool]:
        client, metrics = client_for(fake_vlm, timeout_seconds=1)
        lag = LoopLag(metrics)
        if lagging:
            client.loop_lag = lag
        watch = ModelWatch(client)
        ticking = asyncio.create_task(lag.run())
        probing = asyncio.create_task(watch.run())
        await asyncio.wait_for(watch.ready.wait(), 10)
        request = asyncio.create_task(client.analyze(jpeg(True), [RED]))
        await until(lambda: fake_vlm.inflight > 0, 5, "the request to reach the server")
        time.sleep(2.0)  # noqa: ASYNC251 - the point: the loop stalls, as under a GIL-hogging crowd
        error: BaseException | None = None
        try:
            await request
        except Exception as e:
            error = e
            if isinstance(e, Unavailable):
                watch.note(e)
        healthy = watch.ready.is_set()
        ticking.cancel()
        probing.cancel()
        await asyncio.gather(ticking, probing, return_exceptions=True)
        await client.close()
        return error, metrics, healthy

    error, metrics, healthy = await stalled_request(lagging=True)
    assert isinstance(error, Late), error
    assert healthy
    assert sample(metrics, "vlm_monitor_vlm_requests_total", {"outcome": "late"}) == 1
    assert sample(metrics, "vlm_monitor_vlm_requests_total", {"outcome": "timeout"}) == 0
    assert sample(metrics, "vlm_monitor_event_loop_lag_seconds_count") >= 1
    assert (metrics.registry.get_sample_value("vlm_monitor_event_loop_lag_seconds_bucket",
                                              {"le": "1.0"}) or 0) < sample(
        metrics, "vlm_monitor_event_loop_lag_seconds_count")  # the stall is in the histogram

    error, metrics, healthy = await stalled_request(lagging=False)
    assert isinstance(error, Unavailable) and error.outcome == "timeout"
    assert not healthy


# --- capture workers against a real RTSP server ------------------------------------------------

@pytest.fixture
def rtsp() -> Iterator[RtspServer]:
    server = RtspServer(free_port()).start()
    server.prime()
    yield server
    server.kill()


class Reports:
    """What a reader reported, from whatever thread, awaited without sleeping."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self._changed = threading.Condition()

    def __call__(self, kind: str, detail: str) -> None:
        with self._changed:
            self.seen.append((kind, detail))
            self._changed.notify_all()

    def wait(self, kind: str, after: int = 0, within: float = 30) -> tuple[int, str]:
        with self._changed:
            ok = self._changed.wait_for(
                lambda: any(k == kind for k, _ in self.seen[after:]), within)
            assert ok, f"no {kind!r} within {within} s; seen {self.seen}"
            i = next(i for i, (k, _) in enumerate(self.seen) if i >= after and k == kind)
            return i, self.seen[i][1]


def test_a_worker_captures_and_a_dead_worker_is_restarted(rtsp: RtspServer) -> None:
    pool = CapturePool(1).start()
    reports = Reports()
    source = LiveSource(CaptureSpec(rtsp.url(), "cam", 1.0, "keyframes", "tcp", 5, 5, 644 * 364),
                        down_alert_after_s=1, on_change=lambda change: None, capture=pool)
    reader: Any = source.reader
    reader.report = reports
    try:
        reader.start()
        up, _ = reports.wait("up")
        latest = reader.latest()
        frame = latest.frame if latest is not None else None
        assert isinstance(frame, Yuv) and (frame.width, frame.height) == (644, 364)  # scaled in the worker
        # The test server's grey picture, whole: no torn or blank frame, colours as sent.
        assert np.abs(to_bgr(frame).astype(int) - 0x7A).max() < 8 and latest.lag < 1.0
        assert reader.received > 0 and reader.connected_at is not None
        worker = pool.workers[0]
        assert worker.proc is not None
        # Every thread of the worker, the camera's included, yields to the daemon's loop on wakeup.
        threads = [int(t) for t in os.listdir(f"/proc/{worker.proc.pid}/task")]
        assert len(threads) >= 2 and {os.sched_getscheduler(t) for t in threads} == {os.SCHED_BATCH}
        os.kill(worker.proc.pid, signal.SIGKILL)  # a decoder crash, as the kernel sees it
        down, why = reports.wait("down", up + 1)
        assert why == "capture worker died (killed by SIGKILL)"
        reports.wait("up", down + 1)
        assert worker.proc.poll() is None
        seq = latest.seq
        deadline = time.monotonic() + 10
        while (newer := reader.latest()) is None or newer.seq == seq:
            assert time.monotonic() < deadline, "no new frame after the restart"
            time.sleep(0.1)
        reader.stop()
        reader.join(10)
        assert reader.closed.is_set()
    finally:
        pool.close()
    assert all(w.proc is not None and w.proc.poll() is not None for w in pool.workers)


async def test_the_daemon_captures_in_workers_and_reports_their_death(
        rtsp: RtspServer, fake_vlm: FakeVLM, receiver: Any) -> None:
    async with daemon(fake_vlm, receiver, [live(rtsp.url(), "a"), live(rtsp.url(), "b")],
                      {"capture": {"workers": 2}}) as metrics:
        await until(lambda: value(metrics, "stream_up", stream="a") == 1
                    and value(metrics, "stream_up", stream="b") == 1, 20, "both cameras up")
        assert value(metrics, "capture_workers") == 2
        await until(lambda: value(metrics, "frames_sampled_total", stream="a") >= 2, 20, "samples")
        assert value(metrics, "capture_received_bytes_total", stream="a") > 1000
        workers = [p for p in _children() if b"monitor.sources.worker" in _cmdline(p)]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        await until(lambda: value(metrics, "capture_worker_restarts_total") == 1, 20, "a restart")
        await until(lambda: value(metrics, "stream_up", stream="a") == 1
                    and value(metrics, "stream_up", stream="b") == 1, 20, "both cameras up again")
        assert value(metrics, "stream_reconnects_total", stream="a") + value(
            metrics, "stream_reconnects_total", stream="b") >= 1
        assert value(metrics, "capture_workers") == 2
    assert not [p for p in _children() if b"monitor.sources.worker" in _cmdline(p)]  # none outlive it


def _children() -> list[int]:
    me = str(os.getpid())
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[1].split()[1].decode() == me:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
