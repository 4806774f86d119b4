"""Evidence clips' cost: memory and CPU per camera with clips off and on, in one run, at each
camera profile; and how soon after its window a clip is on disk, and how big.

    .venv/bin/python -m bench.clips [--profiles sub,720p,1080p] [--cameras 20] [--seconds 30]

The streams are bench/fleet.py's (one shared live-encoded H.264 stream per
profile, at its bitrate, a keyframe a second). Their SMPTE bars hold a red
bar, so the stand-in model finds "a person wearing a red shirt" in every
camera as soon as it is up: every camera alerts once, early, and writes its
clip (15 s with the defaults) while the run goes on. Clips are on by default;
"off" is ``clips: {enabled: false}``. PSS counts every process the daemon
started (the packets are held in the capture workers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bench.fleet import PROFILES, Row, measure
from tests.conftest import ROOT
from tests.fakes.vllm import FakeVLM


def clip_lines(lines: list[str]) -> list[dict[str, object]]:
    out = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "clip written":
            out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", default="sub,720p,1080p")
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args()
    fake = FakeVLM().start()
    fake.latency = 0.08  # as bench/fleet.py
    rows: list[tuple[str, Row, Row, list[dict[str, object]]]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for key in filter(None, args.profiles.split(",")):
                profile = PROFILES[key]
                server = profile.server()
                try:
                    server.prime()
                    off = measure(ROOT, server, fake, args.cameras, args.seconds, args.warmup, Path(tmp),
                                  extra={"clips": {"enabled": False}})
                    print(key, "off", off, flush=True)
                    lines: list[str] = []
                    on = measure(ROOT, server, fake, args.cameras, args.seconds, args.warmup, Path(tmp),
                                 lines=lines)
                    print(key, "on", on, flush=True)
                finally:
                    server.kill()
                rows.append((profile.label, off, on, clip_lines(lines)))
    finally:
        fake.stop()

    print(f"\n{args.cameras} cameras per profile, {args.seconds:g} s measured after all up and "
          f"{args.warmup:g} s; clips with the defaults (5 s before, 10 s after); every camera alerts "
          "once, early")
    print("| profile | received kbit/s (median) | CPU-s per camera-min, off → on | PSS per camera, off → on "
          "| clip memory per camera | clips written | after its window: median / max | size: median |")
    print("|---|---|---|---|---|---|---|---|")
    for label, off, on, clips in rows:
        late = [float(str(c["after_window_s"])) for c in clips if "after_window_s" in c]
        sizes = [int(str(c["bytes"])) for c in clips]
        print(f"| {label} | {on.kbps[1]:.0f} | {off.cpu_per_cam_min:.3f} → {on.cpu_per_cam_min:.3f} "
              f"({on.cpu_per_cam_min / off.cpu_per_cam_min:.2f}x) | {off.rss_per_cam:.1f} → "
              f"{on.rss_per_cam:.1f} MB | {on.rss_per_cam - off.rss_per_cam:+.1f} MB | {len(clips)} "
              f"| {statistics.median(late) if late else float('nan'):.2f} / "
              f"{max(late, default=float('nan')):.2f} s "
              f"| {statistics.median(sizes) / 1e6 if sizes else float('nan'):.2f} MB |")


if __name__ == "__main__":
    main()
