"""Alerts that are never lost and never spam: the daemon against real webhook receivers."""

from __future__ import annotations

import base64
import signal
import sqlite3
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from tests.conftest import Receiver, cli, json_lines, outbox_count, start_cli
from tests.fakes.vllm import FakeVLM

RED = "a person wearing a red shirt"


def config(path: Path, fake: FakeVLM, streams: list[dict[str, Any]], alerts: list[dict[str, Any]],
           **extra: Any) -> Path:
    path.write_text(yaml.safe_dump({
        "vlm": {"base_url": fake.base_url},
        "streams": streams,
        "alerts": alerts,
        "server": {"listen": "127.0.0.1:0"},
        "state_dir": str(path.parent / "state"),
        "clips": {"enabled": False},  # these tests count deliveries of the alerts themselves
        **extra,
    }))
    return path


def test_receiver_down_for_60_s_gets_every_alert_once_in_order(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    receiver.fail_until = time.monotonic() + 60
    streams = [{"name": f"cam{i}", "url": str(clips["red"]), "targets": [RED]} for i in range(3)]
    cfg = config(tmp_path / "c.yaml", fake_vlm, streams, [{
        "type": "webhook", "url": receiver.url, "retry_max_delay_seconds": 4,
        "events": ["target_detected", "target_cleared"]}], shutdown_grace_seconds=120)
    result = cli("run", "--config", str(cfg), timeout=150)
    assert result.returncode == 0, result.stderr
    assert receiver.attempts > len(receiver.received)  # there were failures, and retries
    bodies = [r.json() for r in receiver.received]
    ids = [b["id"] for b in bodies]
    assert len(ids) == len(set(ids)) == 6  # detected + cleared for each stream, each once
    by_stream: dict[str, list[str]] = defaultdict(list)
    for b in bodies:
        by_stream[b["stream"]].append(b["event"])
    assert dict(by_stream) == {f"cam{i}": ["target_detected", "target_cleared"] for i in range(3)}
    raised = {line["alert_id"] for line in json_lines(result.stdout) if line["event"] == "target detected"}
    assert raised == {b["id"] for b in bodies if b["event"] == "target_detected"}


def test_alerts_pending_at_sigkill_are_delivered_after_restart_with_their_ids(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    receiver.fail_until = float("inf")  # down until the restart
    hook = {"type": "webhook", "name": "pager", "url": receiver.url, "retry_max_delay_seconds": 2}
    streams = [{"name": f"cam{i}", "url": str(clips["red"]), "targets": [RED]} for i in range(2)]
    first = config(tmp_path / "c.yaml", fake_vlm, streams, [hook], shutdown_grace_seconds=600)
    proc = start_cli("run", "--config", str(first))
    db = tmp_path / "state" / "outbox.sqlite3"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until both alerts are committed to the outbox
            if outbox_count(db, "SELECT COUNT(*) FROM alerts") == 2:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    raised = {line["alert_id"] for line in json_lines(out) if line["event"] == "target detected"}
    assert len(raised) == 2 and receiver.received == []

    receiver.fail_until = 0.0
    quiet = [{"name": "cam0", "url": str(clips["empty"]), "targets": [RED]}]
    second = config(tmp_path / "c.yaml", fake_vlm, quiet, [hook], shutdown_grace_seconds=30)
    result = cli("run", "--config", str(second))
    assert result.returncode == 0, result.stderr
    ids = [r.json()["id"] for r in receiver.received]
    assert sorted(ids) == sorted(raised)  # the original ids, none twice
    assert all(r.headers["Idempotency-Key"] == r.json()["id"] for r in receiver.received)


def test_a_receiver_that_answers_400_gets_one_try_and_a_dead_letter(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    receiver.statuses = [400]
    cfg = config(tmp_path / "c.yaml", fake_vlm, [{"name": "a", "url": str(clips["red"]), "targets": [RED]}],
                 [{"type": "webhook", "url": receiver.url}])
    result = cli("run", "--config", str(cfg))
    assert result.returncode == 1  # the job is not done: an alert was not delivered
    assert receiver.attempts == 1 and receiver.received == []
    dead = [line for line in json_lines(result.stdout) if "dead letter" in line["event"]]
    assert len(dead) == 1 and dead[0]["reason"] == "HTTP 400" and dead[0]["stream"] == "a"
    with sqlite3.connect(tmp_path / "state" / "outbox.sqlite3") as con:
        assert con.execute("SELECT state, last_error FROM deliveries").fetchall() == [("dead", "HTTP 400")]


def test_a_slow_receiver_delays_neither_detection_nor_other_sinks(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    slow = Receiver(delay=10.0).start()
    try:
        cfg = config(tmp_path / "c.yaml", fake_vlm,
                     [{"name": "a", "url": str(clips["red"]), "targets": [RED]}],
                     [{"type": "webhook", "name": "slow", "url": slow.url, "timeout_seconds": 30},
                      {"type": "webhook", "name": "fast", "url": receiver.url, "include_image": True}])
        proc = start_cli("run", "--config", str(cfg))
        started = time.monotonic()
        assert receiver.got.wait(20)
        fast_after = time.monotonic() - started
        out, err = proc.communicate(timeout=60)
    finally:
        slow.stop()
    assert proc.returncode == 0, err
    assert fast_after < 8  # the slow receiver's 10 s did not hold it up
    assert len(slow.received) == 1 and len(receiver.received) == 1
    body = receiver.received[0].json()
    assert body == {**slow.received[0].json(), "image_jpeg_base64": body["image_jpeg_base64"]}
    # The snapshot is the frame the model judged: it decodes, at the model's size, and is red.
    image = cv2.imdecode(np.frombuffer(base64.b64decode(body["image_jpeg_base64"]), np.uint8),
                         cv2.IMREAD_COLOR)
    assert image.shape == (364, 644, 3)
    assert (tmp_path / "state" / "snapshots" / body["snapshot"]).exists()
    finished = next(line for line in json_lines(out) if line["event"] == "stream finished")
    finished_at = datetime.fromisoformat(finished["timestamp"]).timestamp()
    # Detection went on to the end of the file while the slow delivery was still running.
    assert finished_at < slow.received[0].at - 5
