"""Reading a request: its body at a pace it must keep, its form fields and query numbers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web

from monitor.console.auth import Session
from monitor.console.replies import error

# A request body must keep coming (a byte every few seconds would hold its connection, and a
# descriptor, forever): its first bytes within GRACE_S, then MIN_RATE bytes a second on average.
GRACE_S = 10.0
MIN_RATE = 16 * 1024
MAX_JSON_BYTES = 64 * 1024
MAX_FIELD_BYTES = 8192
SESSION_KEY: web.RequestKey[Session | None] = web.RequestKey("session")  # set by the guard

T = TypeVar("T")


class Pace:
    """How long the rest of a request body may take: ``GRACE_S``, plus a second per
    ``MIN_RATE`` bytes already received, from the start (``left`` is pure)."""

    def __init__(self, now: float) -> None:
        self.started = now
        self.received = 0

    def left(self, now: float) -> float:
        return self.started + GRACE_S + self.received / MIN_RATE - now

    async def within(self, pending: Awaitable[T]) -> T:
        """``pending`` (a read of the body), or 408 when the body comes too slowly."""
        try:
            async with asyncio.timeout(max(0.0, self.left(time.monotonic()))):
                return await pending
        except TimeoutError:
            raise error(408, "the request body came too slowly") from None

    async def read(self, read: Callable[[], Awaitable[bytes]]) -> bytes:
        chunk = await self.within(read())
        self.received += len(chunk)
        return chunk


async def save_part(part: BodyPartReader, path: Path, limit: int, limit_mb: float, pace: Pace) -> None:
    """Write the upload as it arrives; past the limit, stop reading and answer 413."""
    size = 0
    with await asyncio.to_thread(path.open, "wb") as f:
        while chunk := await pace.read(partial(part.read_chunk, 1 << 20)):
            size += len(chunk)
            if size > limit:
                raise error(413, f"the upload is larger than the limit of {limit_mb:g} MB")
            await asyncio.to_thread(f.write, chunk)
    if size == 0:
        raise error(400, "the uploaded file is empty")


async def read_small(part: BodyPartReader, pace: Pace) -> str:
    """A text field of the form, refused past a few KB (the whole part is never held)."""
    data = b""
    while chunk := await pace.read(partial(part.read_chunk, 4096)):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise error(400, f"the {part.name} field is longer than {MAX_FIELD_BYTES} bytes")
    return data.decode("utf-8", "replace")


async def body_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object: read at the body's pace (``Pace``), at most MAX_JSON_BYTES."""
    pace, body = Pace(time.monotonic()), bytearray()
    while chunk := await pace.read(partial(request.content.read, 1 << 14)):
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise error(413, f"the body is over {MAX_JSON_BYTES} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise error(400, "the body is not JSON (or nested too deeply)") from None
    if not isinstance(data, dict):
        raise error(400, "the body must be a JSON object")
    return data


def is_text(text: str) -> bool:
    """Short text that can be encoded (JSON may hold a lone surrogate, "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return len(text) <= 1024


def int_arg(text: str | None, default: Any, low: int, high: int) -> Any:
    if text is None or text == "":
        return default
    try:
        return max(low, min(high, int(text)))
    except ValueError:
        raise error(400, f"not a whole number: {text[:20]!r}") from None


def float_arg(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise error(400, f"not a number: {text[:20]!r}") from None
