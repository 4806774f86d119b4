"""The MQTT sink against a real broker (Debian's mosquitto), restarted mid-run."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import aiomqtt
import pytest
import yaml

from monitor.alerts.model import Alert
from monitor.alerts.topics import messages
from monitor.names import topic_part
from tests.conftest import free_port, outbox_count, start_cli
from tests.fakes.vllm import FakeVLM

RED = "a person wearing a red shirt"


def test_home_assistant_friendly_topics() -> None:
    from datetime import UTC, datetime

    detected = Alert.detected("Front Door", RED, datetime.now(UTC), 5.0, 9, "red")
    topics = {t: (p, r) for t, p, r in messages("vlm", detected)}
    assert topics["vlm/front_door/a_person_wearing_a_red_shirt/state"] == (b"ON", True)
    assert json.loads(topics["vlm/front_door/events"][0])["id"] == detected.id
    assert not topics["vlm/front_door/events"][1]
    cleared = Alert.cleared("Front Door", RED, datetime.now(UTC), 9.0)
    assert ("vlm/front_door/a_person_wearing_a_red_shirt/state", b"OFF", True) in messages("vlm", cleared)
    down = Alert.stream_state("cam", False, datetime.now(UTC), "no frame")
    assert ("vlm/cam/status", b"offline", True) in messages("vlm", down)
    assert topic_part("a/b+c#d") == "a_b_c_d"


class Broker:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.conf = directory / "mosquitto.conf"
        (directory / "data").mkdir()
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {directory / 'data'}/\nautosave_interval 1\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import socket

                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: it saves its sessions first
            self.proc.wait(10)
            self.proc = None


async def subscribe_once(port: int) -> None:
    """Register a persistent session (QoS 1) that the broker keeps across its restart."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-sub", clean_session=False) as c:
        await c.subscribe("vlm-monitor/#", qos=1)


async def collect(port: int, seconds: float) -> dict[str, list[bytes]]:
    got: dict[str, list[bytes]] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-sub", clean_session=False) as c:
        await c.subscribe("vlm-monitor/#", qos=1)
        try:
            async with asyncio.timeout(seconds):
                async for m in c.messages:
                    got.setdefault(str(m.topic), []).append(bytes(m.payload))  # type: ignore[arg-type]
        except TimeoutError:
            pass
    return got


def test_broker_restarted_mid_run_gets_the_alert_after_it_returns(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    broker = Broker(tmp_path)
    broker.start()
    asyncio.run(subscribe_once(broker.port))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "vlm": {"base_url": fake_vlm.base_url},
        "streams": [{"name": "door", "url": str(clips["red"]), "targets": [RED], "realtime": True}],
        "alerts": [{"type": "mqtt", "host": "127.0.0.1", "port": broker.port}],
        "server": {"listen": "127.0.0.1:0"},
        "state_dir": str(tmp_path / "state"),
    }))
    daemon = start_cli("run", "--config", str(cfg))
    db = tmp_path / "state" / "outbox.sqlite3"
    try:
        time.sleep(2)
        broker.stop()  # down before the red shirt appears at 5 s
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the alert is raised and waits in the outbox
            if outbox_count(db, "SELECT COUNT(*) FROM deliveries WHERE state='pending'"):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("no alert was raised while the broker was down")
        broker.start()
        got = asyncio.run(collect(broker.port, 20))
    finally:
        daemon.terminate()
        daemon.communicate(timeout=30)
        broker.stop()
    assert daemon.returncode == 0
    events = [json.loads(p) for p in got.get("vlm-monitor/door/events", [])]
    assert [e["event"] for e in events][:1] == ["target_detected"]
    assert events[0]["first_seen_offset_seconds"] == 5
    state = got.get("vlm-monitor/door/a_person_wearing_a_red_shirt/state", [])
    assert state and state[0] == b"ON"
    assert b"online" in got.get("vlm-monitor/availability", [])


def test_names_that_would_share_a_topic_or_entity_are_refused_naming_both(tmp_path: Path) -> None:
    from monitor.config import ConfigError, parse_config
    from tests.conftest import cli

    # Two Cyrillic targets on one camera: each its own topic (every such name was "_").
    assert topic_part("Собака") != topic_part("Кошка") and "/" not in topic_part("Собака")

    def doc(streams: str) -> str:
        return f"alerts:\n  - type: mqtt\n    host: 127.0.0.1\nstreams:\n{streams}"

    parse_config(doc("  - {name: yard, url: a.mp4, targets: [Собака, Кошка]}\n"), "c")
    for streams, message in [
        ("  - {name: Door, url: a.mp4, targets: [x]}\n  - {name: door, url: b.mp4, targets: [x]}\n",
         "streams 'Door' and 'door' would share MQTT topics"),
        ("  - {name: yard, url: a.mp4, targets: [Hund, hund]}\n", "targets 'Hund' and 'hund'"),
        ("  - {name: yard, url: a.mp4, targets: [a/b, a b]}\n", "targets 'a/b' and 'a b'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config(doc(streams), "c")
    path = tmp_path / "c.yaml"
    path.write_text(doc("  - {name: Door, url: a.mp4, targets: [x]}\n  - {name: door, url: b.mp4, targets: [x]}\n"))
    result = cli("check-config", str(path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "'Door' and 'door'" in result.stderr
    # Without MQTT, names that differ only in case are fine.
    parse_config("streams:\n  - {name: Door, url: a.mp4, targets: [x]}\n  - {name: door, url: b.mp4, targets: [x]}\n",
                 "c")
