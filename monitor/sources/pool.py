"""Capture workers: a few processes, each receiving and decoding a group of cameras.

Why processes: a camera at a real bitrate sends 25-100 packets a second, and
each is demuxed and freed under the GIL. With a hundred capture threads in the
daemon's own process, the event loop waited its turn behind them, model
requests timed out on the client's side and samples went stale (issue 20).
Here the daemon holds, per camera, only a ``RemoteReader``: the same face as a
``LiveReader`` (start, stop, join, latest), backed by a shared-memory slot the
worker writes and a socket the worker reports on.

A worker that dies (a decoder crash on a hostile stream) takes only its group
down: its cameras report down with the reason, the worker is started again
with backoff, and its cameras reconnect and report up like any others.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.reduction import send_handle
from typing import Any

from monitor.backoff import backoff_delay
from monitor.metrics import Metrics
from monitor.sources.capture import Latest, Tell
from monitor.sources.clips import ClipDone, ClipOrder
from monitor.sources.slot import FrameSlot, memory
from monitor.sources.worker import CaptureSpec

CAMERAS_PER_WORKER = 50


def worker_count(setting: int | str, cameras: int, cpus: int | None = None) -> int:
    """How many capture workers to start. Pure.

    ``auto``: one per 50 cameras, at most two per core. Measured here with 100
    sub-stream cameras (640x360, 512 kbit/s), two runs each: two workers 0.53
    and 0.45 CPU-s per camera-minute, 6.9 MB per camera; four workers 0.55 and
    0.46, 7.4 MB (each worker's interpreter and libraries cost ~35 MB).
    """
    if setting != "auto":
        return int(setting)
    if cameras == 0:
        return 0
    return max(1, min(math.ceil(cameras / CAMERAS_PER_WORKER), 2 * (cpus or os.cpu_count() or 1)))


class RemoteReader:
    """One camera captured by a worker: what ``LiveSource`` needs of a reader."""

    def __init__(self, pool: CapturePool, ident: int, spec: CaptureSpec, report: Tell) -> None:
        self.pool = pool
        self.ident = ident
        self.spec = spec
        self.report = report
        self.fd, self._buffer = memory(spec.size, spec.name)
        self.slot = FrameSlot(self._buffer)
        self.closed = threading.Event()
        self.worker: Worker | None = None
        self._clips: dict[str, Callable[[ClipDone], None]] = {}  # orders sent, by key

    @property
    def connected_at(self) -> float | None:
        return self.slot.header()[3] or None

    @property
    def received(self) -> int:
        return self.slot.header()[5]

    def start(self) -> None:
        self.pool.attach(self)

    def stop(self) -> None:
        self.pool.detach(self)

    def join(self, timeout: float) -> None:
        self.closed.wait(timeout)
        self.release()

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(BufferError):  # a frame being copied out: the GC unmaps it
                self._buffer.close()
            os.close(self.fd)
            self.fd = -1

    def clip(self, order: ClipOrder, report: Callable[[ClipDone], None]) -> None:
        """Have the worker write a clip; ``report`` hears, on the worker's listener thread."""
        worker = self.worker
        if worker is None or not worker.alive:
            report(ClipDone(order.key, order.path, False, note="the capture worker is not running"))
            return
        self._clips[order.key] = report
        worker.send(("clip", self.ident, order))

    def clip_done(self, done: ClipDone) -> None:
        report = self._clips.pop(done.key, None)
        if report is not None:
            report(done)

    def clips_lost(self, why: str) -> None:
        """The worker died: the clips it was writing will never be reported."""
        for key in list(self._clips):
            report = self._clips.pop(key, None)
            if report is not None:
                report(ClipDone(key, "", False, note=why))

    def latest(self) -> Latest | None:
        held = self.slot.read()
        if held is None:
            return None
        return Latest(held.seq, held.taken, datetime.fromtimestamp(held.wall, UTC), held.frame, None,
                      held.lag)


class Worker:
    """One capture process and the thread that listens to it."""

    def __init__(self, pool: CapturePool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.cameras: dict[int, RemoteReader] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.lock = threading.Lock()  # one sender at a time: the loop, or a restart
        self.thread: threading.Thread | None = None
        self.restarts = 0
        self.alive = False
        self.started = 0.0

    def spawn(self) -> None:
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.sources.worker", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.started = time.monotonic()
        self.alive = True
        self.thread = threading.Thread(target=self._listen, name=f"capture-worker-{self.index}",
                                       daemon=True)
        self.thread.start()

    def send_open(self, reader: RemoteReader) -> None:
        with self.lock:
            if self.conn is None or self.proc is None:
                return
            try:
                self.conn.send(("open", reader.ident, reader.spec))
                send_handle(self.conn, reader.fd, self.proc.pid)
            except OSError:
                pass  # it died: its listener restarts it and opens its cameras again

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            if self.conn is not None:
                with contextlib.suppress(OSError):
                    self.conn.send(message)

    def _listen(self) -> None:
        conn = self.conn
        assert conn is not None
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "report":
                _, ident, kind, detail = message
                reader = self.cameras.get(ident)
                if reader is not None:
                    reader.report(kind, detail)
            elif message[0] == "clip":
                reader = self.cameras.get(message[1])
                if reader is not None:
                    reader.clip_done(message[2])
            elif message[0] == "closed":
                reader = self.cameras.pop(message[1], None)
                if reader is not None:
                    reader.closed.set()
        self.alive = False
        conn.close()
        self.pool.died(self)


class CapturePool:
    """The daemon's capture workers; cameras go to the least loaded."""

    def __init__(self, workers: int, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.workers = [Worker(self, i) for i in range(workers)]
        self._ids = itertools.count(1)
        self._closing = False
        self._stop = threading.Event()

    def start(self) -> CapturePool:
        for worker in self.workers:
            worker.spawn()
        if self.metrics is not None:
            self.metrics.capture_workers.set(len(self.workers))
        return self

    def reader(self, spec: CaptureSpec, report: Tell) -> RemoteReader:
        return RemoteReader(self, next(self._ids), spec, report)

    def attach(self, reader: RemoteReader) -> None:
        worker = min(self.workers, key=lambda w: len(w.cameras))
        reader.worker = worker
        worker.cameras[reader.ident] = reader
        worker.send_open(reader)

    def detach(self, reader: RemoteReader) -> None:
        worker = reader.worker
        if worker is None or not worker.alive:  # nothing runs it: closed already
            if worker is not None:
                worker.cameras.pop(reader.ident, None)
            reader.closed.set()
        elif reader.ident in worker.cameras:
            worker.send(("close", reader.ident))

    def died(self, worker: Worker) -> None:
        """On the worker's listener thread: report its cameras down, start it again."""
        proc = worker.proc
        code = proc.wait() if proc is not None else None
        if self._closing:
            for reader in list(worker.cameras.values()):
                reader.closed.set()
            return
        if self.metrics is not None:
            self.metrics.capture_workers.dec()
        how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exit status {code}")
        for reader in list(worker.cameras.values()):
            reader.clips_lost(f"the capture worker died ({how})")
            reader.report("down", f"capture worker died ({how})")
            reader.report("reconnect", "")
        # A worker that keeps dying at once is restarted less and less often.
        lived = time.monotonic() - worker.started
        worker.restarts = 0 if lived > 60 else worker.restarts + 1
        if self._stop.wait(backoff_delay(worker.restarts, 0.5, 30.0)):
            return
        worker.spawn()
        if self.metrics is not None:
            self.metrics.capture_workers.inc()
            self.metrics.capture_worker_restarts.inc()
        for reader in list(worker.cameras.values()):
            worker.send_open(reader)

    def close(self) -> None:
        self._closing = True
        self._stop.set()
        for worker in self.workers:
            worker.send(("quit",))
        for worker in self.workers:
            if worker.proc is None:
                continue
            try:
                worker.proc.wait(10)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            if worker.thread is not None:
                worker.thread.join(5)
            for reader in list(worker.cameras.values()):
                reader.closed.set()
                reader.release()
