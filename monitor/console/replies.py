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


def jpeg(body: bytes) -> web.Response:
    # Camera images are not kept by any cache, the browser's included: they must not
    # outlive the session (a shared computer, after logout).
    return web.Response(body=body, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


def too_many(message: str, wait: float) -> web.HTTPException:
    return web.HTTPTooManyRequests(text=json.dumps({"error": message}), content_type="application/json",
                                   headers={"Retry-After": str(int(wait) + 1)})
