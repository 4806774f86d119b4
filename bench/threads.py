"""Where the daemon's CPU goes, thread by thread: run time and time waiting for a core.

`python -m bench.threads [--profile sub] [--cameras 20] [--seconds 20] [--windows 2]
[--before REF]` runs the daemon on ``bench.fleet``'s stream of that profile and, per window,
reads every thread's ``/proc/PID/task/TID/schedstat`` (ns on a CPU, ns ready
but waiting on a run queue) for three groups: the event loop (the thread
whose id is the daemon's pid), the daemon's other threads (preprocessing,
HTTP, capture listeners) and the capture workers' threads. Each group's run
time is given per judged sample and as cores; its wait as seconds a second.
A loop that waits for a core much more than it runs is starved by the
machine, not busy with its own work (at 300 sub-stream cameras here: runs
0.11 s of a second, waits 0.55). It prints what each camera received. It is a
breakdown, not a comparison with FFmpeg: `bench.fleet` measures the daemon
against plain FFmpeg on the same stream.

With ``--before REF`` the daemon at that commit runs too, at the same time and
with as many cameras of its own, and both are read in the same windows. Runs
apart differ by ~0.1 ms a sample in the daemon's process and ±20% from day to
day, which hides a small change; two daemons side by side share whatever the
machine does. Not quite all: two copies of one commit side by side differed
in their capture workers by 0.35-0.46 ms a sample in one run and by 0.06-0.16
in the next, started in the other order (the same copy costing more both
times); their event loops by up to 0.1 ms window to window. So both orders
are run, and the summary gives the change (now - before, every window of both
orders, mean, least and most) beside the order's own effect (second - first). A change inside what
an A/A run (``--before HEAD`` on a clean tree) prints is not shown by this bench.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from statistics import mean

from bench.fleet import (
    PROFILES,
    before_tree,
    drop_before_tree,
    judged,
    per_stream,
    served,
    start_daemon,
    tree,
    wait_up,
)
from tests.conftest import ROOT
from tests.fakes.vllm import FakeVLM
from tests.rtsp import RtspServer

GROUPS = ("event loop", "other threads", "capture workers")


def schedstat(pid: int) -> dict[str, tuple[float, float]]:
    """(seconds on a CPU, seconds waiting for one) of each group, summed over its threads."""
    out = dict.fromkeys(GROUPS, (0.0, 0.0))
    for proc in tree(pid):
        try:
            tids = os.listdir(f"/proc/{proc}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{proc}/task/{tid}/schedstat") as f:
                    ran, waited = (int(v) / 1e9 for v in f.read().split()[:2])
            except (OSError, ValueError):
                continue
            group = GROUPS[2] if proc != pid else GROUPS[0] if int(tid) == pid else GROUPS[1]
            r, w = out[group]
            out[group] = (r + ran, w + waited)
    return out


Window = tuple[float, float, dict[str, tuple[float, float]]]


def measure(server: RtspServer, fake: FakeVLM, cameras: int, seconds: float, windows: int,
            tmp: Path, trees: dict[str, Path]) -> dict[str, list[Window]]:
    """Per daemon, per window: samples judged a second, the median camera's kbit/s received,
    and each group's (cores, waiting s/s). With two trees both daemons run at once, each with
    ``cameras`` cameras, and are read in the same windows: whatever the machine does to one
    (a slower hour, a busy neighbour) it does to the other."""
    names = [f"cam{i:03d}" for i in range(cameras)]
    daemons = {label: start_daemon(tree, dict.fromkeys(names, server.url()), fake.base_url,
                                   tmp / f"state-{label}-{time.monotonic_ns()}")
               for label, tree in trees.items()}
    rows: dict[str, list[Window]] = {label: [] for label in daemons}
    try:
        for daemon in daemons.values():
            if wait_up(daemon, names, 120) is None:
                raise RuntimeError("not every camera came up")
        time.sleep(10)
        for _ in range(windows):
            before = {k: (d.metrics(), schedstat(d.proc.pid)) for k, d in daemons.items()}
            t0 = time.monotonic()
            time.sleep(seconds)
            after = {k: (d.metrics(), schedstat(d.proc.pid)) for k, d in daemons.items()}
            span = time.monotonic() - t0
            for label in daemons:
                (m0, s0), (m1, s1) = before[label], after[label]
                received = per_stream(m0, m1, "capture_received_bytes_total", names)
                kbps = sorted(b * 8 / 1000 / span for b in received)
                rows[label].append(((judged(m1) - judged(m0)) / span, kbps[len(kbps) // 2],
                                    {g: ((s1[g][0] - s0[g][0]) / span, (s1[g][1] - s0[g][1]) / span)
                                     for g in GROUPS}))
    finally:
        for daemon in daemons.values():
            daemon.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", choices=sorted(PROFILES), default="sub")
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--before", metavar="REF",
                        help="also the daemon at this git commit: both at once, read in the same windows")
    args = parser.parse_args()
    fake = FakeVLM().start()
    fake.latency = 0.08
    server = PROFILES[args.profile].server()
    tmp = Path(tempfile.mkdtemp(prefix="threads-"))
    orders = [{"now": ROOT}]
    if args.before:
        old = before_tree(args.before, tmp)
        orders = [{"before": old, "now": ROOT}, {"now": ROOT, "before": old}]
    runs: list[dict[str, list[Window]]] = []
    try:
        for trees in orders:
            run = partial(measure, server, fake, args.cameras, args.seconds, args.windows, tmp, trees)
            runs.append(served(server, run, lambda rows: all(
                rate > 0 for windows in rows.values() for rate, _, _ in windows)))
    finally:
        server.kill()
        fake.stop()
        if args.before:
            drop_before_tree(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    together = " each, both at once, in either order" if args.before else ""
    print(f"{args.cameras} cameras{together}, {PROFILES[args.profile].label}; {args.seconds:g} s windows; "
          "the stand-in model at 80 ms and the RTSP server on the same cores")
    print("| started | window | daemon | received kbit/s per camera (median) | judged/s | group "
          "| ms a judged sample | cores | waiting for a core, s a second |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rows in runs:
        for i in range(args.windows):
            for place, (label, windows) in enumerate(rows.items()):
                rate, kbps, groups = windows[i]
                for group, (cores, waiting) in groups.items():
                    print(f"| {('first', 'second')[place]} | {i + 1} | {label} | {kbps:.0f} | {rate:.1f} "
                          f"| {group} | {per_sample(cores, rate):.2f} | {cores:.2f} | {waiting:.2f} |")
    if args.before:
        print("| group | now - before, ms a judged sample: mean (least, most) "
              "| second started - first: mean |")
        print("|---|---|---|")
        for group in GROUPS:
            change, order = differences(runs, group)
            print(f"| {group} | {mean(change):+.2f} ({min(change):+.2f}, {max(change):+.2f}) "
                  f"| {mean(order):+.2f} |")


def per_sample(cores: float, rate: float) -> float:
    return cores / rate * 1e3 if rate else float("nan")


def differences(runs: list[dict[str, list[Window]]], group: str) -> tuple[list[float], list[float]]:
    """One group's ms a judged sample, window by window: now - before, and second - first
    (the daemons in the order they were started). Pure."""
    change, order = [], []
    for rows in runs:
        (first, a), (_, b) = rows.items()
        for wa, wb in zip(a, b, strict=True):
            ms_a, ms_b = (per_sample(w[2][group][0], w[0]) for w in (wa, wb))
            change.append(ms_a - ms_b if first == "now" else ms_b - ms_a)
            order.append(ms_b - ms_a)
    return change, order


if __name__ == "__main__":
    main()
