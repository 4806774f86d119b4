"""The MQTT topics of alerts, Home Assistant-friendly. Pure.

    {prefix}/availability               "online" / "offline" (retained; "offline" is the will)
    {prefix}/model                      "online" / "offline" (retained): the model server
    {prefix}/alerts_pending             a number (retained)
    {prefix}/{stream}/status            "online" / "offline" (retained): the camera
    {prefix}/{stream}/{target}/state    "ON" / "OFF" (retained; detected / cleared)
    {prefix}/{stream}/{target}/attributes  the last detection: confidence, description, … and,
                                        once written, its clip's link (retained)
    {prefix}/{stream}/{target}/snapshot    the last alert's JPEG (retained)
    {prefix}/{stream}/events            every alert's JSON payload (not retained)
"""

from __future__ import annotations

import json

from monitor.alerts.model import Alert
from monitor.names import topic_part


def messages(prefix: str, alert: Alert) -> list[tuple[str, bytes, bool]]:
    """(topic, payload, retain) for one alert. Pure."""
    base = f"{prefix}/{topic_part(alert.stream)}"
    out = [(f"{base}/events", alert.body(), False)]
    target = alert.fields.get("target")
    if alert.event in ("target_detected", "clip_ready") and isinstance(target, str):
        # The last detection's details; its clip's link once the clip is written. Before the
        # state, so that whoever acts on ON finds the details of that detection already there.
        details = {k: alert.fields.get(k) for k in ("confidence", "description", "first_seen", "model",
                                                    "snapshot", "clip_url") if k in alert.fields}
        out.append((f"{base}/{topic_part(target)}/attributes", json.dumps(details).encode(), True))
    if alert.event in ("target_detected", "target_cleared") and isinstance(target, str):
        state = b"ON" if alert.event == "target_detected" else b"OFF"
        out.append((f"{base}/{topic_part(target)}/state", state, True))
    elif alert.event in ("stream_up", "stream_down"):
        out.append((f"{base}/status", b"online" if alert.event == "stream_up" else b"offline", True))
    return out
