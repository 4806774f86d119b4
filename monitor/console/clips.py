"""The alerts' clips on the console: for a session, and by a signed link for anyone holding one.

    GET /api/events/{id}/clip.mp4          with a session, like the snapshot
    GET /clips/{id}.mp4?expires=…&sig=…    without one: the link a clip_ready event carries;
                                           unsigned, tampered or expired: 403

Served as files, so a browser's range requests (seeking, and Safari's first
probe) work; never kept by a cache, like every camera image here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from aiohttp import web

from monitor.alerts.snapshots import Snapshots
from monitor.console.replies import error
from monitor.links import valid

NAME = re.compile(r"^([0-9a-f]{32})\.mp4$")
ALERT_ID = re.compile(r"^[0-9a-f]{32}$")


class ClipRoutes:
    def __init__(self, files: Snapshots, key: bytes) -> None:
        self.files = files
        self.key = key

    def add(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/events/{id}/clip.mp4", self._by_session)
        router.add_get("/clips/{name}", self._by_link)

    def states(self, alert_ids: Sequence[str], announced: set[str]) -> dict[str, str]:
        """Per alert: "ready" (on disk), "expired" (written once, removed since), or absent."""
        out = {}
        for alert_id in alert_ids:
            if self.files.path(alert_id).is_file():
                out[alert_id] = "ready"
            elif alert_id in announced:
                out[alert_id] = "expired"
        return out

    async def _by_session(self, request: web.Request) -> web.StreamResponse:
        alert_id = request.match_info["id"]
        if not ALERT_ID.match(alert_id):
            raise error(404, "no clip for this event")
        return self._file(alert_id)

    async def _by_link(self, request: web.Request) -> web.StreamResponse:
        match = NAME.match(request.match_info["name"])
        if match is None or not valid(self.key, request.path, request.query.get("expires"),
                                      request.query.get("sig"), time.time()):
            raise error(403, "this link is not signed, or it has expired")
        return self._file(match.group(1))

    def _file(self, alert_id: str) -> web.StreamResponse:
        path = self.files.path(alert_id)
        if not path.is_file():
            raise error(404, "no clip for this event (not written yet, or expired)")
        return web.FileResponse(path, headers={"Cache-Control": "no-store", "Content-Type": "video/mp4"})
