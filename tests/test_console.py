"""The console's API against the running daemon (in-process), the stand-in model and real files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import structlog
import yaml

from monitor.app import Daemon
from monitor.config import parse_config
from monitor.metrics import Metrics
from monitor.passwords import hash_password
from tests.clips import make_clip
from tests.conftest import cli
from tests.fakes.vllm import FakeVLM

RED = "a person wearing a red shirt"
PASSWORD = "correct horse battery"


def config_doc(tmp_path: Path, fake: FakeVLM, streams: list[dict[str, Any]], **extra: Any) -> str:
    return yaml.safe_dump({
        "vlm": {"base_url": fake.base_url, "max_concurrency": 4},
        "streams": streams,
        "server": {"listen": "127.0.0.1:0", **extra.pop("server", {})},
        "state_dir": str(tmp_path / "state"),
        **extra,
    })


@asynccontextmanager
async def running(doc: str) -> AsyncIterator[tuple[Daemon, Metrics, httpx.AsyncClient]]:
    metrics = Metrics()
    daemon = Daemon(parse_config(doc, "test"), metrics)
    shutdown = asyncio.Event()
    task = asyncio.create_task(daemon.run(shutdown))
    started = asyncio.create_task(daemon.started.wait())
    await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what stopped it
    assert daemon.http is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http.port}", timeout=10) as http:
        try:
            yield daemon, metrics, http
        finally:
            shutdown.set()
            await task


async def until(check: Callable[[], Awaitable[Any]], within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.1)


async def session(http: httpx.AsyncClient) -> dict[str, str]:
    data = (await http.get("/api/session")).json()
    return {"X-CSRF-Token": data["csrf_token"]}


async def test_cameras_events_and_feedback_survive_a_restart(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    doc = config_doc(tmp_path, fake_vlm, [
        {"name": "yard", "url": str(clips["red"]), "targets": [RED], "realtime": True}])
    async with running(doc) as (_, metrics, http):
        page = await http.get("/")
        assert page.status_code == 200 and "/static/app.js" in page.text
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        assert (await http.get("/static/app.js")).status_code == 200
        assert (await http.get("/static/..%2Fweb.py")).status_code == 404

        async def red_seen() -> Any:
            cams = (await http.get("/api/cameras")).json()
            return cams[0]["targets"][0]["present"] and cams[0]

        cam = await until(red_seen)
        assert cam["name"] == "yard" and cam["up"] is True
        target = cam["targets"][0]
        assert target["target"] == RED and target["confidence"] >= 7 and "red" in target["description"]
        assert target["at"] and target["asked"] is True
        frame = await http.get(f"/api/cameras/yard/frame.jpg?f={cam['frame']}")
        assert frame.headers["Content-Type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[1] == 644  # the JPEG the model was sent, as it was sent
        samples = (await http.get("/api/cameras/yard/samples?limit=500")).json()["samples"]
        assert samples[0]["seq"] > samples[-1]["seq"]  # newest first
        assert {s["outcome"] for s in samples} <= {"asked", "reused", "dropped"}
        asked = next(s for s in samples if s["thumb"])
        thumb = await http.get(f"/api/cameras/yard/thumbs/{asked['seq']}.jpg")
        assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
        assert (await http.get("/api/cameras/nope/samples")).status_code == 404

        async def alerted() -> Any:
            events = (await http.get("/api/events?stream=yard&limit=10")).json()
            return [e for e in events if e["event"] == "target_detected"]

        alert = (await until(alerted))[0]
        assert alert["target"] == RED and alert["first_seen"] and alert["feedback"] is None
        assert alert["deliveries"][0]["sink"] == "log"
        snap = await http.get(alert["snapshot"])
        assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8"
        assert (await http.get("/api/events/../../etc/passwd/snapshot.jpg")).status_code == 404

        url = f"/api/events/{alert['id']}/feedback"
        no_token = await http.post(url, json={"verdict": "false_alarm"})
        assert no_token.status_code == 403  # CSRF: the token is required even on loopback
        odd = await http.post(url, json={"verdict": "false_alarm"},
                              headers={b"X-CSRF-Token": "é✓".encode()})  # not ASCII: no crash
        assert odd.status_code == 403
        headers = await session(http)
        assert (await http.post(url, json={"verdict": "maybe"}, headers=headers)).status_code == 400
        for verdict in ("false_alarm", "right", "false_alarm", "false_alarm"):  # changing one's mind
            judged = await http.post(url, json={"verdict": verdict}, headers=headers)
            assert judged.status_code == 200, judged.text

        def judged_as(verdict: str) -> float | None:
            return metrics.registry.get_sample_value(
                "vlm_monitor_alerts_judged", {"stream": "yard", "target": RED, "verdict": verdict})
        assert judged_as("false_alarm") == 1 and judged_as("right") == 0  # one alert, judged once
        events = (await http.get(f"/api/events?target={RED}")).json()
        assert next(e for e in events if e["id"] == alert["id"])["feedback"] == "false_alarm"

    async with running(doc) as (_, metrics, http):
        events = (await http.get("/api/events?event=target_detected")).json()
        assert next(e for e in events if e["id"] == alert["id"])["feedback"] == "false_alarm"
        text = (await http.get("/metrics")).text
        assert ('vlm_monitor_alerts_judged{stream="yard",target="a person wearing a red shirt",'
                'verdict="false_alarm"} 1.0') in text


async def test_login_sessions_csrf_and_throttle(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    doc = config_doc(tmp_path, fake_vlm, [{"name": "yard", "url": str(clips["empty"]), "targets": [RED],
                                           "realtime": True}],
                     server={"users": [{"name": "ops", "password_hash": hash_password(PASSWORD, n=2**10)}]})
    async with running(doc) as (_, _, http):
        assert (await http.get("/api/cameras")).status_code == 401
        assert (await http.get("/api/events")).status_code == 401
        anonymous = await http.get("/api/session")
        assert anonymous.status_code == 401 and anonymous.json()["login_required"] is True
        assert (await http.get("/metrics")).status_code == 200  # unchanged: no login
        wrong = await http.post("/api/login", json={"name": "ops", "password": "guess"})
        assert wrong.status_code == 401 and "vlm_session" not in wrong.cookies
        assert (await http.post("/api/login", json={"name": "nobody", "password": "x"})).status_code == 401
        good = await http.post("/api/login", json={"name": "ops", "password": PASSWORD})
        assert good.status_code == 200
        token = good.json()["csrf_token"]
        assert (await http.get("/api/cameras")).json()[0]["name"] == "yard"
        assert (await http.post("/api/logout")).status_code == 403  # no token
        forged = http.cookies["vlm_session"][:-3] + "AAA"
        async with httpx.AsyncClient(base_url=str(http.base_url), cookies={"vlm_session": forged}) as other:
            assert (await other.get("/api/cameras")).status_code == 401
        assert (await http.post("/api/logout", headers={"X-CSRF-Token": token})).status_code == 200
        http.cookies.clear()
        assert (await http.get("/api/cameras")).status_code == 401
        # The login above forgot the earlier failures; three are free, then the next attempt waits.
        for _ in range(3):
            assert (await http.post("/api/login", json={"name": "ops", "password": "x"})).status_code == 401
        slowed = await http.post("/api/login", json={"name": "ops", "password": PASSWORD})
        assert slowed.status_code == 429 and int(slowed.headers["Retry-After"]) >= 1


async def test_behind_https_the_cookie_is_secure_and_images_are_never_cached(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    doc = config_doc(tmp_path, fake_vlm, [{"name": "yard", "url": str(clips["red"]), "targets": [RED],
                                           "realtime": True}],
                     server={"users": [{"name": "ops", "password_hash": hash_password(PASSWORD, n=2**10)}],
                             "public_url": "https://cameras.example.org/"})
    async with running(doc) as (_, _, http):
        good = await http.post("/api/login", json={"name": "ops", "password": PASSWORD})
        cookie = good.headers["set-cookie"]
        assert good.status_code == 200 and "Secure" in cookie and "HttpOnly" in cookie
        assert good.headers["x-content-type-options"] == "nosniff"  # the API too, not only pages
        # A client sends a Secure cookie only over TLS (the proxy's): here, by hand.
        own = {"Cookie": f"vlm_session={good.cookies['vlm_session']}"}
        http.cookies.clear()
        cameras = await http.get("/api/cameras", headers=own)
        assert cameras.headers["x-content-type-options"] == "nosniff"

        async def framed() -> Any:
            cams = (await http.get("/api/cameras", headers=own)).json()
            return cams[0]["frame"] is not None
        await until(framed)
        frame = await http.get("/api/cameras/yard/frame.jpg", headers=own)
        assert frame.status_code == 200 and frame.headers["cache-control"] == "no-store"


def test_off_loopback_without_users_refuses_to_start(tmp_path: Path, fake_vlm: FakeVLM,
                                                     clips: dict[str, Path]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_doc(tmp_path, fake_vlm, [{"name": "a", "url": str(clips["empty"]), "targets": [RED]}],
                              server={"listen": "0.0.0.0:0"}))
    for command in ("run", "check-config"):  # a config error: check-config sees it too
        args = ["--config", str(cfg)] if command == "run" else [str(cfg)]
        result = cli(command, *args)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "no server.users" in result.stderr, result.stderr


def test_hash_password_reads_stdin_and_check_config_rejects_a_bad_hash(tmp_path: Path) -> None:
    result = cli("hash-password", input="a long enough password\n")
    assert result.returncode == 0 and result.stdout.startswith("scrypt$")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"streams": [{"name": "a", "url": "/x.mp4", "targets": ["x"]}],
                                   "server": {"users": [{"name": "ops", "password_hash": "plaintext"}]}}))
    bad = cli("check-config", str(cfg))
    assert bad.returncode == 2 and "server.users[0].password_hash" in bad.stderr
    assert "plaintext" not in bad.stderr


async def scan_upload(http: httpx.AsyncClient, headers: dict[str, str], name: str, content: bytes,
                      targets: str) -> httpx.Response:
    return await http.post("/api/scans", headers=headers, files={"video": (name, content, "video/mp4")},
                           data={"targets": targets})


async def chunked_form(video: bytes) -> AsyncIterator[bytes]:
    yield (b'--xyz\r\nContent-Disposition: form-data; name="targets"\r\n\r\nred\r\n'
           b'--xyz\r\nContent-Disposition: form-data; name="video"; filename="big.mp4"\r\n'
           b"Content-Type: video/mp4\r\n\r\n")
    for i in range(0, len(video), 1 << 16):
        yield video[i:i + (1 << 16)]
    yield b"\r\n--xyz--\r\n"


async def test_scans_upload_progress_first_detection_and_bad_uploads(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    doc = config_doc(tmp_path, fake_vlm, [{"name": "a", "url": str(clips["empty"]), "targets": [RED],
                                           "realtime": True}],
                     console={"upload_max_mb": 8})
    async with running(doc) as (_, _, http):
        headers = await session(http)
        video = clips["red"].read_bytes()
        assert len(video) < 8e6
        started = await scan_upload(http, headers, "../../escape.mp4", video, f"{RED}\na blue car")
        assert started.status_code == 202, started.text
        scan_id = started.json()["id"]
        scans_dir = tmp_path / "state" / "scans"
        assert not (tmp_path / "escape.mp4").exists() and not (scans_dir.parent / "escape.mp4").exists()

        progress: list[float] = []

        async def done() -> Any:
            s = (await http.get(f"/api/scans/{scan_id}")).json()
            progress.append(s["progress"])
            return s["status"] not in ("queued", "running") and s

        result = await until(done, within=60)
        assert result["status"] == "done", result
        assert result["name"] == "escape.mp4"
        assert result["first_detection_seconds"] == 5.0
        assert result["first_detection_by_target"] == {RED: 5.0}
        assert len(result["samples"]) == 20
        s5 = result["samples"][5]
        assert s5["second"] == 5.0 and s5["verdicts"][0]["match"] and not s5["verdicts"][1]["match"]
        assert progress == sorted(progress) and result["progress"] == 1.0
        later = (await http.get(f"/api/scans/{scan_id}?since=18")).json()["samples"]
        assert [s["second"] for s in later] == [18.0, 19.0]
        thumb = await http.get(f"/api/scans/{scan_id}/thumbs/5.jpg")
        assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
        assert not (scans_dir / scan_id / "upload.video").exists()  # the upload is gone once done

        too_big = await scan_upload(http, headers, "big.mp4", video + b"\0" * 3_000_000, RED)
        assert too_big.status_code == 413 and "8 MB" in too_big.json()["error"]
        chunked = await http.post(  # no Content-Length: stopped while it streams in
            "/api/scans", headers={**headers, "Content-Type": "multipart/form-data; boundary=xyz"},
            content=chunked_form(video + b"\0" * 3_000_000))
        assert chunked.status_code == 413, chunked.text
        text = await scan_upload(http, headers, "notes.mp4", b"hello, this is text\n" * 100, RED)
        assert text.status_code == 400 and "notes.mp4: not a video" in text.json()["error"]
        no_target = await scan_upload(http, headers, "x.mp4", video, "  ")
        assert no_target.status_code == 400 and "target" in no_target.json()["error"]
        no_csrf = await scan_upload(http, {}, "x.mp4", video, RED)
        assert no_csrf.status_code == 403
        assert sorted(p.name for p in scans_dir.iterdir()) == [scan_id]  # refused uploads left nothing
        listed = (await http.get("/api/scans")).json()
        assert [s["id"] for s in listed] == [scan_id] and "samples" not in listed[0]

    async with running(doc) as (_, _, http):
        kept = (await http.get(f"/api/scans/{scan_id}")).json()
        assert kept["status"] == "done" and kept["first_detection_seconds"] == 5.0


@pytest.mark.parametrize("stop_at", [1])
async def test_a_scan_can_be_stopped(tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM,
                                     stop_at: int) -> None:
    fake_vlm.latency = 0.2
    doc = config_doc(tmp_path, fake_vlm, [{"name": "a", "url": str(clips["empty"]), "targets": [RED],
                                           "realtime": True}], console={"scan_concurrency": 1})
    async with running(doc) as (_, _, http):
        headers = await session(http)
        scan_id = (await scan_upload(http, headers, "r.mp4", clips["red"].read_bytes(), RED)).json()["id"]

        async def some() -> Any:
            return len((await http.get(f"/api/scans/{scan_id}")).json()["samples"]) >= stop_at

        await until(some)
        assert (await http.post(f"/api/scans/{scan_id}/stop", headers=headers)).status_code == 200

        async def stopped() -> Any:
            s = (await http.get(f"/api/scans/{scan_id}")).json()
            return s["status"] == "stopped" and s

        s = await until(stopped)
        assert len(s["samples"]) < 20 and s["progress"] < 1


async def test_a_scan_the_model_cannot_judge_fails_with_the_reason(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    doc = config_doc(tmp_path, fake_vlm, [{"name": "a", "url": str(clips["empty"]), "targets": [RED],
                                           "realtime": True}])
    async with running(doc) as (_, _, http):
        headers = await session(http)
        fake_vlm.mode = "html"  # a proxy's error page, with 200, for every request
        scan_id = (await scan_upload(http, headers, "e.mp4", clips["empty"].read_bytes(), RED)).json()["id"]

        async def finished() -> Any:
            s = (await http.get(f"/api/scans/{scan_id}")).json()
            return s["status"] not in ("queued", "running") and s

        s = await until(finished, within=60)
        assert s["status"] == "failed" and "could judge no sample" in s["error"], s
        too_many = await http.post("/api/scans", headers=headers,
                                   files={"video": ("e.mp4", b"x", "video/mp4")},
                                   data={"targets": "\n".join(f"t{i}" for i in range(9))})
        assert too_many.status_code == 400 and "at most 8 targets" in too_many.json()["error"]


async def test_a_scan_takes_only_model_slots_the_cameras_leave_free(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    """One model slot, a camera that needs it a third of the time, and a scan that wants it all:
    the camera keeps every sample, the scan gets the rest."""
    fake_vlm.latency = 0.3
    doc = config_doc(tmp_path, fake_vlm, [{"name": "cam", "url": str(clips["red"]), "targets": [RED],
                                           "realtime": True}], console={"scan_concurrency": 4})
    doc = doc.replace("max_concurrency: 4", "max_concurrency: 1")
    async with running(doc) as (_, metrics, http):
        headers = await session(http)
        scan_id = (await scan_upload(http, headers, "r.mp4", clips["red"].read_bytes(), RED)).json()["id"]
        lags = []

        def value(name: str) -> float:
            return metrics.registry.get_sample_value(f"vlm_monitor_{name}", {"stream": "cam"}) or 0.0

        while (scan := (await http.get(f"/api/scans/{scan_id}")).json())["status"] in ("queued", "running"):
            lags.append(value("sampling_intervals_total") - value("frames_analysed_total")
                        - value("verdicts_reused_total"))
            await asyncio.sleep(0.2)
        assert scan["status"] == "done" and len(scan["samples"]) == 20
        assert max(lags) <= 2, lags  # the sample in flight, and the one just taken
        ages = [metrics.registry.get_sample_value(f"vlm_monitor_frame_age_seconds_{k}", {"stream": "cam"})
                for k in ("sum", "count")]
        assert ages[0] / ages[1] < 0.9, ages  # its own 0.3 s and at most one scan request (without: 1.6)


_HASHES: dict[str, str] = {}  # password -> its hash, made once: a restart reads the same config


def _with_users(tmp_path: Path, fake: FakeVLM, clip: Path, users: dict[str, str], **server: Any) -> str:
    hashes = {p: _HASHES.setdefault(p, hash_password(p, n=2**10)) for p in users.values()}
    # Real time: the daemon runs while the test does (it stops when its last stream ends).
    return config_doc(tmp_path, fake, [{"name": "yard", "url": str(clip), "targets": [RED], "realtime": True}],
                      server={"users": [{"name": n, "password_hash": hashes[p]} for n, p in users.items()],
                              **server})


async def test_sessions_end_at_logout_removal_and_password_change_across_restarts(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    clip = clips["empty"]
    both = {"ops": PASSWORD, "boss": "another long password"}
    copies: dict[str, str] = {}
    async with running(_with_users(tmp_path, fake_vlm, clip, both)) as (_, _, http):
        for name, password in both.items():
            login = await http.post("/api/login", json={"name": name, "password": password})
            copies[name] = login.cookies["vlm_session"]
        assert http.cookies["vlm_session"] == copies["boss"]
        token = (await http.get("/api/session")).json()["csrf_token"]
        assert (await http.post("/api/logout", headers={"X-CSRF-Token": token})).status_code == 200
        async with httpx.AsyncClient(base_url=str(http.base_url)) as thief:
            thief.cookies.set("vlm_session", copies["boss"])  # a copy kept from before the logout
            assert (await thief.get("/api/session")).status_code == 401
            assert (await thief.get("/api/cameras")).status_code == 401
            thief.cookies.set("vlm_session", copies["ops"])
            assert (await thief.get("/api/session")).json()["user"] == "ops"

    async def user(cookie: str) -> Any:
        async with httpx.AsyncClient(base_url=str(http.base_url)) as other:
            other.cookies.set("vlm_session", cookie)
            answer = await other.get("/api/session")
            return answer.json()["user"] if answer.status_code == 200 else answer.status_code

    # A restart does not bring the logged-out session back; the other one lives on.
    async with running(_with_users(tmp_path, fake_vlm, clip, both)) as (_, _, http):
        assert await user(copies["boss"]) == 401 and await user(copies["ops"]) == "ops"
    # ops's password changed: ops's sessions are void.
    changed = {"ops": "a brand new password", "boss": both["boss"]}
    async with running(_with_users(tmp_path, fake_vlm, clip, changed)) as (_, _, http):
        assert await user(copies["ops"]) == 401
        fresh = await http.post("/api/login", json={"name": "ops", "password": changed["ops"]})
        copies["ops"] = fresh.cookies["vlm_session"]
        assert await user(copies["ops"]) == "ops"
    # ops removed from server.users: so are ops's sessions.
    async with running(_with_users(tmp_path, fake_vlm, clip, {"boss": both["boss"]})) as (_, _, http):
        assert await user(copies["ops"]) == 401


async def test_a_login_flood_is_refused_unhashed_and_spares_others_behind_the_proxy(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    doc = _with_users(tmp_path, fake_vlm, clips["empty"], {"ops": PASSWORD}, trusted_proxies=["127.0.0.1/32"])
    attacker = {"X-Forwarded-For": "198.51.100.1, 203.0.113.66"}  # the first hop is theirs to forge
    async with running(doc) as (_, _, http):
        flood = await asyncio.gather(*[
            http.post("/api/login", json={"name": "ops", "password": f"guess {i}"}, headers=attacker)
            for i in range(60)])
        codes = [r.status_code for r in flood]
        # Attempts in flight count against the throttle: only the three free ones were hashed.
        assert codes.count(401) <= 3 and codes.count(429) >= 57, codes
        assert all(int(r.headers["Retry-After"]) >= 1 for r in flood if r.status_code == 429)
        # Behind the same proxy, someone else logs in at once.
        mine = await http.post("/api/login", json={"name": "ops", "password": PASSWORD},
                               headers={"X-Forwarded-For": "203.0.113.7"})
        assert mine.status_code == 200
        still = await http.post("/api/login", json={"name": "ops", "password": PASSWORD}, headers=attacker)
        assert still.status_code == 429


async def test_cross_site_and_malformed_logins_are_one_line_refusals(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    doc = _with_users(tmp_path, fake_vlm, clips["empty"], {"ops": PASSWORD})
    async with running(doc) as (daemon, _, http):
        # Login CSRF: a form on another site posting text/plain.
        forged = await http.post("/api/login", content=f'{{"name":"ops","password":"{PASSWORD}"}}',
                                 headers={"Origin": "http://evil.example", "Content-Type": "text/plain"})
        assert forged.status_code == 403 and "vlm_session" not in forged.cookies
        broken = await http.post("/api/login", json={"name": "ops", "password": "x"},
                                 headers={"Origin": "http://[::1"})  # not even a URL: 403, not 500
        assert broken.status_code == 403
        own = f"http://127.0.0.1:{daemon.http.port if daemon.http else 0}"
        deep = await http.post("/api/login", content="[" * 50_000, headers={"Origin": own})
        assert deep.status_code == 400 and "JSON" in deep.json()["error"]
        surrogate = await http.post("/api/login", content='{"name": "ops", "password": "\\ud800"}',
                                    headers={"Content-Type": "application/json"})
        assert surrogate.status_code == 400
        good = await http.post("/api/login", json={"name": "ops", "password": PASSWORD}, headers={"Origin": own})
        assert good.status_code == 200


async def _slow_post(port: int, path: str, declared: int, every: float,
                     headers: dict[str, str]) -> tuple[str, float]:
    """A POST that declares ``declared`` bytes and sends one every ``every`` s: the status
    line it got, and after how long."""
    began = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        more = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                     f"{more}Content-Length: {declared}\r\n\r\n".encode())
        await writer.drain()
        status = asyncio.ensure_future(reader.readline())
        while not status.done():
            writer.write(b" ")
            await writer.drain()
            await asyncio.wait([status], timeout=every)
        return status.result().decode().strip(), time.monotonic() - began
    finally:
        writer.close()


async def test_a_slow_body_is_cut_off_and_one_client_holds_few_requests(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.console import reading, web

    monkeypatch.setattr(reading, "GRACE_S", 2.0)
    monkeypatch.setattr(reading, "MIN_RATE", 100)
    monkeypatch.setattr(web, "PER_CLIENT", 8)
    doc = _with_users(tmp_path, fake_vlm, clips["red"], {"ops": PASSWORD})
    async with running(doc) as (daemon, _, http):
        assert daemon.http is not None
        port = daemon.http.port
        login = await http.post("/api/login", json={"name": "ops", "password": PASSWORD})
        own = {"Cookie": f"vlm_session={login.cookies['vlm_session']}",
               "X-CSRF-Token": login.json()["csrf_token"]}
        feedback = "/api/events/" + "0" * 32 + "/feedback"  # reads its body before anything else
        # A byte every 0.2 s of a 100 kB body: 408 once the grace and the pace run out.
        line, took = await _slow_post(port, feedback, 100_000, 0.2, own)
        assert line == "HTTP/1.1 408 Request Timeout" and took < 10, (line, took)
        # Twelve at once from one address: eight are held (until their pace runs out), the
        # rest refused at once; /healthz answers throughout.
        slow = [asyncio.ensure_future(_slow_post(port, feedback, 100_000, 0.5, own)) for _ in range(12)]
        refused = [r for r in await asyncio.gather(*slow) if r[0].startswith("HTTP/1.1 429")]
        assert len(refused) == 4 and all(took < 1.5 for _, took in refused), refused
        assert (await http.get("/healthz")).status_code == 200


async def test_one_address_holds_few_connections_and_others_are_served(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sockets that send nothing, from one address (127.0.0.2): past the cap each is closed
    as it is accepted; another address (127.0.0.1) is served throughout; the refusals are
    one log line, not one each; once they close, the address is served again."""
    from monitor import http as http_module

    monkeypatch.setattr(http_module, "PER_ADDRESS", 10)
    doc = config_doc(tmp_path, fake_vlm, [{"name": "a", "url": str(clips["red"]), "targets": [RED],
                                           "realtime": True}])
    with structlog.testing.capture_logs() as logged:
        async with running(doc) as (daemon, _, http):
            assert daemon.http is not None
            port = daemon.http.port

            async def idle() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                return await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
            async def ended(reader: asyncio.StreamReader) -> bool:
                try:
                    return await asyncio.wait_for(reader.read(), 1.0) == b""  # closed by the server
                except TimeoutError:
                    return False  # still open, waiting for a request

            held = [await idle() for _ in range(25)]
            closed = sum(await asyncio.gather(*(ended(reader) for reader, _ in held)))
            assert closed == 15, closed
            assert (await http.get("/healthz")).status_code == 200  # from 127.0.0.1
            for _, writer in held:
                writer.close()
            await asyncio.sleep(0.2)
            reader, writer = await idle()
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 200")
            writer.close()
    refused = [e for e in logged if e["event"] == "connection refused: too many at once from one address"]
    assert len(refused) == 1 and refused[0]["address"] == "127.0.0.2", refused


