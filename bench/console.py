"""What the console costs the analysis: 50 cameras, with and without two browsers watching.

    .venv/bin/python -m bench.console [--cameras 50] [--seconds 60] [--view large|compact]
        [--profile 720p|sub|1080p]

The same set-up as bench/fleet.py (a real RTSP server serving one live-encoded
1280x720 stream at 2 Mbit/s (a camera's bitrate) to every camera, the stand-in model, the daemon as its own
process), run twice: with the console off (``console.enabled: false``: no
thumbnails, no board), then with it on, measured in two windows, first with no
browser open, then with two headless Chromium pages (Debian's, driven by
Playwright) on the Cameras page, each taking the live updates and every tile's
new frame. The browsers go back and forth between a blank page and the Cameras
page in turns (``--rounds``), so that drift on a shared machine hits both.
Prints the daemon's own CPU-seconds per camera-minute (from /proc) and samples
per second, and the ratios.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from playwright.sync_api import Request, sync_playwright

from bench.fleet import PROFILES, Daemon, start_daemon, total, wait_up
from tests.conftest import ROOT
from tests.fakes.vllm import FakeVLM
from tests.rtsp import RtspServer

CHROMIUM = shutil.which("chromium") or "/usr/lib/chromium/chromium"


def measure(daemon: Daemon, seconds: float, wait: Callable[[float], None]) -> tuple[float, float, float]:
    """CPU-seconds, samples and wall seconds over the next ``seconds``."""
    m0, cpu0, t0 = daemon.metrics(), daemon.cpu(), time.monotonic()
    wait(seconds)
    m1, cpu1, t1 = daemon.metrics(), daemon.cpu(), time.monotonic()
    return cpu1 - cpu0, total(m1, "frames_sampled_total") - total(m0, "frames_sampled_total"), t1 - t0


def ready(daemon: Daemon, names: list[str], server: RtspServer) -> None:
    if wait_up(daemon, names, 120) is None:
        up = sum(1 for n in names if daemon.metrics().get(f'vlm_monitor_stream_up{{stream="{n}"}}') == 1.0)
        alive = server.proc is not None and server.proc.poll() is None
        raise RuntimeError(f"{up} of {len(names)} cameras up after 120 s (RTSP server alive: {alive})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cameras", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--browsers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="turns of no browser / browsers")
    parser.add_argument("--viewport", default="1600x1000",
                        help="each browser's window; 3000x4000 shows all 50 tiles at once")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="720p",
                        help="the camera stream (bench.fleet's profiles)")
    parser.add_argument("--browser-nice", type=int, default=19, choices=range(20), metavar="0..19",
                        help="the browsers' niceness (they stand for browsers on other machines)")
    parser.add_argument("--view", choices=("large", "compact"), default="large",
                        help="the Cameras page's grid (compact: all of 100 cameras in ~1.5 screens)")
    args = parser.parse_args()
    n = args.cameras
    names = [f"cam{i:03d}" for i in range(n)]
    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    fake = FakeVLM().start()
    profile = PROFILES[args.profile]
    server = profile.server()
    server.prime()
    # label -> [CPU-s, samples, seconds], summed over its windows
    sums: dict[str, list[float]] = {}
    frames = [0]  # tile frames the browsers fetched

    def count(request: Request) -> None:
        if request.url.split("?")[0].endswith("/frame.jpg"):
            frames[0] += 1

    def add(label: str, cpu: float, samples: float, seconds: float) -> None:
        row = sums.setdefault(label, [0.0, 0.0, 0.0])
        for i, v in enumerate((cpu, samples, seconds)):
            row[i] += v

    window = args.seconds / args.rounds
    try:
        off = start_daemon(ROOT, dict.fromkeys(names, server.url()), fake.base_url, tmp / "off",
                           console={"enabled": False})
        try:
            ready(off, names, server)
            time.sleep(args.warmup)
            add("console off", *measure(off, args.seconds, time.sleep))
        finally:
            off.stop()
        on = start_daemon(ROOT, dict.fromkeys(names, server.url()), fake.base_url, tmp / "on")
        try:
            ready(on, names, server)
            time.sleep(args.warmup)
            width, height = (int(v) for v in args.viewport.split("x"))
            # At a site the browsers run on other machines. Here they share the daemon's cores:
            # at the lowest priority they take only what the daemon leaves (--browser-nice 0:
            # as equals, which starves the daemon past ~50 cameras on 2 cores).
            chromium = tmp / "chromium"
            chromium.write_text(f'#!/bin/sh\nexec nice -n {args.browser_nice} {CHROMIUM} "$@"\n')
            chromium.chmod(0o755)
            with sync_playwright() as p, ExitStack() as stack:
                browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
                stack.callback(browser.close)
                pages = []
                for _ in range(args.browsers):
                    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
                    page.on("request", count)
                    pages.append(page)
                watching = f"console on, {args.browsers} browsers on Cameras ({args.view}, {args.viewport})"
                # Browsers on a blank page, then on the Cameras page, in turns: drift hits both.
                for _ in range(args.rounds):
                    for label, url in (("console on, no browser", "about:blank"),
                                       (watching, f"http://127.0.0.1:{on.port}/#/cameras?view={args.view}")):
                        for page in pages:
                            page.goto(url)
                        pages[0].wait_for_timeout(3000)
                        before = frames[0]
                        add(label, *measure(on, window, lambda s: pages[0].wait_for_timeout(s * 1000)))
                        if label == watching:
                            sums.setdefault("frames", [0.0])[0] += frames[0] - before
        finally:
            on.stop()
    finally:
        server.kill()
        fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    fetched = sums.pop("frames", [0.0])[0] / (sums[watching][2] if watching in sums else 1)
    rows = [(label, cpu / n / (seconds / 60), samples / seconds) for label, (cpu, samples, seconds)
            in sums.items()]
    base = rows[0][1]
    print()
    print(f"the browsers fetched {fetched:.1f} tile frames/s while on the Cameras page")
    print(f"{n} cameras, {profile.label} H.264, keyframe every 1 s; {args.seconds:g} s windows; "
          "daemon CPU from /proc")
    print("| run | CPU-s per camera-min | vs console off | samples/s |")
    print("|---|---|---|---|")
    for label, cpu, rate in rows:
        print(f"| {label} | {cpu:.3f} | {cpu / base:.2f}x | {rate:.1f} of {n} |")
    by = {label: cpu for label, cpu, _ in rows}
    if watching in by:
        print(f"two browsers watching cost {by[watching] / by['console on, no browser'] - 1:+.1%} CPU "
              "against the same daemon with no browser, in the same turns")


if __name__ == "__main__":
    main()
