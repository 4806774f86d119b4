"""Evidence clips: the packet ring (pure), and a live camera's and a recording's clip end to end
against the GStreamer RTSP server, the stand-in model, a real webhook receiver and ffprobe."""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import av
import httpx
import numpy as np
import pytest
import yaml

from monitor.links import signed, valid
from monitor.sources.clips import MOVFLAGS, ClipOrder, Held, PacketRing, Recording, cut, mux
from tests.conftest import Receiver, cli, free_port, json_lines
from tests.fakes.vllm import MIN_FRACTION, FakeVLM, colour_fraction
from tests.rtsp import RtspServer
from tests.test_live import RED, daemon, events, live, until

EVENTS = ["target_detected", "clip_ready"]


def gops(seconds: int, *, per_second: int = 5, size: int = 100, start: float = 0.0) -> list[Held]:
    """A keyframe a second and ``per_second - 1`` other packets."""
    return [Held(start + s + i / per_second, i == 0, size * (3 if i == 0 else 1))
            for s in range(seconds) for i in range(per_second)]


def test_the_ring_holds_whole_gops_back_to_its_seconds() -> None:
    ring = PacketRing(seconds=3.0, max_bytes=10**9)
    ring.add(Held(0.0, False, 50))  # before the first keyframe: of no use to a clip
    for p in gops(10):
        ring.add(p)
    # Newest at 9.8: the keyframe at or before 6.8 is the one at 6.
    assert ring.oldest == 6.0 and not ring.short
    assert ring.since(7.5)[0].arrival == 7.0  # a clip starts on the keyframe before
    assert ring.since(2.0)[0].arrival == 6.0  # older than held: from the oldest held
    assert ring.bytes == sum(p.size for p in ring.since(0.0)) == 4 * 700


def test_a_camera_that_sends_too_much_keeps_the_bound_and_says_its_clips_are_short() -> None:
    ring = PacketRing(seconds=5.0, max_bytes=2000)
    for p in gops(2):
        ring.add(p)
    assert not ring.short and ring.oldest == 0.0
    for p in gops(20, size=200, start=2.0):  # twice the bitrate: one GOP fits the bound, not two
        ring.add(p)
        assert ring.bytes <= 2000
    assert ring.short and ring.oldest == 21.0  # 5 s would reach back to the keyframe at 16
    # One GOP bigger than the bound is not held at all: nothing a clip could start from.
    ring.add(Held(30.0, True, 2500))
    assert ring.bytes == 0 and ring.oldest is None


def test_a_recording_takes_what_arrives_until_its_end_and_no_more_than_its_bytes() -> None:
    from monitor.sources.clips import ClipOrder

    rec = Recording(ClipOrder("a" * 32, 2.0, 5.0, "/dev/null"), max_bytes=10**6)
    assert not rec.extend(gops(5)[:20])  # up to 3.8
    assert rec.extend(gops(6)[20:]) and rec.packets[-1].arrival == 4.8 and not rec.note
    small = Recording(ClipOrder("b" * 32, 0.0, 10.0, "/dev/null"), max_bytes=1000)
    assert small.extend(gops(10)) and small.bytes <= 1000 and "cut at" in small.note


def test_a_clip_removed_by_retention_is_said_to_have_expired(tmp_path: Path) -> None:
    from monitor.alerts.snapshots import Snapshots
    from monitor.console.clips import ClipRoutes

    files = Snapshots(tmp_path, max_count=10, max_age_s=60, max_bytes=10**6, suffix=".mp4")
    kept, gone, never = "a" * 32, "b" * 32, "c" * 32
    files.path(kept).write_bytes(b"x" * 100)
    routes = ClipRoutes(files, b"k" * 32)
    assert routes.states([kept, gone, never], announced={kept, gone}) == {kept: "ready", gone: "expired"}
    files.path(gone).write_bytes(b"y" * 100)
    part = tmp_path / f"{never}.mp4.part"  # what a crash left half-written
    part.write_bytes(b"z" * 100)
    assert files.prune() == 0 and files.kept_bytes == 200 and part.exists()
    assert files.prune(now=time.time() + 3601) == 2 and files.kept_bytes == 0  # past keep_days
    assert not part.exists()
    assert routes.states([kept], announced={kept}) == {kept: "expired"}


