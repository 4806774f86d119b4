"""What the console costs the analysis: 50 cameras, with and without two browsers watching.

    .venv/bin/python -m bench.console [--cameras 50] [--seconds 60]

The same set-up as bench/fleet.py (a real RTSP server serving one live-encoded
1280x720 stream to every camera, the stand-in model, the daemon as its own
process), run twice: with the console off (``console.enabled: false``: no
thumbnails, no board), then with it on, measured in two windows, first with no
browser open, then with two headless Chromium pages (Debian's, driven by
Playwright) on the Cameras page, each taking the live updates and every tile's
new frame. Prints the daemon's own CPU-seconds per camera-minute (from /proc)
and samples per second for each window, and the ratios.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from playwright.sync_api import Request, sync_playwright

from bench.fleet import Daemon, start_daemon, total, wait_up
from tests.conftest import ROOT, free_port
from tests.fakes.vllm import FakeVLM
from tests.rtsp import RtspServer

CHROMIUM = shutil.which("chromium") or "/usr/lib/chromium/chromium"


def window(daemon: Daemon, n: int, seconds: float) -> tuple[float, float]:
    """CPU-s per camera-minute and samples/s over the next ``seconds``."""
    m0, cpu0, t0 = daemon.metrics(), daemon.cpu(), time.monotonic()
    time.sleep(seconds)
    m1, cpu1, t1 = daemon.metrics(), daemon.cpu(), time.monotonic()
    minutes = (t1 - t0) / 60
    return ((cpu1 - cpu0) / n / minutes,
            (total(m1, "frames_sampled_total") - total(m0, "frames_sampled_total")) / (t1 - t0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cameras", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--browsers", type=int, default=2)
    parser.add_argument("--viewport", default="1600x1000",
                        help="each browser's window; 3000x4000 shows all 50 tiles at once")
    args = parser.parse_args()
    n = args.cameras
    names = [f"cam{i:03d}" for i in range(n)]
    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    fake = FakeVLM().start()
    server = RtspServer(free_port(), gop=25, size="1280x720", pattern="ball").start()
    server.prime()
    rows: list[tuple[str, float, float]] = []
    frames = [0]  # tile frames the browsers fetched

    def count(request: Request) -> None:
        if request.url.split("?")[0].endswith("/frame.jpg"):
            frames[0] += 1

    try:
        for label, enabled in (("console off", False), ("console on", True)):
            daemon = start_daemon(ROOT, dict.fromkeys(names, server.url()), fake.base_url,
                                  tmp / label.replace(" ", "-"), console={"enabled": enabled})
            try:
                if wait_up(daemon, names, 120) is None:
                    raise RuntimeError(f"{label}: not all cameras came up")
                time.sleep(args.warmup)
                rows.append((f"{label}, no browser", *window(daemon, n, args.seconds)))
                print(rows[-1], flush=True)
                if not enabled:
                    continue
                width, height = (int(v) for v in args.viewport.split("x"))

                with sync_playwright() as p, ExitStack() as stack:
                    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                    stack.callback(browser.close)
                    for _ in range(args.browsers):
                        page = browser.new_context(viewport={"width": width, "height": height}).new_page()
                        page.on("request", count)
                        page.goto(f"http://127.0.0.1:{daemon.port}/#/cameras")
                        page.wait_for_selector(f'[data-camera="{names[-1]}"] img', timeout=30_000)
                    time.sleep(5)
                    before = frames[0]
                    label_b = f"{label}, {args.browsers} browsers on Cameras ({args.viewport})"
                    cpu, rate = window(daemon, n, args.seconds)
                    fetched = (frames[0] - before) / args.seconds
                    rows.append((f"{label_b}, {fetched:.0f} frames/s fetched", cpu, rate))
                    print(rows[-1], flush=True)
            finally:
                daemon.stop()
    finally:
        server.kill()
        fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0][1]
    print()
    print(f"{n} cameras, 1280x720 H.264, keyframe every 1 s; {args.seconds:g} s windows; "
          "daemon CPU from /proc")
    print("| run | CPU-s per camera-min | vs console off | samples/s |")
    print("|---|---|---|---|")
    for label, cpu, rate in rows:
        print(f"| {label} | {cpu:.3f} | {cpu / base:.2f}x | {rate:.1f} of {n} |")


if __name__ == "__main__":
    main()
