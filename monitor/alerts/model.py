"""An alert and its payload, as PRODUCT.md defines it."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def iso_utc(t: datetime) -> str:
    """2026-11-25T14:03:05.120Z: milliseconds, UTC, 'Z'."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Alert:
    event: str  # "target_detected" or "target_cleared"
    stream: str
    target: str
    first_seen: datetime
    first_seen_offset_seconds: float
    confidence: int
    description: str
    # The same on every retry, so that receivers can drop duplicates.
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    last_seen: datetime | None = None
    last_seen_offset_seconds: float | None = None

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event": self.event,
            "id": self.id,
            "stream": self.stream,
            "target": self.target,
            "first_seen": iso_utc(self.first_seen),
            "first_seen_offset_seconds": self.first_seen_offset_seconds,
            "confidence": self.confidence,
            "description": self.description,
        }
        if self.last_seen is not None:
            body["last_seen"] = iso_utc(self.last_seen)
            body["last_seen_offset_seconds"] = self.last_seen_offset_seconds
        return body

    def body(self) -> bytes:
        """The exact bytes sent, and signed."""
        return json.dumps(self.payload(), ensure_ascii=False, separators=(",", ":")).encode()