def test_a_clip_starts_at_the_first_keyframe_with_a_timestamp(tmp_path: Path, clips: dict[str, Path]) -> None:
    with av.open(str(clips["red"])) as inp:
        stream = inp.streams.video[0]
        packets = [p for p in inp.demux(stream) if p.size][:60]
        assert packets[0].is_keyframe
        packets[0].pts = packets[0].dts = None  # as a camera's first packets after a connect
        out = av.open(str(tmp_path / "c.mp4"), "w", format="mp4", options={"movflags": MOVFLAGS})
        seconds = mux(out, out.add_stream_from_template(stream), packets)
        out.close()
        with pytest.raises(ValueError, match="no keyframe"):
            mux(None, None, [p for p in packets if not p.is_keyframe])
    later = next(p for p in packets[1:] if p.is_keyframe)
    assert abs(seconds - (packets[-1].pts - later.pts + packets[-1].duration) * stream.time_base) < 0.05
    with av.open(str(tmp_path / "c.mp4")) as c:
        frames = list(c.decode(video=0))
    assert frames and frames[0].key_frame and abs(frames[-1].time - (seconds - 1 / 25)) < 0.05


def test_signed_links_hold_their_path_and_expiry() -> None:
    key = b"k" * 32
    url = signed(key, "https://cctv.example.com/", "/clips/x.mp4", 2000)
    assert url.startswith("https://cctv.example.com/clips/x.mp4?expires=2000&sig=")
    q = parse_qs(urlsplit(url).query)
    assert valid(key, "/clips/x.mp4", q["expires"][0], q["sig"][0], now=1999)
    assert not valid(key, "/clips/x.mp4", q["expires"][0], q["sig"][0], now=2000)  # expired
    assert not valid(key, "/clips/y.mp4", q["expires"][0], q["sig"][0], now=0)  # another file
    assert not valid(key, "/clips/x.mp4", "2001", q["sig"][0], now=0)  # a longer life
    assert not valid(b"o" * 32, "/clips/x.mp4", q["expires"][0], q["sig"][0], now=0)
    assert not valid(key, "/clips/x.mp4", None, None, now=0)
    assert not valid(key, "/clips/x.mp4", "١٢", q["sig"][0], now=0)


def probe(target: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,profile,level,width,height,pix_fmt:format=duration", "-of", "json", target]
        if target.startswith("rtsp:") else
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,profile,level,width,height,pix_fmt:format=duration", "-of", "json", target],
        capture_output=True, text=True, timeout=30, check=True)
    data = json.loads(out.stdout)
    return {**data["streams"][0], "duration": float(data.get("format", {}).get("duration", "nan"))}


def red_from(path: Path) -> tuple[float, float, bool]:
    """(seconds into the clip the red figure first shows, the clip's last frame time, whether the
    first frame is free of red), decoding every frame."""
    first_red, last, first_clear = None, 0.0, None
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            t = float(frame.time or 0.0)
            image = np.asarray(frame.to_ndarray(format="bgr24"))
            red = colour_fraction(image, "red") > MIN_FRACTION  # as the stand-in model sees it
            if first_clear is None:
                first_clear = not red
            if red and first_red is None:
                first_red = t
            last = t
    assert first_red is not None, "no red frame in the clip"
    return first_red, last, bool(first_clear)


