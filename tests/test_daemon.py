"""``vlm-monitor run`` end to end, and the Daemon in-process for what needs a closer look."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import yaml

from monitor.app import Daemon
from monitor.config import parse_config
from monitor.metrics import Metrics
from tests.conftest import Receiver, cli, free_port, json_lines, start_cli
from tests.fakes.vllm import FakeVLM

RED = "a person wearing a red shirt"


def write_config(path: Path, fake_url: str, streams: list[dict[str, Any]], **extra: Any) -> Path:
    doc: dict[str, Any] = {
        "vlm": {"base_url": fake_url, "max_concurrency": 4},
        "streams": streams,
        "alerts": [{"type": "log"}],
        "server": {"listen": "127.0.0.1:0"},
        "shutdown_grace_seconds": 5,
        "state_dir": str(path.parent / "state"),
        "clips": {"enabled": False},  # these tests count deliveries of the alerts themselves
        **extra,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_run_delivers_one_signed_alert_and_exits(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", fake_vlm.base_url,
        [{"name": "front-door", "url": str(clips["red"]), "targets": [RED, "a blue car"]}],
        alerts=[{"type": "log"}, {"type": "webhook", "url": receiver.url, "secret": "${HOOK_SECRET}"}])
    result = cli("run", "--config", str(cfg), env={"HOOK_SECRET": "topsecret"})
    assert result.returncode == 0, result.stderr + result.stdout

    assert len(receiver.received) == 1
    hook = receiver.received[0]
    body = hook.json()
    assert body["event"] == "target_detected"
    assert body["stream"] == "front-door" and body["target"] == RED
    assert body["first_seen_offset_seconds"] == 5
    assert body["confidence"] >= 7 and "red" in body["description"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["first_seen"])
    expected = "sha256=" + hmac.new(b"topsecret", hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["X-Signature-256"] == expected
    assert hook.headers["Idempotency-Key"] == body["id"]
    assert hook.headers["Content-Type"] == "application/json"

    logs = json_lines(result.stdout)
    stream_events = {"stream starting", "target detected", "target_detected", "stream finished"}
    lines = [line for line in logs if line["event"] in stream_events]
    assert {line["event"] for line in lines} == stream_events
    assert all(line["stream"] == "front-door" for line in lines)
    assert "topsecret" not in result.stdout + result.stderr
    # Every sampled second of the 20 s clip was asked about, both targets in one request.
    assert len(fake_vlm.requests) == 20
    assert all(r.targets == [RED, "a blue car"] for r in fake_vlm.requests)


def test_inflight_requests_stay_within_max_concurrency(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    fake_vlm.latency = 0.03
    streams = [{"name": f"cam{i}", "url": str(clips["red"]), "targets": [RED]} for i in range(3)]
    streams[2]["max_pixels"] = 896 * 504  # a camera of its own size
    cfg = write_config(tmp_path / "c.yaml", fake_vlm.base_url, streams,
                       vlm={"base_url": fake_vlm.base_url, "max_concurrency": 2},
                       alerts=[{"type": "webhook", "url": receiver.url}])
    result = cli("run", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert fake_vlm.max_inflight == 2
    assert {(r.width, r.height) for r in fake_vlm.requests} == {(644, 364), (896, 504)}
    assert sorted(r.json()["stream"] for r in receiver.received) == ["cam0", "cam1", "cam2"]
    assert {r.json()["first_seen_offset_seconds"] for r in receiver.received} == {5}


def test_wrong_model_name_is_a_clear_error_at_start(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    cfg = write_config(tmp_path / "c.yaml", fake_vlm.base_url,
                       [{"name": "a", "url": str(clips["red"]), "targets": [RED]}],
                       vlm={"base_url": fake_vlm.base_url, "model": "Qwen/Typo"})
    result = cli("run", "--config", str(cfg))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "vlm-monitor: error: model server: the server does not serve model 'Qwen/Typo' "
        "(it serves: Qwen/Qwen2.5-VL-7B-Instruct)"]


def test_missing_file_fails_that_stream_only(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    cfg = write_config(tmp_path / "c.yaml", fake_vlm.base_url, [
        {"name": "gone", "url": str(tmp_path / "gone.mp4"), "targets": [RED]},
        {"name": "good", "url": str(clips["red"]), "targets": [RED]},
    ], alerts=[{"type": "webhook", "url": receiver.url}])
    result = cli("run", "--config", str(cfg))
    assert result.returncode == 1
    assert [r.json()["stream"] for r in receiver.received] == ["good"]
    failed = [line for line in json_lines(result.stdout) if line["event"] == "stream failed"]
    assert failed and failed[0]["stream"] == "gone" and "no such file" in failed[0]["error"]
    assert "Traceback" not in result.stderr


def test_sigterm_stops_gracefully_and_secrets_stay_hidden(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    fake_vlm.latency = 0.2
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", fake_vlm.base_url, [
        {"name": "file", "url": str(clips["red"]), "targets": [RED], "realtime": True},
        # A camera that is down: its password must never be printed.
        {"name": "cam", "url": "rtsp://admin:${CAM_PASS}@127.0.0.1:" + str(free_port()) + "/live",
         "targets": [RED]},
    ], vlm={"base_url": fake_vlm.base_url, "api_key": "${VLM_API_KEY}"},
        alerts=[{"type": "webhook", "url": receiver.url, "secret": "hook-secret-value"}],
        server={"listen": f"127.0.0.1:{port}"})
    env = {"CAM_PASS": "cam-password-value", "VLM_API_KEY": "api-key-value"}
    proc = start_cli("run", "--config", str(cfg), env=env)
    try:
        assert receiver.got.wait(30), "no alert arrived"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    for secret in env.values():
        assert secret not in out + err + metrics
    logs = json_lines(out)
    assert any(line["event"] == "stopping" for line in logs)
    down = [line for line in logs if line["event"] == "stream down"]
    assert down and down[0]["stream"] == "cam"
    assert 'vlm_monitor_stream_up{stream="cam"} 0.0' in metrics
    assert 'vlm_monitor_stream_up{stream="file"} 1.0' in metrics


def metric_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}


async def test_metrics_health_and_readiness_while_running(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    fake_vlm.latency = 0.05
    config = parse_config(yaml.safe_dump({
        "vlm": {"base_url": fake_vlm.base_url},
        "streams": [{"name": "front-door", "url": str(clips["red"]), "targets": [RED], "realtime": True}],
        "server": {"listen": "127.0.0.1:0"},
        "state_dir": str(tmp_path),
    }), "test")
    metrics = Metrics()
    daemon = Daemon(config, metrics)
    shutdown = asyncio.Event()
    task = asyncio.create_task(daemon.run(shutdown))
    async with httpx.AsyncClient(timeout=5) as http:
        await daemon.started.wait()
        assert daemon.http is not None
        base = f"http://127.0.0.1:{daemon.http.port}"
        assert (await http.get(f"{base}/healthz")).status_code == 200
        while (await http.get(f"{base}/readyz")).status_code != 200:
            await asyncio.sleep(0.05)
        while not metrics.registry.get_sample_value(
                "vlm_monitor_matches_total", {"stream": "front-door", "target": RED}):
            await asyncio.sleep(0.1)
        text = (await http.get(f"{base}/metrics")).text
    shutdown.set()
    assert await task == 0
    for name in ["frames_sampled_total", "frames_dropped_total", "stream_up", "stream_reconnects_total",
                 "vlm_requests_total", "vlm_request_duration_seconds_bucket", "vlm_inflight_requests",
                 "vlm_tokens_total", "matches_total", "alerts_total", "alert_deliveries_total",
                 "build_info"]:
        assert f"vlm_monitor_{name}" in metric_names(text), name
    assert 'vlm_monitor_stream_up{stream="front-door"} 1.0' in text
    assert 'vlm_monitor_vlm_requests_total{outcome="ok"}' in text


async def test_model_server_down_at_start_is_not_ready_then_recovers(
        tmp_path: Path, clips: dict[str, Path], receiver: Receiver) -> None:
    port = free_port()
    config = parse_config(yaml.safe_dump({
        "vlm": {"base_url": f"http://127.0.0.1:{port}/v1", "max_retries": 0},
        "streams": [{"name": "door", "url": str(clips["red"]), "targets": [RED]}],
        "alerts": [{"type": "webhook", "url": receiver.url}], "clips": {"enabled": False},
        "server": {"listen": "127.0.0.1:0"},
        "state_dir": str(tmp_path),
    }), "test")
    metrics = Metrics()
    daemon = Daemon(config, metrics)
    task = asyncio.create_task(daemon.run(asyncio.Event()))
    fake: FakeVLM | None = None
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            await daemon.started.wait()
            assert daemon.http is not None
            base = f"http://127.0.0.1:{daemon.http.port}"
            ready = await http.get(f"{base}/readyz")
            while "not been checked" in ready.text:
                await asyncio.sleep(0.05)
                ready = await http.get(f"{base}/readyz")
            assert ready.status_code == 503 and "cannot connect" in ready.text
            assert (await http.get(f"{base}/healthz")).status_code == 200
            await asyncio.sleep(1.0)
            assert metrics.registry.get_sample_value("vlm_monitor_alerts_total", {"stream": "door", "target": RED}) == 0
            fake = await asyncio.to_thread(FakeVLM().start, port)
            assert await asyncio.wait_for(task, 60) == 0
    finally:
        if fake:
            fake.stop()
    # Waiting for the server lost no frame of the file: all 20 seconds were analysed, one alert.
    assert len(fake.requests) == 20
    assert [r.json()["first_seen_offset_seconds"] for r in receiver.received] == [5]


def test_webhook_failures_are_retried_with_the_same_id(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    receiver.statuses = [503, 500]
    cfg = write_config(tmp_path / "c.yaml", fake_vlm.base_url,
                       [{"name": "a", "url": str(clips["red"]), "targets": [RED]}],
                       alerts=[{"type": "webhook", "url": receiver.url}])
    result = cli("run", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert receiver.attempts == 3 and len(receiver.received) == 1
    retries = [line for line in json_lines(result.stdout) if line["event"] == "alert delivery failed, will retry"]
    assert len(retries) == 2
    assert {line["alert_id"] for line in retries} == {receiver.received[0].json()["id"]}


def test_server_errors_on_a_fifth_of_requests_still_give_the_right_alert(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    fake_vlm.fail_every = 5
    cfg = write_config(tmp_path / "c.yaml", fake_vlm.base_url,
                       [{"name": "a", "url": str(clips["red"]), "targets": [RED]}],
                       vlm={"base_url": fake_vlm.base_url, "max_retries": 0},
                       alerts=[{"type": "webhook", "url": receiver.url}])
    result = cli("run", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert fake_vlm.failures >= 4
    # Files lose no frame to a failing server: each failed frame was asked again.
    assert len(fake_vlm.requests) == 20 + fake_vlm.failures
    assert [r.json()["first_seen_offset_seconds"] for r in receiver.received] == [5]


def test_garbage_answers_never_alert_and_a_run_that_judged_nothing_exits_2(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    fake_vlm.mode = "garbage"
    cfg = write_config(tmp_path / "c.yaml", fake_vlm.base_url,
                       [{"name": "a", "url": str(clips["red"]), "targets": [RED]}],
                       alerts=[{"type": "webhook", "url": receiver.url}])
    result = cli("run", "--config", str(cfg))
    # Not one sample was judged: that is an unusable model server (as scan says), not "done".
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "no sample of stream 'a' could be analysed" in result.stderr
    assert receiver.attempts == 0
    lines = json_lines(result.stdout)
    # The same failure every sample is said once (then once a minute), not 20 times.
    not_analysed = [line for line in lines if line["event"] == "sample not analysed"]
    assert len(not_analysed) == 1 and not_analysed[0]["stream"] == "a"
    finished = next(line for line in lines if line["event"] == "stream finished")
    assert (finished["samples"], finished["analysed"], finished["model_errors"]) == (20, 0, 20)


def test_episodes_and_cooldown(tmp_path: Path, fake_vlm: FakeVLM, receiver: Receiver) -> None:
    from tests.clips import make_clip

    # Red at 2-5 s and again at 10-13 s: two episodes, so two alerts, unless a cooldown covers both.
    clip = make_clip(tmp_path / "twice.mp4", seconds=16, size=(640, 360), fps=10, red=[(2, 5), (10, 13)])
    stream = [{"name": "a", "url": str(clip), "targets": [RED]}]
    hook = [{"type": "webhook", "url": receiver.url}]
    result = cli("run", "--config", str(write_config(tmp_path / "c.yaml", fake_vlm.base_url, stream, alerts=hook)))
    assert result.returncode == 0, result.stderr
    assert [r.json()["first_seen_offset_seconds"] for r in receiver.received] == [2, 10]

    receiver.received.clear()
    cooled = write_config(tmp_path / "d.yaml", fake_vlm.base_url, stream, alerts=hook,
                          detection={"cooldown_seconds": 30})
    result = cli("run", "--config", str(cooled))
    assert result.returncode == 0, result.stderr
    assert [r.json()["first_seen_offset_seconds"] for r in receiver.received] == [2]


def test_a_model_server_refusing_every_request_is_exit_2_not_0(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    fake_vlm.api_key = "the-right-key"  # /v1/models answers; every chat completion is a 401
    cfg = write_config(tmp_path / "c.yaml", fake_vlm.base_url,
                       [{"name": "a", "url": str(clips["empty"]), "targets": [RED]}])
    result = cli("run", "--config", str(cfg))
    assert result.returncode == 2, result.stderr
    assert "refused the API key (401)" in result.stderr and "Unauthorized" not in result.stderr
    assert "the-right-key" not in result.stdout + result.stderr
