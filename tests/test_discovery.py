"""Home Assistant MQTT discovery: the config payloads (pure), and a real broker (mosquitto)
watching a run, a reload that removes a camera, and a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from monitor.alerts.discovery import configs
from monitor.names import object_id
from tests.conftest import start_cli
from tests.fakes.vllm import FakeVLM
from tests.test_mqtt import Broker

RED = "a person wearing a red shirt"
# What Home Assistant's MQTT integration requires of each platform's config, and the
# device classes it knows for them (the subset used here).
REQUIRED = {"binary_sensor": {"state_topic"}, "sensor": {"state_topic"}, "image": {"image_topic"}}
DEVICE_CLASSES = {"binary_sensor": {"connectivity", "occupancy"}, "sensor": {None}, "image": {None}}


def test_object_ids_are_valid_and_stable() -> None:
    assert object_id("Front Door") == "front_door"
    assert object_id("Café crème") == "cafe_creme"
    chinese = object_id("前门")
    assert chinese == object_id("前门") and chinese != object_id("后门")
    assert all(c.isascii() and (c.isalnum() or c == "_") for c in chinese)


def test_every_entity_has_what_home_assistant_requires() -> None:
    out = configs("vlm-monitor", "homeassistant", [("door", [RED, "Café cup"]), ("yard", ["dog"])])
    platforms = [topic.split("/")[1] for topic in out]
    assert platforms.count("binary_sensor") == 1 + 2 + 3  # model server; 2 cameras; 3 targets
    assert platforms.count("image") == 3 and platforms.count("sensor") == 1
    ids = [p["unique_id"] for p in out.values()]
    assert len(set(ids)) == len(ids)
    for topic, payload in out.items():
        prefix, platform, node, _oid, last = topic.split("/")
        assert (prefix, last) == ("homeassistant", "config") and node == "vlm_monitor"
        assert REQUIRED[platform] <= payload.keys(), topic
        assert payload["default_entity_id"] == f"{platform}.{payload['unique_id']}"
        assert payload.get("device_class") in DEVICE_CLASSES[platform], topic
        assert payload["device"]["identifiers"] and payload["availability"][0]["topic"] == \
            "vlm-monitor/availability"
    occupancy = out["homeassistant/binary_sensor/vlm_monitor/door_a_person_wearing_a_red_shirt/config"]
    assert occupancy["state_topic"] == "vlm-monitor/door/a_person_wearing_a_red_shirt/state"
    assert occupancy["availability_mode"] == "all"  # the daemon and the camera both online
    assert occupancy["availability"][1]["topic"] == "vlm-monitor/door/status"
    assert occupancy["device"]["via_device"] == "vlm_monitor"


class Watcher:
    """Every message on the broker, as it comes, from a thread of its own."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[tuple[str, bytes]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    async def _run(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker is stopped under it at the end
            await self._watch()

    async def _watch(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"watch-{time.time()}") as c:
            await c.subscribe("homeassistant/#", qos=1)
            await c.subscribe("vlm-monitor/#", qos=1)
            self._ready.set()
            async for m in c.messages:
                self.messages.append((str(m.topic), bytes(m.payload)))  # type: ignore[arg-type]
                if self._stop.is_set():
                    return

    def stop(self) -> None:
        self._stop.set()

    def last(self, topic: str) -> bytes | None:
        found = [p for t, p in self.messages if t == topic]
        return found[-1] if found else None

    def wait(self, topic: str, payload: bytes | None = None, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while not any(t == topic and (payload is None or p == payload) for t, p in self.messages):
            assert time.monotonic() < deadline, f"no {payload!r} on {topic}"
            time.sleep(0.05)

    def configs(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for topic, payload in self.messages:
            if topic.startswith("homeassistant/"):
                if payload:
                    out[topic] = json.loads(payload)
                else:
                    out.pop(topic, None)
        return out


def test_home_assistant_sees_cameras_and_targets_come_and_go(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    broker = Broker(tmp_path)
    broker.start()
    cfg = tmp_path / "c.yaml"

    def write(streams: list[str]) -> None:
        urls = {"door": clips["red"], "yard": clips["empty"]}
        cfg.write_text(yaml.safe_dump({
            "vlm": {"base_url": fake_vlm.base_url},
            "streams": [{"name": n, "url": str(urls[n]), "targets": [RED, "Café cup"], "realtime": True}
                        for n in streams],
            "alerts": [{"type": "mqtt", "host": "127.0.0.1", "port": broker.port,
                        "events": ["target_detected", "target_cleared"]}],
            "server": {"listen": "127.0.0.1:0"}, "state_dir": str(tmp_path / "state")}))

    watcher = Watcher(broker.port)
    write(["door", "yard"])
    daemon = start_cli("run", "--config", str(cfg))
    door = "homeassistant/binary_sensor/vlm_monitor/door_a_person_wearing_a_red_shirt/config"
    yard = "homeassistant/binary_sensor/vlm_monitor/yard_connectivity/config"
    try:
        # Every config of both cameras, not just the two above: the yard's target configs are
        # published after its connectivity sensor's, and a partial `first` fails the restart below.
        every = set(configs("vlm-monitor", "homeassistant", [("door", [RED, "Café cup"]),
                                                            ("yard", [RED, "Café cup"])]))
        assert door in every and yard in every
        deadline = time.monotonic() + 30
        while set(watcher.configs()) != every:
            assert time.monotonic() < deadline, every ^ set(watcher.configs())
            time.sleep(0.05)
        first = watcher.configs()
        # Every topic a config names receives messages: the entities are not left unknown.
        watcher.wait("vlm-monitor/availability", b"online")
        watcher.wait("vlm-monitor/door/status", b"online")
        watcher.wait("vlm-monitor/model", b"online")
        watcher.wait("vlm-monitor/alerts_pending")
        watcher.wait("vlm-monitor/door/a_person_wearing_a_red_shirt/state", b"ON")
        attributes = json.loads(watcher.last("vlm-monitor/door/a_person_wearing_a_red_shirt/attributes") or b"{}")
        assert attributes["confidence"] >= 7 and "red" in attributes["description"]
        # Published after the state and the attributes: wait for it, not just for them.
        watcher.wait("vlm-monitor/door/a_person_wearing_a_red_shirt/snapshot")
        snapshot = watcher.last("vlm-monitor/door/a_person_wearing_a_red_shirt/snapshot")
        assert snapshot is not None and snapshot[:2] == b"\xff\xd8"  # a JPEG
        write(["door"])  # the yard camera is removed
        daemon.send_signal(signal.SIGHUP)
        watcher.wait(yard, b"")  # its configs are deleted: no orphan entities
        deadline = time.monotonic() + 10  # the other deletions may still be on their way
        while any(t.split("/")[3].startswith("yard") for t in watcher.configs()):
            assert time.monotonic() < deadline, [t for t in watcher.configs() if "yard" in t]
            time.sleep(0.05)
        watcher.wait("vlm-monitor/door/a_person_wearing_a_red_shirt/state", b"OFF", within=40)
        assert daemon.wait(60) == 0  # the recording ended
        watcher.wait("vlm-monitor/availability", b"offline")  # entities show unavailable, not OFF

        # Restarted with only the yard camera (door removed while it was stopped): the door's
        # configs are deleted at start, the yard's come back with the unique ids they had.
        seen = len(watcher.messages)
        write(["yard"])
        daemon = start_cli("run", "--config", str(cfg))
        deadline = time.monotonic() + 20
        while not any(t == door and p == b"" for t, p in watcher.messages[seen:]):
            assert time.monotonic() < deadline, "the removed camera's configs stayed after a restart"
            time.sleep(0.05)
        expected = {t for t in first if "/door" not in t}
        deadline = time.monotonic() + 10
        while set(watcher.configs()) != expected:  # republished after the deletions
            assert time.monotonic() < deadline, "the yard's configs did not come back"
            time.sleep(0.05)
        again = watcher.configs()
        assert not any("/door" in t for t in again)
        assert {t: p["unique_id"] for t, p in again.items()} == \
            {t: p["unique_id"] for t, p in first.items() if "/door" not in t}
    finally:
        daemon.terminate()
        daemon.communicate(timeout=30)
        watcher.stop()
        broker.stop()