async def test_a_live_alert_gets_the_cameras_own_seconds_before_and_after(
        tmp_path: Path, fake_vlm: FakeVLM, receiver: Receiver) -> None:
    rtsp = RtspServer(free_port()).start()
    before, after = 3.0, 3.0
    try:
        source = await asyncio.to_thread(probe, rtsp.url())
        async with daemon(fake_vlm, receiver, [live(rtsp.url())], extra={
                "alerts": [{"type": "webhook", "url": receiver.url, "events": EVENTS}],
                "clips": {"before_seconds": before, "after_seconds": after}}) as metrics:
            await until(lambda: (metrics.registry.get_sample_value(
                "vlm_monitor_stream_up", {"stream": "cam"}) or 0) == 1, 20, "stream up")
            await asyncio.sleep(before + 2)  # the ring holds more than the clip's seconds
            await asyncio.to_thread(rtsp.send, "red")
            await until(lambda: bool(events(receiver, "clip_ready")), 30, "clip_ready")
            detected, ready = events(receiver, "target_detected")[0], events(receiver, "clip_ready")[0]
            assert ready["alert_id"] == detected["id"] and ready["target"] == RED
            assert ready["clip_url"].startswith("http://127.0.0.1:") and "clip_note" not in ready
            assert abs(ready["duration_seconds"] - (before + after)) <= 1.2, ready
            async with httpx.AsyncClient() as http:
                got = await http.get(ready["clip_url"])  # no session: the link is enough
                assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
                (tmp_path / "clip.mp4").write_bytes(got.content)
                url = urlsplit(ready["clip_url"])
                base = f"{url.scheme}://{url.netloc}{url.path}"
                q = parse_qs(url.query)
                sig = q["sig"][0]
                for bad in (base, f"{base}?expires={q['expires'][0]}&sig={sig[:-2]}AA",
                            f"{base}?expires={int(q['expires'][0]) + 1}&sig={sig}"):
                    assert (await http.get(bad)).status_code == 403, bad
                # The console's own view: the alert names its clip, served to the session too.
                listed = (await http.get(f"{url.scheme}://{url.netloc}/api/events")).json()
                alert = next(e for e in listed if e["event"] == "target_detected")
                assert alert["clip"] == f"/api/events/{detected['id']}/clip.mp4" and alert["clip_state"] == "ready"
                assert "clip_url" not in next(e for e in listed if e["event"] == "clip_ready")
                assert (await http.get(f"{url.scheme}://{url.netloc}{alert['clip']}")).content == got.content
                assert metrics.registry.get_sample_value("vlm_monitor_clips_total", {"result": "written"}) == 1
                assert (metrics.registry.get_sample_value("vlm_monitor_clip_bytes") or 0) == len(got.content)
        clip = await asyncio.to_thread(probe, str(tmp_path / "clip.mp4"))
        # The camera's own packets: the same codec parameters, not a re-encode.
        for key in ("codec_name", "profile", "level", "width", "height", "pix_fmt"):
            assert clip[key] == source[key], (key, clip, source)
        assert abs(clip["duration"] - (before + after)) <= 1.2, clip
        red_at, last, clear_first = await asyncio.to_thread(red_from, tmp_path / "clip.mp4")
        assert clear_first and last >= before + after - 1.2
        # The figure appears `before` seconds in, give or take the GOP the clip starts on and
        # the second between two samples.
        assert before - 1.5 <= red_at <= before + 1.0, red_at
    finally:
        rtsp.kill()


