"""The console's cameras: the fleet header, each camera's state, frame, recent samples and
thumbnails, and a stream of what changed. Read from the ``Board``; nothing here writes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from monitor.board import Board
from monitor.console.reading import int_arg
from monitor.console.replies import error, jpeg, reply

LIVE_PERIOD_S = 1.0  # the Cameras page hears of changes at most this often

# The daemon's side of the fleet header (model servers, alerts pending, samples due).
Fleet = Callable[[], Awaitable[dict[str, Any]]]


class CameraRoutes:
    def __init__(self, board: Board, fleet: Fleet, recent_samples: int) -> None:
        self.board = board
        self.fleet = fleet
        self.recent_samples = recent_samples

    def add(self, r: web.UrlDispatcher) -> None:
        r.add_get("/api/fleet", self._fleet)
        r.add_get("/api/cameras", self._cameras)
        r.add_get("/api/cameras/live", self._cameras_live)
        r.add_get("/api/cameras/{name}/frame.jpg", self._camera_frame)
        r.add_get("/api/cameras/{name}/samples", self._camera_samples)
        r.add_get("/api/cameras/{name}/thumbs/{seq}.jpg", self._camera_thumb)

    async def _fleet(self, request: web.Request) -> web.Response:
        """The fleet header: cameras by state, samples judged against due, model servers, backlog."""
        return reply({**self.board.fleet(time.monotonic()), **await self.fleet()})

    async def _cameras(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        return reply([cam.json(now) for cam in self.board.cameras.values()])

    async def _cameras_live(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the cameras that changed, at most once a second."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        sent: dict[str, int] = {}
        try:
            while True:
                now = time.monotonic()
                changed = [cam.json(now) for cam in self.board.cameras.values()
                           if sent.get(cam.name) != cam.version]
                gone = [n for n in sent if n not in self.board.cameras]
                for n in gone:
                    del sent[n]
                if changed or gone or not sent:
                    sent.update({c["name"]: c["version"] for c in changed})
                    data = json.dumps({"cameras": changed, "names": list(self.board.cameras)})
                    await response.write(f"data: {data}\n\n".encode())
                else:
                    await response.write(b": idle\n\n")  # finds a closed connection
                await asyncio.sleep(LIVE_PERIOD_S)
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    def _camera(self, request: web.Request) -> Any:
        cam = self.board.cameras.get(request.match_info["name"])
        if cam is None:
            raise error(404, "no such camera")
        return cam

    async def _camera_frame(self, request: web.Request) -> web.Response:
        cam = self._camera(request)
        if cam.frame is None:
            raise error(404, "no frame judged yet")
        return jpeg(cam.frame)

    async def _camera_samples(self, request: web.Request) -> web.Response:
        cam = self._camera(request)
        limit = int_arg(request.query.get("limit"), 100, 1, self.recent_samples)
        return reply({"camera": cam.json(time.monotonic()),
                      "samples": self.board.recent(cam.name, limit)})

    async def _camera_thumb(self, request: web.Request) -> web.Response:
        cam = self._camera(request)
        thumb = cam.thumbs.get(int_arg(request.match_info["seq"], -1, -1, 2**62))
        if thumb is None:
            raise error(404, "no such thumbnail (only the newest are kept)")
        return jpeg(thumb)
