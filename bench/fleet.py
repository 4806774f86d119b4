"""Many cameras at a camera's bitrate: the daemon against plain FFmpeg on the same streams.

    .venv/bin/python -m bench.fleet [--profiles sub,720p,1080p,quiet] [--cameras 20]
        [--seconds 30] [--threads] [--overload 100] [--overload-profile 720p]
        [--capacity 20,40,60,80,100]
        [--before REF] [--scrape 15] [--hung] [--soak SECONDS] [--soak-cameras 100]
        [--soak-profile sub] [--soak-kill] [--soak-outage SECONDS]
        [--soak-reboot SECONDS]

A real RTSP server (GStreamer, tests/fakes/rtsp_server.py) serves every camera
one shared, live-encoded 25 fps H.264 stream with a keyframe every second, at
a camera's bitrate: SMPTE bars sliding sideways (busy enough that x264 spends
what it is asked) at 640x360 / 512 kbit/s (a sub-stream), 1280x720 / 2 Mbit/s
and 1920x1080 / 4 Mbit/s; and, labelled as such, the quiet ball pattern that
encodes to ~0.2 Mbit/s whatever it is asked. Coded as a camera codes (High
profile, CABAC, the deblocking filter). What each camera received is printed
(the daemon's own byte counter), and what the stream is (profile, keyframe size).

Per profile, in the same run: the floor, N plain FFmpeg clients (keyframes
only, one thread, scaled to the model's 644x364, thrown away), then the daemon
with N cameras (the stand-in model in this process, 80 ms an answer); CPU and
PSS of the daemon with every process it started, split into the capture
workers (against the floor) and the daemon's own process (per judged sample),
and what 1.25x the floor leaves a sample after capture, beside CLAHE and the
model's JPEG alone, measured here first; /metrics read as often as Prometheus
scrapes it (every 15 s). Then the overload case: more
cameras (720p unless told) than two cores take whole, with per-camera fairness, loop lag,
model-side drops and how fast /healthz and /metrics answer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx
import yaml

from bench.preprocess import clahe_and_jpeg_ms
from monitor.metrics import DROP_REASONS
from tests.conftest import ROOT, free_port
from tests.fakes.vllm import FakeVLM
from tests.rtsp import RtspServer

T = TypeVar("T")

TICKS = os.sysconf("SC_CLK_TCK")
TARGET = "a person wearing a red shirt"
# How often Prometheus scrapes the daemon (config/prometheus/prometheus.yml): the profiles'
# rows are polled this often unless told (--scrape). /metrics once a second (the overload
# case's latency bars) cost the daemon's process 0.4-1.0 ms a judged sample at 20 cameras
# of 720p: work no camera does.
SCRAPE_S = 15.0


def tree(pid: int) -> list[int]:
    """The process and all its descendants (the daemon and its capture workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user, system) and context switches (voluntary, involuntary) of processes."""

    user: float = 0.0
    system: float = 0.0
    voluntary: int = 0
    involuntary: int = 0

    @property
    def cpu(self) -> float:
        return self.user + self.system

    def __sub__(self, o: Usage) -> Usage:
        return Usage(self.user - o.user, self.system - o.system, self.voluntary - o.voluntary,
                     self.involuntary - o.involuntary)


def usage(pids: list[int]) -> Usage:
    user = system = 0.0
    vol = invol = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / TICKS
        system += int(fields[12]) / TICKS
        for task in Path(f"/proc/{pid}/task").glob("*/status"):  # switches are counted per thread
            try:
                status = task.read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
    return Usage(user, system, vol, invol)


def memory_mb(pids: list[int], key: str = "Pss:") -> float:
    """Proportional set size of the processes together (shared pages counted once), MB."""
    kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(key):
                    kb += int(line.split()[1])
        except OSError:
            pass
    return kb / 1024


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    port: int
    lines: list[str]

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, val = line.rpartition(" ")
                out[key] = float(val)
        return out

    def usage(self) -> Usage:
        return usage(tree(self.proc.pid))

    def cpu(self) -> float:
        """CPU seconds of the daemon and every process it started."""
        return self.usage().cpu

    def rss_mb(self) -> float:
        """Memory of the daemon and every process it started (PSS: shared pages once)."""
        return memory_mb(tree(self.proc.pid))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_daemon(tree: Path, urls: dict[str, str], model_url: str, state: Path,
                 **extra: object) -> Daemon:
    port = free_port()
    config = {
        # Enough requests in flight that the stand-in model (80 ms) is not what limits.
        "vlm": {"base_url": model_url, "max_concurrency": 32, "max_retries": 0},
        "streams": [{"name": name, "url": url, "targets": [TARGET]} for name, url in urls.items()],
        "alerts": [{"type": "log"}],
        "server": {"listen": f"127.0.0.1:{port}"},
        "state_dir": str(state),
        "logging": {"format": "json"},
        "shutdown_grace_seconds": 2,
        **extra,
    }
    path = state / "config.yaml"
    state.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(path)],
                            cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # as systemd starts a service
    daemon = Daemon(proc, port, [])

    def collect() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            daemon.lines.append(line)

    threading.Thread(target=collect, daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            daemon.metrics()
            return daemon
        except httpx.HTTPError:
            time.sleep(0.2)
    daemon.stop()
    raise RuntimeError("the daemon did not start:\n" + "".join(daemon.lines[-20:]))


def total(m: dict[str, float], name: str) -> float:
    return sum(v for k, v in m.items() if k.startswith(f"vlm_monitor_{name}{{") or k == f"vlm_monitor_{name}")


def down(m: dict[str, float], names: list[str]) -> list[str]:
    """The named streams not up."""
    return [n for n in names if m.get(f'vlm_monitor_stream_up{{stream="{n}"}}') != 1.0]


def up_count(m: dict[str, float], names: list[str]) -> int:
    return len(names) - len(down(m, names))


def judged(m: dict[str, float]) -> float:
    """Samples judged so far: analysed, or their verdicts reused (an unchanged scene)."""
    return total(m, "frames_analysed_total") + total(m, "verdicts_reused_total")


def wait_up(daemon: Daemon, names: list[str], within: float) -> float | None:
    """Seconds until every named stream is up, or None."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if up_count(daemon.metrics(), names) == len(names):
            return time.monotonic() - start
        time.sleep(0.25)
    return None


