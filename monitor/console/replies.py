"""How the console answers: JSON, and errors as ``{"error": "…"}`` with their status."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def error(status: int, message: str) -> web.HTTPException:
    exc = web.HTTPException(text=json.dumps({"error": message}), content_type="application/json")
    exc.set_status(status)
    return exc
