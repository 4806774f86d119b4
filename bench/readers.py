"""The live capture alone, two ways, on the same cameras: OpenCV with its FFmpeg options set
once for the whole process (no lock: every camera shares them) and our PyAV ``LiveReader``.

    .venv/bin/python -m bench.readers [--cameras 20] [--seconds 20]

The question it answers for issue 11: what does receiving and keyframe-decoding
a 720p camera cost per minute, and how much memory, with each library? Each
way runs in a process of its own (its CPU from getrusage, its RSS above the
same process before the cameras), against one shared, live-encoded RTSP
stream with a keyframe every second; both keep the newest keyframe at the
model's size, 644x364.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import threading
import time

from tests.conftest import free_port
from tests.rtsp import RtspServer

SIZE = (644, 364)


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def opencv_cameras(url: str, n: int, stop: threading.Event, got: list[int]) -> list[threading.Thread]:
    # Set once, before any open: then no open needs a lock.
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp|avdiscard;nonkey"
    import cv2

    def read(i: int) -> None:
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1,
                                                     cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10000,
                                                     cv2.CAP_PROP_READ_TIMEOUT_MSEC, 10000])
        while not stop.is_set() and cap.grab():  # only keyframes reach the decoder
            ok, frame = cap.retrieve()
            if ok:
                cv2.resize(frame, SIZE, interpolation=cv2.INTER_AREA)
                got[i] += 1
        cap.release()

    return [threading.Thread(target=read, args=(i,)) for i in range(n)]


def pyav_cameras(url: str, n: int, stop: threading.Event, got: list[int]) -> list[threading.Thread]:
    from monitor.sources.capture import LiveReader

    readers = [LiveReader(url, f"c{i}", interval=1.0, scale_to=lambda w, h: SIZE) for i in range(n)]

    def watch(i: int) -> None:
        readers[i].start()
        last = 0
        while not stop.is_set():
            time.sleep(0.2)
            latest = readers[i].latest()
            if latest is not None and latest.seq != last:
                got[i], last = got[i] + 1, latest.seq
        readers[i].stop()
        readers[i].join(15)

    return [threading.Thread(target=watch, args=(i,)) for i in range(n)]


def one(way: str, url: str, n: int, seconds: float) -> None:
    """In a process of its own: print CPU-s per camera-minute, MB per camera, frames/s."""
    from monitor import malloc

    if os.environ.get("BENCH_MALLOC_TUNE") == "1":
        malloc.tune()  # as the daemon does
    base = rss_mb()
    stop = threading.Event()
    got = [0] * n
    threads = (opencv_cameras if way == "opencv" else pyav_cameras)(url, n, stop, got)
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while sum(1 for g in got if g) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)
    c0, g0 = cpu_s(), sum(got)
    time.sleep(seconds)
    c1, g1 = cpu_s(), sum(got)
    mb = (rss_mb() - base) / n
    stop.set()
    for t in threads:
        t.join()
    print(f"{(c1 - c0) / seconds * 60 / n:.3f} {mb:.2f} {(g1 - g0) / seconds / n:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--one", nargs=2, metavar=("WAY", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one[0], args.one[1], args.cameras, args.seconds)
        return
    rows = []
    for way in ("opencv", "pyav"):
        for tune in ("0", "1"):
            # A fresh, primed server for each: the test server may not survive a crowd.
            server = RtspServer(free_port(), gop=25, size="1280x720", pattern="smpte", bitrate=2000).start()
            try:
                server.prime()
                out = subprocess.run(
                    [sys.executable, "-m", "bench.readers", "--cameras", str(args.cameras),
                     "--seconds", str(args.seconds), "--one", way, server.url()],
                    capture_output=True, text=True, timeout=args.seconds + 180,
                    env={**os.environ, "BENCH_MALLOC_TUNE": tune})
            finally:
                server.kill()
            fields = out.stdout.split()
            if out.returncode != 0 or len(fields) != 3:
                raise SystemExit(f"{way} failed: {out.stderr[-500:]}")
            rows.append((way, tune == "1", *map(float, fields)))
    print(f"{args.cameras} cameras of 1280x720 H.264, keyframe every 1 s, {args.seconds:g} s measured")
    print("| capture | glibc tuned (monitor/malloc.py) | CPU-s per camera-minute | RSS per camera "
          "| keyframes/s per camera |")
    print("|---|---|---|---|---|")
    for way, tuned, cpu, mb, rate in rows:
        label = "OpenCV, options set once per process" if way == "opencv" else "PyAV LiveReader (ours)"
        print(f"| {label} | {'yes' if tuned else 'no'} | {cpu:.2f} | {mb:.1f} MB | {rate:.2f} |")


if __name__ == "__main__":
    main()
