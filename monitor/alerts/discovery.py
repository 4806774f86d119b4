"""Home Assistant MQTT discovery: the retained config messages that make entities appear.

Pure: from the topic prefix, the discovery prefix and the streams with their
targets, the config topic and payload of every entity. Per stream a device
with a connectivity sensor (the camera up or down) and, per target, an
occupancy sensor (ON while an episode lasts, the last detection's details as
attributes) and an image (the last alert's snapshot); one device for the
daemon with the model server's state and the alerts still pending.

Unique ids are built from names only (the topic prefix, the stream's and the
target's), so they survive restarts; entities follow the daemon's will and
their camera's status, so a stopped daemon shows them unavailable, not OFF.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from monitor import __version__
from monitor.names import object_id, topic_part


def node_id(prefix: str) -> str:
    """The daemon's id: its topic prefix (``vlm-monitor`` → ``vlm_monitor``), so that two
    daemons on one broker, with two prefixes, are two devices."""
    return object_id(prefix)


def configs(prefix: str, discovery_prefix: str,
            streams: Sequence[tuple[str, Sequence[str]]]) -> dict[str, dict[str, Any]]:
    """{config topic: payload} for every entity of the daemon and its streams."""
    node = node_id(prefix)
    name = "vlm-monitor" if prefix == "vlm-monitor" else f"vlm-monitor ({prefix})"
    daemon = {"identifiers": [node], "name": name, "manufacturer": "vlm-monitor",
              "model": "vlm-monitor daemon", "sw_version": __version__}
    online = {"topic": f"{prefix}/availability"}
    out: dict[str, dict[str, Any]] = {}

    def add(platform: str, oid: str, payload: dict[str, Any]) -> None:
        # default_entity_id (Home Assistant 2025.10 and later) replaced object_id, which
        # stopped working in 2026.4.
        out[f"{discovery_prefix}/{platform}/{node}/{oid}/config"] = {
            "unique_id": f"{node}_{oid}", "default_entity_id": f"{platform}.{node}_{oid}", **payload}

    add("binary_sensor", "model_server", {
        "name": "Model server", "device_class": "connectivity", "state_topic": f"{prefix}/model",
        "payload_on": "online", "payload_off": "offline", "availability": [online], "device": daemon})
    add("sensor", "alerts_pending", {
        "name": "Alerts pending", "state_topic": f"{prefix}/alerts_pending", "state_class": "measurement",
        "icon": "mdi:bell-ring-outline", "availability": [online], "device": daemon})
    for stream, targets in streams:
        sid = object_id(stream)
        status = f"{prefix}/{topic_part(stream)}/status"
        device = {"identifiers": [f"{node}_{sid}"], "name": stream, "manufacturer": "vlm-monitor",
                  "model": "camera watched by vlm-monitor", "sw_version": __version__,
                  "via_device": node}
        camera = {"topic": status, "payload_available": "online", "payload_not_available": "offline"}
        add("binary_sensor", f"{sid}_connectivity", {
            "name": "Camera", "device_class": "connectivity", "state_topic": status,
            "payload_on": "online", "payload_off": "offline", "availability": [online], "device": device})
        for target in targets:
            tid = f"{sid}_{object_id(target)}"
            base = f"{prefix}/{topic_part(stream)}/{topic_part(target)}"
            both = {"availability": [online, camera], "availability_mode": "all", "device": device}
            add("binary_sensor", tid, {
                "name": target, "device_class": "occupancy", "state_topic": f"{base}/state",
                "payload_on": "ON", "payload_off": "OFF", "json_attributes_topic": f"{base}/attributes",
                **both})
            add("image", f"{tid}_snapshot", {
                "name": f"{target} (last alert)", "image_topic": f"{base}/snapshot",
                "content_type": "image/jpeg", **both})
    return out


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
