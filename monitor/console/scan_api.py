"""The console's scans of uploaded recordings: the upload (bounded in size, pace, pixels and
number at once), the list, a scan's rows, its thumbnails, stopping it."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from aiohttp import BodyPartReader, web

from monitor.config import ConsoleConfig
from monitor.console.reading import Pace, int_arg, read_small, save_part
from monitor.console.replies import error, jpeg, reply
from monitor.console.scans import MAX_TARGETS, ScanRejected, Scans, display_name, scan_targets
from monitor.sources.base import SourceError
from monitor.sources.files import probe_video

SCAN_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_QUEUED_SCANS = 5


class ScanRoutes:
    def __init__(self, scans: Scans, cfg: ConsoleConfig) -> None:
        self.scans = scans
        self.cfg = cfg
        self._uploading = 0  # uploads being received now

    def add(self, r: web.UrlDispatcher) -> None:
        r.add_get("/api/scans", self._scans)
        r.add_post("/api/scans", self._scan_upload)
        r.add_get("/api/scans/{id}", self._scan)
        r.add_post("/api/scans/{id}/stop", self._scan_stop)
        r.add_get("/api/scans/{id}/thumbs/{index}.jpg", self._scan_thumb)

    async def _scans(self, request: web.Request) -> web.Response:
        return reply([s.summary() for s in reversed(self.scans.scans.values())])

    def _scan_of(self, request: web.Request) -> Any:
        scan_id = request.match_info["id"]
        scan = self.scans.scans.get(scan_id) if SCAN_ID.match(scan_id) else None
        if scan is None:
            raise error(404, "no such scan")
        return scan

    async def _scan(self, request: web.Request) -> web.Response:
        scan = self._scan_of(request)
        return reply(scan.json(int_arg(request.query.get("since"), 0, 0, 10**9)))

    async def _scan_stop(self, request: web.Request) -> web.Response:
        scan = self._scan_of(request)
        self.scans.stop(scan.id)
        return reply(scan.summary())

    async def _scan_thumb(self, request: web.Request) -> web.Response:
        scan = self._scan_of(request)
        body = await asyncio.to_thread(self.scans.thumb, scan.id,
                                       int_arg(request.match_info["index"], -1, -1, 10**9))
        if body is None:
            raise error(404, "no such thumbnail")
        return jpeg(body)

    async def _scan_upload(self, request: web.Request) -> web.Response:
        """multipart/form-data: ``video`` (the recording) and one or more ``targets``."""
        active = self._uploading + sum(s.status in ("queued", "running") for s in self.scans.scans.values())
        if active >= MAX_QUEUED_SCANS:  # uploads in progress count: disk use stays bounded
            raise error(429, f"{active} scans are already queued or running; wait for one to finish")
        limit = int(self.cfg.upload_max_mb * 1e6)
        if request.content_length is not None and request.content_length > limit + 64 * 1024:
            raise error(413, f"the upload is larger than the limit of {self.cfg.upload_max_mb:g} MB")
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError, KeyError):
            raise error(400, "send multipart/form-data with a `video` file and `targets`") from None
        self._uploading += 1  # before the first await: counted by every upload checked after it
        scan_id: str | None = None
        try:
            new_id, path = await asyncio.to_thread(self.scans.new_folder)
            scan_id = new_id
            pace = Pace(time.monotonic())
            texts: list[str] = []
            name: str | None = None
            while (part := await pace.within(reader.next())) is not None:
                if not isinstance(part, BodyPartReader):
                    raise error(400, "nested multipart is not accepted")
                if part.name == "video":
                    name = display_name(part.filename)
                    await save_part(part, path, limit, self.cfg.upload_max_mb, pace)
                elif part.name in ("targets", "target", "find"):
                    if len(texts) > MAX_TARGETS:
                        raise error(400, f"at most {MAX_TARGETS} targets per scan")
                    texts.extend((await read_small(part, pace)).splitlines())
                else:
                    raise error(400, f"unexpected form field {str(part.name)[:40]!r}")
            if name is None:
                raise error(400, "no `video` file in the form")
            try:
                targets = scan_targets(texts)
                duration = await asyncio.to_thread(probe_video, path, self.cfg.max_upload_pixels)
            except (ScanRejected, SourceError) as e:
                raise error(400, f"{name}: {e}") from None
            scan = self.scans.submit(new_id, name, targets, duration)
        except BaseException:
            if scan_id is not None:
                await asyncio.to_thread(self.scans.discard, scan_id)
            raise
        finally:
            self._uploading -= 1
        return reply({"id": scan.id, **scan.summary()}, status=202)