async def test_a_recordings_alert_gets_its_clip_cut_from_the_file(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    video = clips["red"]  # red from 5 s to 12 s
    async with daemon(fake_vlm, receiver, [{"name": "rec", "url": str(video), "targets": [RED]}], extra={
            "alerts": [{"type": "webhook", "url": receiver.url, "events": EVENTS}],
            "clips": {"before_seconds": 2, "after_seconds": 4}}) as metrics:
        await until(lambda: bool(events(receiver, "clip_ready")), 60, "clip_ready")
        ready = events(receiver, "clip_ready")[0]
        async with httpx.AsyncClient() as http:
            body = (await http.get(ready["clip_url"])).content
        assert metrics.registry.get_sample_value("vlm_monitor_clips_total", {"result": "written"}) == 1
    detected = events(receiver, "target_detected")[0]
    assert detected["first_seen_offset_seconds"] == 5.0
    out = tmp_path / "clip.mp4"
    out.write_bytes(body)
    clip, source = probe(str(out)), probe(str(video))
    for key in ("codec_name", "width", "height"):
        assert clip[key] == source[key], (key, clip, source)
    assert 5.0 <= clip["duration"] <= 6.0 + 1.0, clip  # 3 s to 9 s, from the keyframe before 3 s
    red_at, _, clear_first = red_from(out)
    assert clear_first and 1.5 <= red_at <= 2.5 + 1.0, red_at


def test_by_default_a_webhook_hears_of_the_clip_after_the_alert(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "vlm": {"base_url": fake_vlm.base_url},
        "streams": [{"name": "rec", "url": str(clips["red"]), "targets": [RED]}],
        "alerts": [{"type": "log"}, {"type": "webhook", "url": receiver.url}],  # the default events
        "server": {"listen": "127.0.0.1:0"}, "state_dir": str(tmp_path / "state")}))
    result = cli("run", "--config", str(path))
    assert result.returncode == 0, result.stderr
    kinds = [r.json()["event"] for r in receiver.received]
    assert kinds == ["target_detected", "clip_ready"], kinds
    ready = receiver.received[1].json()
    assert ready["alert_id"] == receiver.received[0].json()["id"]
    # The log sink has it too: the clip's own id and the alert's.
    logged = [line for line in json_lines(result.stdout) if line["event"] == "clip_ready"]
    assert len(logged) == 1 and logged[0]["alert_id"] == ready["alert_id"] and logged[0]["event_id"] == ready["id"]
    assert (tmp_path / "state" / "clips" / f"{ready['alert_id']}.mp4").stat().st_size > 10_000


def test_the_clip_ready_event_is_self_contained() -> None:
    from datetime import UTC, datetime

    from monitor.alerts.model import Alert
    from monitor.alerts.topics import messages

    detected = Alert.detected("door", "a red shirt", datetime(2026, 12, 2, tzinfo=UTC), 0.0, 9, "a man")
    ready = Alert.clip_ready(detected, "https://x/clips/a.mp4?expires=1&sig=s", 14.96, "ends early: why")
    assert ready.payload() == {
        "event": "clip_ready", "id": ready.id, "stream": "door", "alert_id": detected.id,
        "clip_url": "https://x/clips/a.mp4?expires=1&sig=s", "duration_seconds": 14.96,
        "target": "a red shirt", "first_seen": "2026-12-02T00:00:00.000Z", "confidence": 9,
        "description": "a man", "clip_note": "ends early: why"}
    # Home Assistant's attributes of the target carry the clip's link.
    attributes = dict((t, p) for t, p, _ in messages("vm", ready))["vm/door/a_red_shirt/attributes"]
    assert json.loads(attributes)["clip_url"] == ready.fields["clip_url"]


def test_a_streams_clip_settings_override_the_top_level_ones() -> None:
    from monitor.config import ConfigError, parse_config

    doc = {"streams": [{"name": "a", "url": "rtsp://cam/a", "targets": [RED], "clips": {"before_seconds": 2}},
                       {"name": "b", "url": "rtsp://cam/b", "targets": [RED], "clips": {"enabled": False}}],
           "clips": {"after_seconds": 20, "max_total_mb": 100}}
    settings = parse_config(yaml.safe_dump(doc), "t").stream_settings()
    a, b = settings["a"].clips, settings["b"].clips
    assert (a.enabled, a.before_seconds, a.after_seconds, a.max_total_mb) == (True, 2, 20, 100)
    assert (b.enabled, b.before_seconds, b.after_seconds) == (False, 5, 20)
    doc["clips"] = {"before_seconds": 600}
    with pytest.raises(ConfigError, match="before_seconds"):
        parse_config(yaml.safe_dump(doc), "t")
    doc["clips"] = {"keep_hours": 1}
    with pytest.raises(ConfigError, match="keep_hours"):
        parse_config(yaml.safe_dump(doc), "t")


