"""CPU-seconds per 1080p stream-minute: our live reader vs the seed's read-every-frame loop.

    .venv/bin/python -m bench.decode [--seconds 30] [--gop 25]

A real RTSP server (GStreamer, tests/fakes/rtsp_server.py, run by the system
Python) serves 1920x1080 at 25 fps H.264 with a moving picture. Each reader
runs alone for the same wall time; this process's CPU time (all threads) is
what it cost. The server's own CPU is not counted for either.
"""

from __future__ import annotations

import argparse
import resource
import time

import cv2

from monitor.sources.capture import LiveReader
from tests.conftest import free_port
from tests.rtsp import RtspServer


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def seed_loop(url: str, seconds: float) -> tuple[float, int]:
    """The seed's way: read() every frame, keep one per second (its frame_count % fps)."""
    cap = cv2.VideoCapture(url)
    fps = int(cap.get(cv2.CAP_PROP_FPS)) or 25
    start_cpu, end = cpu_seconds(), time.monotonic() + seconds
    frames = kept = 0
    while time.monotonic() < end:
        ok, _frame = cap.read()
        if not ok:
            break
        if frames % fps == 0:
            kept += 1
        frames += 1
    cap.release()
    return cpu_seconds() - start_cpu, kept


def our_reader(url: str, seconds: float, decode: str) -> tuple[float, int, str]:
    decided: list[str] = []
    reader = LiveReader(url, "bench", interval=1.0, decode=decode,  # type: ignore[arg-type]
                        report=lambda kind, detail: decided.append(detail) if kind == "decode" else None)
    start_cpu = cpu_seconds()
    reader.start()
    seen, last = 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # what the sampler does: take the newest frame once a second
        time.sleep(1.0)
        latest = reader.latest()
        if latest is not None and latest.seq != last:
            seen, last = seen + 1, latest.seq
    reader.stop()
    reader.join(15)
    return cpu_seconds() - start_cpu, seen, decided[0] if decided else decode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--gop", type=int, default=25, help="frames per keyframe (25 = 1 s)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    server = RtspServer(free_port(), gop=args.gop, size="1920x1080", pattern="smpte", bitrate=4000).start()
    try:
        url = server.url()
        seed_cpu, seed_kept = seed_loop(url, args.seconds)
        ours_cpu, ours_kept, mode = our_reader(url, args.seconds, "auto")
    finally:
        server.kill()
    per_min = 60.0 / args.seconds
    seed_min, ours_min = seed_cpu * per_min, ours_cpu * per_min
    print(f"1920x1080 25 fps H.264 over RTSP (TCP, loopback), keyframe every {args.gop / 25:g} s, "
          f"{args.seconds:g} s each")
    print(f"{'':34}{'seed':>10}{'vlm-monitor':>14}{'ratio':>9}")
    ratio = seed_min / ours_min
    print(f"{'CPU-seconds per stream-minute':34}{seed_min:>10.2f}{ours_min:>14.2f}{ratio:>8.1f}x")
    print(f"{'streams per core':34}{60 / seed_min:>10.1f}{60 / ours_min:>14.1f}")
    print(f"{'samples taken':34}{seed_kept:>10}{ours_kept:>14}")
    print(f"(ours in auto mode chose: {mode})")


if __name__ == "__main__":
    main()