async def test_uploads_at_once_never_pass_the_queue_bound_nor_the_pixel_limit(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    doc = config_doc(tmp_path, fake_vlm, [{"name": "a", "url": str(clips["red"]), "targets": [RED],
                                           "realtime": True}], console={"max_upload_pixels": 320 * 240})
    video = make_clip(tmp_path / "small.mp4", red=None, seconds=3.0, size=(320, 240)).read_bytes()
    async with running(doc) as (_, _, http):
        headers = await session(http)
        big = await scan_upload(http, headers, "4k.mp4", clips["empty"].read_bytes(), "red")
        assert big.status_code == 400 and "its frames are 1280x720" in big.json()["error"]
        answers = await asyncio.gather(*[scan_upload(http, headers, f"{i}.mp4", video, "red") for i in range(12)])
        codes = [a.status_code for a in answers]
        assert codes.count(202) == 5 and codes.count(429) == 7, codes  # MAX_QUEUED_SCANS


async def test_an_open_console_answers_only_to_its_own_names(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    doc = config_doc(tmp_path, fake_vlm, [{"name": "yard", "url": str(clips["red"]), "targets": [RED],
                                           "realtime": True}])
    async with running(doc) as (daemon, _, http):
        port = daemon.http.port if daemon.http else 0
        for host in ("127.0.0.1", f"127.0.0.1:{port}", "localhost", "[::1]", f"[::1]:{port}"):
            assert (await http.get("/api/session", headers={"Host": host})).status_code == 200, host
        # DNS rebinding: another site's name, now pointing here, reads nothing, /metrics included.
        for path in ("/api/cameras", "/metrics", "/"):
            answer = await http.get(path, headers={"Host": f"rebound.example:{port}"})
            assert answer.status_code == 403, path