def quantile(before: dict[str, float], after: dict[str, float], metric: str, q: float) -> float:
    """A histogram's q-quantile within the window (an upper bucket bound), from bucket deltas."""
    buckets: dict[float, float] = {}
    for key, value in after.items():
        if key.startswith(f"vlm_monitor_{metric}_bucket{{"):
            le = key.split('le="')[1].split('"')[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + value - before.get(key, 0.0)
    count = buckets.get(float("inf"), 0.0)
    if not count:
        return float("nan")
    for bound in sorted(buckets):
        if buckets[bound] >= q * count:
            return bound
    return float("inf")


def p95_age(before: dict[str, float], after: dict[str, float]) -> float:
    return quantile(before, after, "frame_age_seconds", 0.95)


def per_stream(before: dict[str, float], after: dict[str, float], metric: str,
               names: list[str]) -> list[float]:
    return [after.get(f'vlm_monitor_{metric}{{stream="{n}"}}', 0.0)
            - before.get(f'vlm_monitor_{metric}{{stream="{n}"}}', 0.0) for n in names]


@dataclass(frozen=True)
class Profile:
    label: str
    size: str
    bitrate: int | None  # asked of x264, kbit/s; None: what the picture needs
    pattern: str

    def server(self) -> RtspServer:
        """A test RTSP server sending this profile's stream (a keyframe a second), started."""
        return RtspServer(free_port(), gop=25, size=self.size, pattern=self.pattern,
                          bitrate=self.bitrate).start()


PROFILES = {
    "sub": Profile("sub-stream 640x360, 512 kbit/s", "640x360", 512, "smpte"),
    "720p": Profile("720p, 2 Mbit/s", "1280x720", 2000, "smpte"),
    "1080p": Profile("1080p, 4 Mbit/s", "1920x1080", 4000, "smpte"),
    "quiet": Profile("quiet: 720p ball (not a camera's bitrate)", "1280x720", None, "ball"),
}


@dataclass
class Row:
    cameras: int
    workers: str
    rss_mb: float  # PSS of the daemon and its workers
    up_s: float | None
    up_after: int
    samples_per_s: float
    judged_ratio: float  # judged / sampling intervals due
    judged_min: float  # the least-served camera's judged samples in the window
    judged_mean: float
    p95_age: float
    cpu_per_cam_min: float
    main_per_cam_min: float  # of which the daemon's own process (the rest: capture workers)
    user_per_cam_min: float
    sys_per_cam_min: float
    switches_per_s: float
    rss_per_cam: float
    log_lines_per_cam_min: float
    kbps: list[float]  # received per camera: min, median, max
    model_drops_per_s: float  # model_unavailable + model_error
    stale_per_s: float
    drops_per_s: dict[str, float]  # by reason
    late_requests: float
    loop_lag_p99: float
    loop_cpu_wait: float  # of each second, how long the loop's thread waited for a CPU
    capture_lag_p95: float
    healthz_max_s: float
    metrics_max_s: float
    console_max_s: float  # the console's Cameras page's data (/api/cameras)
    behind_max: float  # the cameras_behind gauge, at its highest in the window
    overload_lines: int  # "overloaded" / "keeping up again" log lines in the run


def poll(daemon: Daemon, stop: threading.Event, out: dict[str, float], every: float) -> None:
    """Every ``every`` s: how long /healthz, /metrics and the console's camera list take, and
    the cameras-behind gauge."""
    base = f"http://127.0.0.1:{daemon.port}"
    while not stop.wait(every):
        for path in ("/healthz", "/metrics", "/api/cameras"):
            t = time.monotonic()
            try:
                r = httpx.get(base + path, timeout=10)
            except httpx.HTTPError:
                out[path] = float("inf")
                continue
            # A refusal is not an answer: counted as never answered.
            took = time.monotonic() - t if r.status_code == 200 else float("inf")
            out[path] = max(out.get(path, 0.0), took)
            if path == "/metrics":
                for line in r.text.splitlines():
                    if line.startswith("vlm_monitor_cameras_behind "):
                        out["behind"] = max(out.get("behind", 0.0), float(line.split()[1]))


def measure(tree: Path, server: RtspServer, fake: FakeVLM, n: int, seconds: float, warmup: float,
            tmp: Path, workers: str | int = "auto", extra: dict[str, object] | None = None,
            lines: list[str] | None = None, poll_s: float = 1.0) -> Row:
    """The daemon with ``n`` cameras on ``server`` (``extra``: more config; ``lines``: gets its log),
    polled every ``poll_s`` (/metrics, /healthz and the console's camera list)."""
    names = [f"cam{i:03d}" for i in range(n)]
    tmp.mkdir(parents=True, exist_ok=True)
    daemon = start_daemon(tree, dict.fromkeys(names, server.url()), fake.base_url,
                          tmp / f"s{n}-{workers}-{len(os.listdir(tmp))}", capture={"workers": workers},
                          **(extra or {}))
    polled: dict[str, float] = {}
    stop = threading.Event()
    try:
        up_s = wait_up(daemon, names, 120)
        up_after = up_count(daemon.metrics(), names)
        time.sleep(warmup)
        m0, u0, lines0, t0 = daemon.metrics(), daemon.usage(), len(daemon.lines), time.monotonic()
        main0 = usage([daemon.proc.pid])
        poller = threading.Thread(target=poll, args=(daemon, stop, polled, poll_s), daemon=True)
        poller.start()
        time.sleep(seconds)
        stop.set()
        poller.join()
        m1, u1, lines1, t1 = daemon.metrics(), daemon.usage(), len(daemon.lines), time.monotonic()
        main1 = usage([daemon.proc.pid])
        rss = daemon.rss_mb()
    finally:
        stop.set()
        daemon.stop()
        if lines is not None:
            lines.extend(daemon.lines)
    span, minutes = t1 - t0, (t1 - t0) / 60
    used = u1 - u0
    judged = [a + r for a, r in zip(per_stream(m0, m1, "frames_analysed_total", names),
                                    per_stream(m0, m1, "verdicts_reused_total", names), strict=True)]
    due = sum(per_stream(m0, m1, "sampling_intervals_total", names))
    kbps = sorted(b * 8 / 1000 / span for b in per_stream(m0, m1, "capture_received_bytes_total", names))

    def dropped(reason: str) -> float:
        # The exposition sorts labels by name: reason before stream.
        return sum(m1.get(f'vlm_monitor_frames_dropped_total{{reason="{reason}",stream="{s}"}}', 0.0)
                   - m0.get(f'vlm_monitor_frames_dropped_total{{reason="{reason}",stream="{s}"}}', 0.0)
                   for s in names)

    late = (m1.get('vlm_monitor_vlm_requests_total{outcome="late"}', 0.0)
            - m0.get('vlm_monitor_vlm_requests_total{outcome="late"}', 0.0))
    overload_lines = sum(1 for line in daemon.lines if '"overloaded' in line or "keeping up again" in line)
    return Row(n, str(workers), rss, up_s, up_after,
               (total(m1, "frames_sampled_total") - total(m0, "frames_sampled_total")) / span,
               sum(judged) / due if due else float("nan"), min(judged), sum(judged) / n,
               p95_age(m0, m1), used.cpu / n / minutes, (main1 - main0).cpu / n / minutes,
               used.user / n / minutes,
               used.system / n / minutes, (used.voluntary + used.involuntary) / span, rss / n,
               (lines1 - lines0) / n / minutes,
               [kbps[0], kbps[len(kbps) // 2], kbps[-1]] if kbps else [0.0, 0.0, 0.0],
               (dropped("model_unavailable") + dropped("model_error")) / span, dropped("stale") / span,
               {r: round(dropped(r) / span, 2) for r in DROP_REASONS if dropped(r)},
               late, quantile(m0, m1, "event_loop_lag_seconds", 0.99),
               (total(m1, "event_loop_cpu_wait_seconds_total")
                - total(m0, "event_loop_cpu_wait_seconds_total")) / span,
               quantile(m0, m1, "capture_lag_seconds", 0.95), polled.get("/healthz", float("nan")),
               polled.get("/metrics", float("nan")), polled.get("/api/cameras", float("nan")),
               polled.get("behind", 0.0), overload_lines)


@dataclass
class Floor:
    cpu_per_cam_min: float
    user_per_cam_min: float
    sys_per_cam_min: float
    rss_per_cam: float


def coding(url: str, seconds: float = 4.0) -> str:
    """What the stream is, as a decoder sees it: its H.264 profile and how big its keyframes are
    (what a keyframe costs to decode grows with both)."""
    import av

    with av.open(url, options={"rtsp_transport": "tcp", "timeout": "3000000"}, timeout=(10.0, None)) as c:
        stream = c.streams.video[0]
        sizes, end = [], time.monotonic() + seconds
        for packet in c.demux(stream):
            if packet.is_keyframe and packet.size:
                sizes.append(packet.size)
            if time.monotonic() > end:
                break
        profile = stream.codec_context.profile
    median = sorted(sizes)[len(sizes) // 2] / 1000 if sizes else 0.0
    return f"H.264 {profile}, keyframes {median:.0f} KB"


def floor(url: str, n: int, seconds: float, warmup: float) -> Floor:
    """N plain FFmpeg clients on the stream: keyframes only, one thread, scaled to the model's
    size, thrown away. What receiving and decoding the cameras costs at the least."""
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp", "-threads", "1",
           "-skip_frame", "nokey", "-i", url, "-vf", "scale=644:364", "-f", "null", "-"]
    procs = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            time.sleep(0.05)
        time.sleep(warmup)
        pids = [p.pid for p in procs]
        u0, t0 = usage(pids), time.monotonic()
        time.sleep(seconds)
        u1, t1 = usage(pids), time.monotonic()
        rss = memory_mb(pids)
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("an ffmpeg client ended during the floor's window")
    finally:
        for p in procs:
            p.kill()
            p.wait()
    used, minutes = u1 - u0, (t1 - t0) / 60
    return Floor(used.cpu / n / minutes, used.user / n / minutes, used.system / n / minutes, rss / n)


def capacity(tree: Path, server: RtspServer, fake: FakeVLM, seconds: float, warmup: float,
             tmp: Path, steps: list[int], scrape: float = SCRAPE_S) -> tuple[int, list[Row]]:
    """The most cameras (of ``steps``) at which >= 97% of the samples due were judged."""
    held, rows = 0, []
    for n in steps:
        row = served(server, partial(measure, tree, server, fake, n, seconds, warmup, tmp,
                                     poll_s=scrape), lambda r: r.up_after > 0)
        rows.append(row)
        print(f"  capacity: {n} cameras: all up after {fmt(row.up_s, '.1f')} s, {row.samples_per_s:.1f} "
              f"samples/s, {row.judged_ratio:.1%} judged, p95 frame age {row.p95_age:g} s, "
              f"PSS {row.rss_per_cam:.1f} MB per camera, {row.cpu_per_cam_min:.2f} CPU-s per "
              f"camera-minute", flush=True)
        if row.judged_ratio < 0.97:
            break
        held = n
    return held, rows


def served(server: RtspServer, run: Callable[[], T], fair: Callable[[T], bool] = lambda _: True) -> T:
    """``run()`` against a working test server, measured again (once) if the server broke under it.

    gst-rtsp-server was seen to abort (``gst_rtsp_media_get_rates: assertion
    failed``) or to stay up serving nothing under a crowd of clients (``prime()``
    now prevents the first); a real camera does not, so such a run measures the
    test server, not the daemon. ``fair(result)``: whether the server served the
    run at all.
    """
    for attempt in range(2):
        if attempt or server.proc is None or server.proc.poll() is not None:
            server.kill()
            server.start()
        server.prime()
        result = run()
        if server.proc is not None and server.proc.poll() is None and fair(result):
            return result
        print(f"(the test RTSP server broke during this run{'; measuring again' if not attempt else ''})",
              flush=True)
    return result


def soak(tree: Path, server: RtspServer, fake: FakeVLM, n: int, seconds: float, tmp: Path,
         kill: bool = False, outage: float = 0.0, reboot: float = 0.0) -> list[float]:
    """PSS in MB of the daemon and its workers, once a minute while ``n`` cameras run for
    ``seconds``: is it flat? With ``kill``, one capture worker is killed (SIGKILL, as a
    decoder's crash ends it) at each minute's start, and how long its cameras took to be
    back up is printed beside the daemon's open files: does a restart leave anything behind?
    With ``outage``, the model server is then stopped for that many seconds: how soon after
    it returns are samples judged again? With ``reboot``, the cameras' server is: how soon
    are they all up again?"""
    names = [f"cam{i:03d}" for i in range(n)]
    daemon = start_daemon(tree, dict.fromkeys(names, server.url()), fake.base_url, tmp / "soak")
    try:
        if wait_up(daemon, names, 120) is None:
            raise RuntimeError(f"soak: only {up_count(daemon.metrics(), names)} of {n} cameras came up")
        samples = [daemon.rss_mb()]
        metrics = daemon.metrics()
        for minute in range(int(seconds // 60)):
            start = time.monotonic()
            fault = kill_worker(daemon, names, minute) if kill else ""
            if outage:
                fault += model_outage(daemon, fake, outage)
            if reboot:
                fault += camera_reboot(daemon, server, names, reboot)
            time.sleep(max(0.0, 60 - (time.monotonic() - start)))
            samples.append(daemon.rss_mb())
            before, metrics = metrics, daemon.metrics()
            print(f"soak: {n} cameras, PSS {samples[-1]:.0f} MB, "
                  f"{(judged(metrics) - judged(before)) / (time.monotonic() - start):.1f} judged a second, "
                  f"{up_count(metrics, names)} up, {open_files(daemon.proc.pid)} files open{fault}",
                  flush=True)
        for name in down(metrics, names)[:5]:  # why: each one's last lines
            said = [line.strip() for line in daemon.lines if f'"{name}"' in line]
            print(f"soak: {name} down at the end; its last lines:", *said[-4:], sep="\n  ", flush=True)
    finally:
        daemon.stop()
    return samples


def capture_workers(pid: int) -> list[int]:
    """The daemon's capture worker processes."""
    found = []
    for child in tree(pid):
        with contextlib.suppress(OSError):
            if b"monitor.sources.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
    return sorted(found)


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def unavailable(m: dict[str, float]) -> float:
    """Samples dropped so far because the model server was down."""
    key = 'vlm_monitor_frames_dropped_total{reason="model_unavailable"'
    return sum(v for k, v in m.items() if k.startswith(key))


def model_outage(daemon: Daemon, fake: FakeVLM, seconds: float) -> str:
    """Stop the model server for ``seconds``, start it again; what happened, for the soak's line."""
    before = daemon.metrics()
    port = fake.port
    fake.stop()
    time.sleep(seconds)
    fake.start(port)
    back = time.monotonic()
    judged_then = judged(daemon.metrics())
    while time.monotonic() - back < 50:
        m = daemon.metrics()
        if judged(m) > judged_then:
            dropped = unavailable(m) - unavailable(before)
            return (f"; the model down {seconds:g} s: judging again {time.monotonic() - back:.1f} s "
                    f"after it returned, {dropped:.0f} samples dropped as model_unavailable")
        time.sleep(0.25)
    return f"; the model down {seconds:g} s: nothing judged in the 50 s after it returned"


def camera_reboot(daemon: Daemon, server: RtspServer, names: list[str], seconds: float) -> str:
    """Stop the cameras' RTSP server for ``seconds``, start it again; what happened."""
    server.kill()
    time.sleep(seconds)
    server.start()
    back = time.monotonic()
    server.prime()
    if wait_up(daemon, names, 50) is None:
        return f"; the cameras off {seconds:g} s: {len(down(daemon.metrics(), names))} down 50 s later"
    return f"; the cameras off {seconds:g} s: all up {time.monotonic() - back:.1f} s after they returned"


def kill_worker(daemon: Daemon, names: list[str], turn: int) -> str:
    """SIGKILL one capture worker (each in turn); what happened, for the soak's line."""
    running = capture_workers(daemon.proc.pid)
    if not running:
        return "; no capture worker to kill"
    restarts = total(daemon.metrics(), "capture_worker_restarts_total")
    victim = running[turn % len(running)]
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    while time.monotonic() - killed < 50:
        m = daemon.metrics()
        if total(m, "capture_worker_restarts_total") > restarts and not down(m, names):
            return f"; a worker killed, every camera up again {time.monotonic() - killed:.1f} s later"
        time.sleep(0.25)
    return f"; a worker killed, {len(down(daemon.metrics(), names))} cameras still down 50 s later"


def hung(tree: Path, server: RtspServer, fake: FakeVLM, tmp: Path) -> tuple[float | None, float | None]:
    """10 healthy cameras beside 5 hung ones: seconds until the healthy are up; and back after
    their server restarts."""
    sockets = []
    for _ in range(5):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        sockets.append(s)
    urls = {f"hung{i}": f"rtsp://127.0.0.1:{s.getsockname()[1]}/cam" for i, s in enumerate(sockets)}
    healthy = [f"cam{i:02d}" for i in range(10)]
    urls.update(dict.fromkeys(healthy, server.url()))
    daemon = start_daemon(tree, urls, fake.base_url, tmp / "hung")
    try:
        first = wait_up(daemon, healthy, 120)
        server.kill()
        deadline = time.monotonic() + 30
        while up_count(daemon.metrics(), healthy) and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(5)
        server.start()
        returned = time.monotonic()
        server.prime()  # keeps a client on the stream: without one, the test server aborts under a crowd
        back = wait_up(daemon, healthy, 120)
        back = None if back is None else time.monotonic() - returned
    finally:
        daemon.stop()
        for s in sockets:
            s.close()
    return first, back


def before_tree(ref: str, tmp: Path) -> Path:
    path = tmp / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
                   check=True, capture_output=True)
    return path


def drop_before_tree(tmp: Path) -> None:
    """Undo ``before_tree``, if it was made."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "before")],
                   capture_output=True)


def per_sample_ms(cpu_per_cam_min: float, judged_ratio: float) -> float:
    """CPU-s per camera-minute as milliseconds per judged sample (one due a second)."""
    return cpu_per_cam_min / 60 / max(judged_ratio, 1e-9) * 1000


def fmt(v: float | None, spec: str) -> str:
    return "never" if v is None else format(v, spec)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", default="sub,720p,1080p,quiet")
    parser.add_argument("--cameras", type=int, default=20, help="cameras per profile (and floor clients)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--threads", action="store_true",
                        help="also the daemon with capture in its own process (capture.workers: 0)")
    parser.add_argument("--overload", type=int, default=100, metavar="N",
                        help="then N cameras, more than two cores take whole (0: skip)")
    parser.add_argument("--overload-profile", choices=sorted(PROFILES), default="720p",
                        help="the overload case's stream (default 720p)")
    parser.add_argument("--capacity", default="", metavar="N,N,...",
                        help="per profile, step through these camera counts until < 97%% are judged")
    parser.add_argument("--before", metavar="REF", help="also measure the daemon at this git commit")
    parser.add_argument("--hung", action="store_true", help="then 10 healthy + 5 hung cameras")
    parser.add_argument("--json", metavar="FILE", help="write the results here too")
    parser.add_argument("--scrape", type=float, default=SCRAPE_S, metavar="SECONDS",
                        help="how often the profiles' rows read /metrics, /healthz and the camera list")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                        help="then --soak-cameras cameras (--soak-profile) this long, PSS once a minute")
    parser.add_argument("--soak-cameras", type=int, default=100, metavar="N",
                        help="how many (more than the box takes whole: does overload grow anything?)")
    parser.add_argument("--soak-profile", choices=sorted(PROFILES), default="sub",
                        help="the soak's stream (default sub)")
    parser.add_argument("--soak-kill", action="store_true",
                        help="during the soak, kill a capture worker at each minute's start")
    parser.add_argument("--soak-outage", type=float, default=0.0, metavar="SECONDS",
                        help="during the soak, stop the model server this long each minute")
    parser.add_argument("--soak-reboot", type=float, default=0.0, metavar="SECONDS",
                        help="during the soak, stop the cameras' RTSP server this long each minute")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-"))
    trees = {"after": ROOT}
    if args.before:
        trees = {"before": before_tree(args.before, tmp), **trees}
    least_ms = clahe_and_jpeg_ms()  # before anything else runs
    fake = FakeVLM().start()
    fake.latency = 0.08
    n = args.cameras
    results: dict[str, object] = {}
    table: list[str] = []
    codings: dict[str, str] = {}
    try:
        for key in filter(None, args.profiles.split(",")):
            profile = PROFILES[key]
            server = profile.server()
            try:
                server.prime()
                codings[key] = coding(server.url())
                base = floor(server.url(), n, args.seconds, args.warmup)
                print(key, codings[key], "floor", base, flush=True)
                runs: dict[str, Row] = {}
                for label, tree in trees.items():
                    runs[label] = served(server, partial(measure, tree, server, fake, n, args.seconds,
                                                         args.warmup, tmp / label, poll_s=args.scrape),
                                         lambda r: r.up_after > 0)
                    print(key, label, runs[label], flush=True)
                if args.threads:
                    runs["threads"] = served(server, partial(measure, ROOT, server, fake, n, args.seconds,
                                                             args.warmup, tmp / "threads", 0,
                                                             poll_s=args.scrape),
                                             lambda r: r.up_after > 0)
                    print(key, "threads", runs["threads"], flush=True)
                held = None
                if args.capacity:
                    held, _ = capacity(ROOT, server, fake, args.seconds, args.warmup, tmp / "cap",
                                       [int(c) for c in args.capacity.split(",")], args.scrape)
                for label, r in runs.items():
                    cap = held if held is not None and label == "after" else "-"
                    capture = r.cpu_per_cam_min - r.main_per_cam_min  # the capture workers
                    table.append(
                        f"| {profile.label} | {label} | {r.kbps[0]:.0f} / {r.kbps[1]:.0f} / {r.kbps[2]:.0f} "
                        f"| {base.cpu_per_cam_min:.3f} | {r.cpu_per_cam_min:.3f} "
                        f"({r.main_per_cam_min:.2f} in the daemon's process) "
                        f"| **{r.cpu_per_cam_min / base.cpu_per_cam_min:.2f}x** "
                        f"| {capture / base.cpu_per_cam_min:.2f}x "
                        f"| {per_sample_ms(r.main_per_cam_min, r.judged_ratio):.2f} "
                        f"| {per_sample_ms(1.25 * base.cpu_per_cam_min - capture, r.judged_ratio):.2f} "
                        f"| {r.user_per_cam_min:.2f} / {r.sys_per_cam_min:.2f} "
                        f"(floor {base.user_per_cam_min:.2f} / {base.sys_per_cam_min:.2f}) "
                        f"| {r.switches_per_s:,.0f} | {r.rss_per_cam:.1f} MB "
                        f"| {r.judged_ratio:.1%} | {cap} |")
                results[key] = {"coding": codings[key], "floor": base.__dict__,
                                "runs": {k: v.__dict__ for k, v in runs.items()}, "capacity": held}
            finally:
                server.kill()
        overloads: dict[str, Row] = {}
        if args.overload:
            server = PROFILES[args.overload_profile].server()
            try:
                for label, tree in trees.items():
                    overloads[label] = served(server, partial(
                        measure, tree, server, fake, args.overload, args.seconds * 2, args.warmup,
                        tmp / f"overload-{label}"), lambda r: r.up_after > 0)
                    print("overload", label, overloads[label], flush=True)
                results["overload"] = {k: v.__dict__ for k, v in overloads.items()}
            finally:
                server.kill()
        if args.hung:
            server = PROFILES["sub"].server()
            try:
                first, back = served(server, partial(hung, ROOT, server, fake, tmp / "hung"),
                                     lambda r: r[0] is not None)
                print(f"10 healthy + 5 hung cameras: healthy up after {fmt(first, '.1f')} s, back "
                      f"{fmt(back, '.1f')} s after their server returned", flush=True)
            finally:
                server.kill()
        if args.soak:
            server = PROFILES[args.soak_profile].server()
            try:
                run = partial(soak, ROOT, server, fake, args.soak_cameras, args.soak, tmp / "soak",
                              args.soak_kill, args.soak_outage, args.soak_reboot)
                results["soak_rss_mb"] = served(server, run)
            finally:
                server.kill()
    finally:
        fake.stop()
        if args.before:
            drop_before_tree(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{n} cameras per profile, one shared live-encoded H.264 stream, 25 fps, a keyframe every "
          f"second; stand-in model at 80 ms; {args.seconds:g} s measured after all up and "
          f"{args.warmup:g} s; CPU and PSS of the daemon with its capture workers; /metrics, "
          f"/healthz and the console's camera list read every {args.scrape:g} s "
          f"({'as Prometheus scrapes' if args.scrape == SCRAPE_S else 'not as Prometheus scrapes'}), "
          "every second in the overload case")
    print(f"CLAHE and the model's JPEG alone, one thread, here: {least_ms:.2f} ms a sample "
          "(the least a sample costs after capture)")
    for key, what in codings.items():
        print(f"{PROFILES[key].label}: {what}")
    print("| profile | daemon | received kbit/s per camera (min / median / max) | floor: FFmpeg "
          "CPU-s per camera-min | daemon CPU-s per camera-min | ratio | capture workers / floor "
          "| daemon's process, ms a sample | left at 1.25x for a sample's work, ms "
          "| user / sys | switches/s | PSS per camera | judged | cameras held at ≥ 97% |")
    print("|" + "---|" * 14)
    for line in table:
        print(line)
    if overloads:
        print()
        print(f"Overload: {args.overload} cameras, {PROFILES[args.overload_profile].label}, on this machine "
              f"({args.seconds * 2:g} s window)")
        print("| daemon | judged/s (of due) | least-served camera (judged / mean) | model-side drops/s "
              "| late requests | stale/s | loop lag p99 | loop waiting for a CPU | capture lag p95 "
              "| /healthz max | /metrics max | console's camera list max | cameras behind (max) "
              "| overload log lines |")
        print("|" + "---|" * 14)
    for label, over in overloads.items():
        due = over.samples_per_s / over.judged_ratio if over.judged_ratio else float("nan")
        print(f"| {label} | {over.judged_mean * over.cameras / (args.seconds * 2):.1f} ({due:.0f}) "
              f"| {over.judged_min:.0f} / {over.judged_mean:.1f} "
              f"({over.judged_min / over.judged_mean if over.judged_mean else 0:.2f}) "
              f"| {over.model_drops_per_s:.2f} | {over.late_requests:.0f} | {over.stale_per_s:.1f} "
              f"| {over.loop_lag_p99:g} s | {over.loop_cpu_wait:.2f} s/s | {over.capture_lag_p95:g} s "
              f"| {over.healthz_max_s:.3f} s "
              f"| {over.metrics_max_s:.3f} s | {over.console_max_s:.3f} s | {over.behind_max:.0f} "
              f"| {over.overload_lines} |")
        print(f"{label}: received {over.kbps[1]:.0f} kbit/s per camera (median); "
              f"intervals not judged, per second, by reason: {over.drops_per_s}; "
              f"CPU-s per camera-minute {over.cpu_per_cam_min:.2f} "
              f"({over.main_per_cam_min:.2f} in the daemon's process)")
    if "soak_rss_mb" in results:
        print(f"PSS of {args.soak_cameras} cameras ({PROFILES[args.soak_profile].label}) with their "
              f"workers{', one killed each minute' if args.soak_kill else ''}"
              f"{f', the model down {args.soak_outage:g} s each minute' if args.soak_outage else ''}"
              f"{f', the cameras off {args.soak_reboot:g} s each minute' if args.soak_reboot else ''}, "
              "once a minute:",
              ", ".join(f"{v:.0f}" for v in results["soak_rss_mb"]), "MB")  # type: ignore[attr-defined]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
