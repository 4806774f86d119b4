"""An alert (an event for the sinks) and its payload: the webhook contract in the README's "Alerts"."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def iso_utc(t: datetime) -> str:
    """2026-11-25T14:03:05.120Z: milliseconds, UTC, 'Z'."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Alert:
    event: str
    stream: str
    fields: dict[str, Any]  # the event's own fields, ready for JSON
    # The same on every retry, so that receivers can drop duplicates.
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def detected(cls, stream: str, target: str, first_seen: datetime, first_offset: float,
                 confidence: int, description: str, model: str | None = None,
                 box: tuple[float, float, float, float] | None = None) -> Alert:
        fields: dict[str, Any] = {
            "target": target, "first_seen": iso_utc(first_seen),
            "first_seen_offset_seconds": first_offset, "confidence": confidence,
            "description": description}
        if model is not None:
            fields["model"] = model  # which model judged (a fallback's may differ)
        if box is not None:
            fields["box"] = [round(v, 4) for v in box]  # x1, y1, x2, y2 relative to the frame
        return cls("target_detected", stream, fields)

    @classmethod
    def cleared(cls, stream: str, target: str, last_seen: datetime, last_offset: float) -> Alert:
        return cls("target_cleared", stream, {
            "target": target, "last_seen": iso_utc(last_seen),
            "last_seen_offset_seconds": last_offset})

    @classmethod
    def stream_state(cls, stream: str, up: bool, at: datetime, reason: str) -> Alert:
        return cls("stream_up" if up else "stream_down", stream,
                   {"at": iso_utc(at), "reason": reason})

    @classmethod
    def clip_ready(cls, detected: Alert, clip_url: str | None, seconds: float, note: str = "") -> Alert:
        """The clip of a ``target_detected`` alert is on disk. It carries the detection's own
        fields too, so a receiver that sees only this event (a chat bot, Home Assistant's
        attributes) has the whole story."""
        fields: dict[str, Any] = {
            "alert_id": detected.id, "clip_url": clip_url, "duration_seconds": round(seconds, 2),
            **{k: detected.fields[k] for k in ("target", "first_seen", "confidence", "description", "model")
               if k in detected.fields}}
        if note:
            fields["clip_note"] = note  # why it is shorter than asked for
        return cls("clip_ready", detected.stream, fields)

    @classmethod
    def from_body(cls, body: bytes) -> Alert:
        """The alert as stored in the outbox (its body); body() gives the same bytes back."""
        fields = json.loads(body)
        event, alert_id, stream = fields.pop("event"), fields.pop("id"), fields.pop("stream")
        return cls(event, stream, fields, alert_id)

    def payload(self) -> dict[str, Any]:
        return {"event": self.event, "id": self.id, "stream": self.stream, **self.fields}

    def body(self) -> bytes:
        """The exact bytes sent, and signed."""
        return json.dumps(self.payload(), ensure_ascii=False, separators=(",", ":")).encode()
