"""Where a camera's CPU goes: the whole daemon against its capture alone, user and system time
and context switches, at N cameras (issue 11's open question).

    .venv/bin/python -m bench.cpu [--cameras 50] [--seconds 30]

The same RTSP server as bench/fleet.py (one live-encoded 1280x720 stream at 2 Mbit/s for
every camera). First N ``LiveReader``s alone in this process (keyframes, held
at 644x364, glibc tuned as the capture workers do), then the daemon with N cameras
(the stand-in model in this process); each measured over one window after a
warm-up, from /proc and getrusage.
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import tempfile
import time
from pathlib import Path

from bench.fleet import start_daemon, wait_up
from monitor import malloc
from monitor.patches import target_size
from monitor.sources.capture import LiveReader
from tests.conftest import ROOT, free_port
from tests.fakes.vllm import FakeVLM
from tests.rtsp import RtspServer

TICKS = os.sysconf("SC_CLK_TCK")


def switches(pid: int) -> int:
    """Voluntary context switches of all the process's threads."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def line(label: str, n: int, user: float, system: float, switched: float, seconds: float) -> str:
    minutes = seconds / 60
    return (f"| {label} | {n} | {user / n / minutes:.3f} | {system / n / minutes:.3f} "
            f"| {(user + system) / n / minutes:.3f} | {switched / seconds:,.0f} |")


def readers(url: str, n: int, warmup: float, seconds: float) -> str:
    rs = [LiveReader(url, f"c{i}", interval=1.0, decode="keyframes",
                     scale_to=lambda w, h: target_size(w, h, 644 * 364)) for i in range(n)]
    try:
        for r in rs:
            r.start()
            time.sleep(0.02)
        time.sleep(warmup)
        r0, v0 = resource.getrusage(resource.RUSAGE_SELF), switches(os.getpid())
        time.sleep(seconds)
        r1, v1 = resource.getrusage(resource.RUSAGE_SELF), switches(os.getpid())
    finally:
        for r in rs:
            r.stop()
    return line("capture alone (LiveReaders)", n, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime,
                v1 - v0, seconds)


def daemon(url: str, model: str, n: int, warmup: float, seconds: float) -> str:
    names = [f"cam{i:03d}" for i in range(n)]
    d = start_daemon(ROOT, dict.fromkeys(names, url), model, Path(tempfile.mkdtemp(prefix="cpu-")))

    try:
        if wait_up(d, names, 120) is None:
            raise RuntimeError("not all cameras came up")
        time.sleep(warmup)
        before = d.usage()  # the daemon and its capture workers
        time.sleep(seconds)
        used = d.usage() - before
    finally:
        d.stop()
    return line("the daemon (with its capture workers)", n, used.user, used.system, used.voluntary, seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cameras", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args()
    malloc.tune(mmap_threshold=None)  # as the capture workers do
    fake = FakeVLM().start()
    server = RtspServer(free_port(), gop=25, size="1280x720", pattern="smpte", bitrate=2000).start()
    server.prime()
    try:
        rows = [readers(server.url(), args.cameras, args.warmup, args.seconds),
                daemon(server.url(), fake.base_url, args.cameras, args.warmup, args.seconds)]
    finally:
        server.kill()
        fake.stop()
    print("| what | cameras | user | system | CPU-s per camera-minute | voluntary context switches/s |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