def test_a_camera_far_over_the_bitrate_bound_keeps_it_and_its_clip_says_so(tmp_path: Path) -> None:
    import threading

    from monitor.sources.capture import LiveReader
    from monitor.sources.clips import ClipDesk, ClipDone, ClipOrder

    # 2 Mbit/s (250 KB/s) against a bound of 0.8 Mbit/s: the ring, meant for 5 s and a GOP,
    # holds what 7 s at the bound allow (700 KB): under 3 GOPs of this camera.
    server = RtspServer(free_port(), gop=25, size="1280x720", pattern="smpte", bitrate=2000).start()
    desk = ClipDesk(hold_s=5.0, max_bytes_per_s=100_000)
    reader = LiveReader(server.url(), "cam", interval=1.0, decode="keyframes", clips=desk)
    done: list[ClipDone] = []
    finished = threading.Event()
    try:
        reader.start()
        peak, deadline = 0, time.monotonic() + 30
        while time.monotonic() < deadline and (desk.ring.oldest is None or not desk.ring.short):
            peak = max(peak, desk.ring.bytes)
            time.sleep(0.05)
        for _ in range(60):  # 3 s more of watching the bound hold
            peak = max(peak, desk.ring.bytes)
            time.sleep(0.05)
        assert desk.ring.short and 0 < peak <= 700_000, peak
        now = time.time()
        desk.order(ClipOrder("c" * 32, now - 5, now + 1, str(tmp_path / "c.mp4")),
                   lambda d: (done.append(d), finished.set()))
        assert finished.wait(20)
    finally:
        reader.stop()
        reader.join(10)
        server.kill()
    clip = done[0]
    assert clip.ok, clip
    # It starts late (the bound kept less than 5 s), is cut at its own bound, and says both.
    assert clip.began - now > -4.5 and "late: the camera sent more than clips hold" in clip.note, clip
    assert "cut at 0.8 MB" in clip.note and clip.bytes <= 800_000, clip


def test_a_full_disk_is_said_and_leaves_no_part_file(tmp_path: Path, clips: dict[str, Path]) -> None:
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    out = tmp_path / "alert.mp4"
    (tmp_path / "alert.mp4.part").symlink_to("/dev/full")
    done = cut(str(clips["red"]), ClipOrder("alert", 3.0, 9.0, str(out)))
    assert not done.ok and done.note == "No space left on device", done
    assert not out.exists() and not (tmp_path / "alert.mp4.part").exists()


def test_a_clip_that_cannot_be_written_costs_the_clip_never_the_alert(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    """The daemon may write no file over 300 kB (RLIMIT_FSIZE: each write past it fails, as on a
    full disk): the outbox and the snapshot fit, the clip does not."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "vlm": {"base_url": fake_vlm.base_url},
        "streams": [{"name": "rec", "url": str(clips["red"]), "targets": [RED]}],
        "alerts": [{"type": "webhook", "url": receiver.url, "events": EVENTS}],
        "server": {"listen": "127.0.0.1:0"}, "state_dir": str(tmp_path / "state")}))
    limit = 300_000

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    result = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=90, preexec_fn=small_files)
    assert result.returncode == 0, result.stderr
    kinds = [r.json()["event"] for r in receiver.received]
    assert kinds == ["target_detected"], kinds  # delivered, and no clip_ready for a clip not written
    failed = [line for line in json_lines(result.stdout) if line["event"] == "no clip for this alert"]
    assert len(failed) == 1 and failed[0]["reason"] == "File too large", failed
    assert failed[0]["alert_id"] == receiver.received[0].json()["id"]
    assert not list((tmp_path / "state" / "clips").iterdir())  # no part file left behind
