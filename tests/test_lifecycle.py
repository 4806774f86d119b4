"""The daemon's lifecycle: the pure rules (exit code, reload plan) and the defects of
"One lifecycle" and "Nothing crashes", each against real parts (SQLite, HTTP, a closed port)."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import yaml

from monitor.alerts.outbox import Outbox
from monitor.app import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Daemon, DaemonError, Outcome, exit_code
from monitor.config import Config, parse_config
from monitor.metrics import Metrics
from monitor.running import plan_reload
from monitor.sources.live import LiveSource, StateChange
from monitor.sources.worker import CaptureSpec
from tests.clips import make_clip
from tests.conftest import Receiver, cli, free_port
from tests.fakes.vllm import FakeVLM

RED = "a person wearing a red shirt"


def outcome(**kw: Any) -> Outcome:
    base: dict[str, Any] = {"signalled": False, "fatal": None, "failed_streams": [], "unusable": {},
                            "undelivered": 0, "dead_letters": 0}
    return Outcome(**{**base, **kw})


def test_exit_code_rule() -> None:
    assert exit_code(outcome()) == (EXIT_OK, None)
    assert exit_code(outcome(fatal="no such model"))[0] == EXIT_USAGE
    code, message = exit_code(outcome(unusable={"a": "401"}))
    assert code == EXIT_USAGE and message is not None and "'a'" in message and "401" in message
    assert exit_code(outcome(unusable={"a": "401"}, signalled=True)) == (EXIT_OK, None)
    assert exit_code(outcome(failed_streams=["a"], signalled=True)) == (EXIT_FAILED, None)
    # Pending alerts are safe on disk after a signal; after the files ended, they are a failure.
    assert exit_code(outcome(undelivered=2, signalled=True)) == (EXIT_OK, None)
    assert exit_code(outcome(undelivered=2)) == (EXIT_FAILED, None)
    assert exit_code(outcome(dead_letters=1)) == (EXIT_FAILED, None)


def config(**extra: Any) -> Config:
    doc: dict[str, Any] = {"streams": [
        {"name": "a", "url": "a.mp4", "targets": ["x"]},
        {"name": "b", "url": "b.mp4", "targets": ["x"], "max_pixels": 200_000}]}
    doc.update(extra)
    return parse_config(yaml.safe_dump(doc), "t", {})


def test_plan_reload_restarts_only_streams_whose_effective_settings_changed() -> None:
    old = config()
    # b has its own pixel budget: a new global budget changes only a.
    plan = plan_reload(old, config(preprocess={"max_pixels": 300_000}))
    assert (plan.added, plan.removed, plan.restarted, plan.fixed) == ([], [], ["a"], [])
    plan = plan_reload(old, config(detection={"min_confidence": 8}))
    assert plan.restarted == ["a", "b"] and plan.config.detection.min_confidence == 8
    plan = plan_reload(old, config(streams=[{"name": "b", "url": "b.mp4", "targets": ["x"],
                                             "max_pixels": 200_000},
                                            {"name": "c", "url": "c.mp4", "targets": ["y"]}]))
    assert (plan.added, plan.removed, plan.restarted) == (["c"], ["a"], [])
    plan = plan_reload(old, config(vlm={"model": "other"}, shutdown_grace_seconds=3))
    assert plan.fixed == ["vlm", "shutdown_grace_seconds"] and plan.restarted == []
    assert plan.config.vlm.model == old.vlm.model  # a restart applies it, not the reload


def test_a_recordings_run_waits_for_its_alerts_past_the_grace_period(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    receiver.statuses = [503] * 6  # the receiver fails its first six posts, then recovers
    doc = {"vlm": {"base_url": fake_vlm.base_url},
           "streams": [{"name": "a", "url": str(clips["red"]), "targets": [RED]}],
           "alerts": [{"type": "webhook", "url": receiver.url, "retry_max_delay_seconds": 1}], "clips": {"enabled": False},
           "server": {"listen": "127.0.0.1:0"}, "state_dir": str(tmp_path / "state"),
           "shutdown_grace_seconds": 1}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    result = cli("run", "--config", str(tmp_path / "c.yaml"))
    # Before: exit 1 after the 1 s grace, the alert left in the outbox.
    assert result.returncode == 0, result.stderr
    assert receiver.attempts == 7 and len(receiver.received) == 1


async def test_a_stopped_live_source_never_announces_stream_down_afterwards() -> None:
    changes: list[StateChange] = []
    source = LiveSource(CaptureSpec(f"rtsp://127.0.0.1:{free_port()}/cam", "dead", 1.0, "auto", "tcp",
                                    1.0, 1.0, None), down_alert_after_s=1.5, on_change=changes.append)
    async with source:
        deadline = time.monotonic() + 10
        while not any(c.kind == "down" for c in changes):
            assert time.monotonic() < deadline, "the dead camera never said down"
            await asyncio.sleep(0.05)
    await asyncio.sleep(2.5)  # past the hold-off: the timer armed at "down" must be gone
    assert [c.kind for c in changes if c.kind.startswith("stream_")] == []


async def test_a_failed_start_closes_the_outbox(tmp_path: Path, fake_vlm: FakeVLM) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = parse_config(yaml.safe_dump({
            "vlm": {"base_url": fake_vlm.base_url},
            "streams": [{"name": "a", "url": "a.mp4", "targets": [RED]}],
            "server": {"listen": f"127.0.0.1:{port}"}, "state_dir": str(tmp_path)}), "t", {})
        with pytest.raises(DaemonError, match="cannot listen"):
            await Daemon(cfg, Metrics()).run(asyncio.Event())
    # SQLite removes the WAL file when its last connection closes.
    assert (tmp_path / "outbox.sqlite3").exists() and not (tmp_path / "outbox.sqlite3-wal").exists()


def test_a_state_directory_that_cannot_be_used_is_exit_1_not_2(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the state directory should be")
    doc = {"streams": [{"name": "a", "url": "a.mp4", "targets": [RED]}],
           "server": {"listen": "127.0.0.1:0"}, "state_dir": str(tmp_path / "state")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    result = cli("run", "--config", str(tmp_path / "c.yaml"))
    assert result.returncode == 1, result.stderr  # systemd restarts on 1, not on 2
    assert "cannot use the state directory" in result.stderr and "Traceback" not in result.stderr


async def test_an_alert_the_outbox_cannot_take_is_logged_held_and_stored_later(
        tmp_path: Path, fake_vlm: FakeVLM, receiver: Receiver) -> None:
    clip = make_clip(tmp_path / "red.mp4", seconds=12, size=(640, 360), fps=10, red=(3, 12))
    state = tmp_path / "state"
    Outbox(state / "outbox.sqlite3").close()
    cfg = parse_config(yaml.safe_dump({
        "vlm": {"base_url": fake_vlm.base_url},
        "streams": [{"name": "a", "url": str(clip), "targets": [RED], "realtime": True}],
        "alerts": [{"type": "log"}, {"type": "webhook", "url": receiver.url}], "clips": {"enabled": False},
        "server": {"listen": "127.0.0.1:0"}, "state_dir": str(state)}), "t", {})
    metrics = Metrics()
    daemon = Daemon(cfg, metrics)
    with structlog.testing.capture_logs() as logged:
        await held_then_stored(daemon, metrics, state, receiver)
    held = [e for e in logged if e["event"].startswith("alert could not be written")]
    # Logged at once, with what the alert says, before the disk came back.
    assert held and held[0]["target"] == RED and held[0]["alert_event"] == "target_detected"


async def held_then_stored(daemon: Daemon, metrics: Metrics, state: Path, receiver: Receiver) -> None:
    task = asyncio.create_task(daemon.run(asyncio.Event()))
    await daemon.started.wait()
    # Another process holds the database's write lock: every commit of ours fails,
    # as it would on a full disk, with SQLite's own error.
    blocker = sqlite3.connect(state / "outbox.sqlite3", isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    url = f"http://127.0.0.1:{daemon.http.port if daemon.http else 0}"

    def failures() -> float:
        return metrics.registry.get_sample_value("vlm_monitor_alert_store_failures_total") or 0.0

    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 30
        while failures() < 1:
            assert time.monotonic() < deadline and not task.done(), "no alert failed to be stored"
            await asyncio.sleep(0.1)
        ready = await http.get(url + "/readyz")
        assert ready.status_code == 503 and "could not be written to the outbox" in ready.text
        sampled = metrics.registry.get_sample_value("vlm_monitor_frames_sampled_total", {"stream": "a"})
        await asyncio.sleep(1.5)
        # The stream goes on.
        assert metrics.registry.get_sample_value("vlm_monitor_frames_sampled_total", {"stream": "a"}) > sampled
        assert receiver.received == []
        blocker.execute("ROLLBACK")  # the disk recovers
        blocker.close()
        assert await asyncio.wait_for(task, 60) == 0
    assert [r.json()["event"] for r in receiver.received] == ["target_detected"]
    assert metrics.registry.get_sample_value("vlm_monitor_alerts_lost_total") == 0
