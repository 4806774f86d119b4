"""The console's pages and its JSON API, on the daemon's own HTTP server.

Every page is static (``static/``, shipped in the package, nothing from the
internet) and reads the API below; the API is the contract in the README's
"Console" section. Access: with users configured, every ``/api/`` call but
the login needs a session cookie (signed, HttpOnly, SameSite=Strict); every
call that changes state also needs the session's CSRF token in
``X-CSRF-Token``. With no users the daemon only starts on a loopback address,
the API is open to this machine, and a Host check keeps other sites' pages
(DNS rebinding) out.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib import resources
from ipaddress import ip_network
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import BodyPartReader, web

from monitor import logs
from monitor.alerts.outbox import Outbox
from monitor.alerts.snapshots import Snapshots
from monitor.board import Board
from monitor.config import ConsoleConfig, ServerConfig
from monitor.console.auth import COOKIE, SESSION_SECONDS, LoginThrottle, Session, Signer, client_address
from monitor.console.clips import ClipRoutes
from monitor.console.replies import error, reply
from monitor.console.revoked import Revoked
from monitor.console.scans import MAX_TARGETS, ScanRejected, Scans, display_name, scan_targets
from monitor.feedback import VERDICTS, Feedback, Judgement
from monitor.metrics import Metrics
from monitor.passwords import check_password, dummy_hash
from monitor.pipeline import LESSON_CHARS
from monitor.sources.base import SourceError
from monitor.sources.files import probe_video

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css",
          "favicon.svg": "image/svg+xml"}
ALERT_ID = re.compile(r"^[0-9a-f]{32}$")
SCAN_ID = re.compile(r"^[0-9a-f]{16}$")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
MAX_QUEUED_SCANS = 5
MAX_FIELD_BYTES = 8192
# A request body must keep coming (a byte every few seconds would hold its connection, and a
# descriptor, forever): its first bytes within GRACE_S, then MIN_RATE bytes a second on average.
GRACE_S = 10.0
MIN_RATE = 16 * 1024
MAX_JSON_BYTES = 64 * 1024
PER_CLIENT = 32  # requests in progress from one client address (a browser needs a few)
CHECKS_AT_ONCE = 2  # password checks running (each holds 32 MiB)
CHECKS_WAITING = 6  # and waiting for one of those; past it a login is 429 at once, unhashed
LIVE_PERIOD_S = 1.0  # the Cameras page hears of changes at most this often
SESSION_KEY: web.RequestKey[Session | None] = web.RequestKey("session")


T = TypeVar("T")

# The daemon's side of the fleet header (model servers, alerts pending, samples due).
Fleet = Callable[[], Awaitable[dict[str, Any]]]


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


def _jpeg(body: bytes) -> web.Response:
    # Camera images are not kept by any cache, the browser's included: they must not
    # outlive the session (a shared computer, after logout).
    return web.Response(body=body, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def _nosniff(request: web.Request, response: web.StreamResponse) -> None:
    """Every response is read as the type it says it is (a JSON answer never as HTML)."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


class Console:
    def __init__(self, cfg: ConsoleConfig, server: ServerConfig, key: bytes, board: Board,
                 outbox: Outbox, snapshots: Snapshots | None, clips: Snapshots, feedback: Feedback,
                 scans: Scans,
                 revoked: Revoked, metrics: Metrics, fleet: Fleet, *, shard: str | None = None) -> None:
        self.cfg = cfg
        self.users = {u.name: u.password_hash.get_secret_value() for u in server.users}
        self.signer = Signer(key)
        self.revoked = revoked
        # Behind https the cookie is sent only over TLS.
        self.secure_cookie = (server.public_url or "").startswith("https://")
        # The hosts our own pages are served from: a state change from any other is refused.
        self.public_host = urlsplit(server.public_url).netloc.lower() if server.public_url else None
        self.trusted_proxies = [ip_network(p, strict=False) for p in server.trusted_proxies]
        # Password checks (scrypt: 32 MiB, ~0.1 s each) in a pool of their own, never the
        # default one that preprocessing and the outbox use; a flood waits for none of it.
        self._checks = ThreadPoolExecutor(CHECKS_AT_ONCE, thread_name_prefix="password-check")
        self._checking = 0
        self._requests: dict[str, int] = {}  # client address -> requests in progress
        self.board = board
        self.outbox = outbox
        self.snapshots = snapshots
        self.clips = ClipRoutes(clips, key)
        self.feedback = feedback
        self.scans = scans
        self.metrics = metrics
        self.fleet = fleet
        self.shard = shard  # "I/N" when this replica runs one shard of the streams
        self.throttle = LoginThrottle()
        # The pages are read once, here (the console is built in a thread), never on the loop.
        self._pages = {name: resources.files("monitor.console").joinpath("static", name).read_bytes()
                       for name in STATIC}
        self._uploading = 0  # uploads being received now
        self._log = logs.get("monitor.console")

    @property
    def login_required(self) -> bool:
        return bool(self.users)

    def routes(self, app: web.Application) -> None:
        app.middlewares.append(self._guard)
        app.on_response_prepare.append(_nosniff)
        r = app.router
        r.add_get("/", self._index)
        r.add_get("/static/{name}", self._static)
        r.add_get("/api/session", self._session)
        r.add_post("/api/login", self._login)
        r.add_post("/api/logout", self._logout)
        r.add_get("/api/fleet", self._fleet)
        r.add_get("/api/cameras", self._cameras)
        r.add_get("/api/cameras/live", self._cameras_live)
        r.add_get("/api/cameras/{name}/frame.jpg", self._camera_frame)
        r.add_get("/api/cameras/{name}/samples", self._camera_samples)
        r.add_get("/api/cameras/{name}/thumbs/{seq}.jpg", self._camera_thumb)
        r.add_get("/api/events", self._events)
        r.add_get("/api/events/{id}/snapshot.jpg", self._snapshot)
        r.add_post("/api/events/{id}/feedback", self._judge)
        self.clips.add(r)
        r.add_get("/api/scans", self._scans)
        r.add_post("/api/scans", self._scan_upload)
        r.add_get("/api/scans/{id}", self._scan)
        r.add_post("/api/scans/{id}/stop", self._scan_stop)
        r.add_get("/api/scans/{id}/thumbs/{index}.jpg", self._scan_thumb)

    # --- access ------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        # An open console (loopback, no users) answers only to its own names, /metrics too:
        # a page on another site whose name now points here (DNS rebinding) reads nothing.
        if not self.login_required and _hostname(request.host) not in LOCAL_HOSTS:
            raise error(403, "the console without users answers only to localhost")
        if path in ("/metrics", "/healthz", "/readyz"):
            return await handler(request)
        if request.method not in ("GET", "HEAD") and not self._same_site(request):
            raise error(403, "a request from another site")
        address = self.client(request)
        if self._requests.get(address, 0) >= PER_CLIENT:
            raise _too_many(f"more than {PER_CLIENT} requests at once from one address", 1.0)
        self._requests[address] = self._requests.get(address, 0) + 1
        try:
            return await self._guarded(request, handler)
        finally:
            if (left := self._requests.pop(address) - 1) > 0:
                self._requests[address] = left

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        session = self._valid(self.signer.session(request.cookies.get(COOKIE), time.time()))
        request[SESSION_KEY] = session
        if not path.startswith("/api/") or path in ("/api/login", "/api/session"):
            return await handler(request)
        if self.login_required and (session is None or session.user is None):
            raise error(401, "log in first")
        if request.method not in ("GET", "HEAD"):
            token = request.headers.get("X-CSRF-Token", "")
            expected = self.signer.csrf(session).encode() if session else b""
            if session is None or not hmac.compare_digest(token.encode("utf-8", "replace"), expected):
                raise error(403, "missing or wrong X-CSRF-Token")
        return await handler(request)

    def _valid(self, session: Session | None) -> Session | None:
        """The session, unless logged out, or its user removed or given a new password since."""
        if session is None or session.nonce in self.revoked:
            return None
        if session.user is None:
            return None if self.login_required else session
        stored = self.users.get(session.user)
        if stored is None or not hmac.compare_digest(session.generation,
                                                     self.signer.generation(session.user, stored)):
            return None
        return session

    def _same_site(self, request: web.Request) -> bool:
        """A browser names the page that sent a request (Origin, else Referer): it must be ours.
        Neither header: not a browser's cross-site form, which always sends Origin."""
        source = request.headers.get("Origin") or request.headers.get("Referer")
        if source is None:
            return True
        try:
            host = urlsplit(source).netloc.lower()
        except ValueError:  # "http://[::1", say
            return False
        return bool(host) and host in (request.host.lower(), self.public_host)

    def client(self, request: web.Request) -> str:
        return client_address(request.remote, request.headers.get("X-Forwarded-For"),
                              self.trusted_proxies)

    def close(self) -> None:
        self._checks.shutdown(wait=False, cancel_futures=True)
        self.revoked.close()

    def _set_cookie(self, response: web.Response, session: Session) -> None:
        response.set_cookie(COOKIE, self.signer.cookie(session), max_age=SESSION_SECONDS, httponly=True,
                            samesite="Strict", secure=self.secure_cookie, path="/")

    async def _session(self, request: web.Request) -> web.Response:
        """Who is logged in, and the CSRF token; open consoles get an anonymous session here."""
        session: Session | None = request[SESSION_KEY]
        if session is None and not self.login_required:
            session = self.signer.new_session(None, time.time())
        if session is None or (self.login_required and session.user is None):
            return reply({"login_required": True, "user": None,
                          "error": "log in first"}, status=401)  # like every /api/ call
        response = reply({"login_required": self.login_required, "user": session.user,
                          "csrf_token": self.signer.csrf(session), "shard": self.shard})
        self._set_cookie(response, session)
        return response

    async def _login(self, request: web.Request) -> web.Response:
        address = self.client(request)
        wait = self.throttle.wait(address, time.time())
        if wait > 0:
            raise _too_many(f"too many failed logins; try again in {wait:.0f} s", wait)
        if self._checking >= CHECKS_AT_ONCE + CHECKS_WAITING:
            raise _too_many("too many logins at once; try again in a second", 1.0)
        # Counted as failed until it succeeds: attempts in flight count against the throttle,
        # so a burst is not all heard before the first of it fails.
        self.throttle.failed(address, time.time())
        body = await _body_json(request)
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not _text(name + password):
            raise error(400, 'send JSON {"name": ..., "password": ...} (text, at most 1024 characters)')
        stored = self.users.get(name)
        self._checking += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(
                self._checks, check_password, password, stored or dummy_hash())
        finally:
            self._checking -= 1
        if stored is None or not ok:
            self._log.warning("console login refused", user=name[:64], address=address)
            raise error(401, "wrong name or password")
        self.throttle.succeeded(address)
        session = self.signer.new_session(name, time.time(), self.signer.generation(name, stored))
        self._log.info("console login", user=name, address=address)
        response = reply({"user": name, "csrf_token": self.signer.csrf(session), "shard": self.shard})
        self._set_cookie(response, session)
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        session: Session | None = request[SESSION_KEY]
        if session is not None:  # the cookie is void from now on, wherever a copy of it is
            await asyncio.to_thread(self.revoked.revoke, session.nonce, session.expires)
        response = reply({"user": None})
        response.del_cookie(COOKIE, path="/")
        return response

    # --- pages -----------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        body = self._pages[name]
        return web.Response(body=body, content_type=STATIC[name], headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                       "style-src 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff"})

    # --- cameras ---------------------------------------------------------------------

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
        return _jpeg(cam.frame)

    async def _camera_samples(self, request: web.Request) -> web.Response:
        cam = self._camera(request)
        limit = _int(request.query.get("limit"), 100, 1, self.cfg.recent_samples)
        return reply({"camera": cam.json(time.monotonic()),
                      "samples": self.board.recent(cam.name, limit)})

    async def _camera_thumb(self, request: web.Request) -> web.Response:
        cam = self._camera(request)
        thumb = cam.thumbs.get(_int(request.match_info["seq"], -1, -1, 2**62))
        if thumb is None:
            raise error(404, "no such thumbnail (only the newest are kept)")
        return _jpeg(thumb)

    # --- events ----------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.Response:
        q = request.query
        events = await asyncio.to_thread(
            self.outbox.events, stream=q.get("stream") or None, target=q.get("target") or None,
            event=q.get("event") or None, since=_float(q.get("since")), until=_float(q.get("until")),
            before=_int(q.get("before"), None, 0, 2**62), after=_int(q.get("after"), None, 0, 2**62),
            limit=_int(q.get("limit"), 50, 1, 500))
        ids = [e.alert.id for e in events]
        judged = await asyncio.to_thread(self.feedback.of, ids)
        clips = await asyncio.to_thread(self._clip_states, ids)
        out = []
        for e in events:
            payload = e.alert.payload()
            snapshot = payload.pop("snapshot", None)
            payload.pop("clip_url", None)  # the signed link is for those without a session
            clip = clips.get(e.alert.id) if e.alert.event == "target_detected" else None
            out.append({**payload, "seq": e.seq, "created": e.created,
                        "snapshot": f"/api/events/{e.alert.id}/snapshot.jpg" if snapshot else None,
                        "clip": f"/api/events/{e.alert.id}/clip.mp4" if clip == "ready" else None,
                        "clip_state": clip,
                        "deliveries": e.deliveries, "feedback": judged.get(e.alert.id)})
        return reply(out)

    def _clip_states(self, ids: list[str]) -> dict[str, str]:
        """Blocking: which of these alerts have a clip on disk, or had one."""
        return self.clips.states(ids, self.outbox.clips_announced(ids))

    async def _snapshot(self, request: web.Request) -> web.Response:
        alert_id = request.match_info["id"]
        body = None
        if ALERT_ID.match(alert_id) and self.snapshots is not None:
            body = await asyncio.to_thread(self.snapshots.read, f"{alert_id}.jpg")
        if body is None:
            raise error(404, "no snapshot for this event")
        return _jpeg(body)

    async def _judge(self, request: web.Request) -> web.Response:
        alert_id = request.match_info["id"]
        body = await _body_json(request)
        verdict, lesson = body.get("verdict"), body.get("lesson", "")
        if verdict not in VERDICTS:
            raise error(400, f"verdict must be one of: {', '.join(VERDICTS)}")
        if not isinstance(lesson, str) or not _text(lesson) or len(lesson) > LESSON_CHARS:
            raise error(400, f"lesson must be text of at most {LESSON_CHARS} characters")
        alert = await asyncio.to_thread(self.outbox.event, alert_id) if ALERT_ID.match(alert_id) else None
        if alert is None or alert.event != "target_detected":
            raise error(404, "no such alert")
        session: Session | None = request[SESSION_KEY]
        judgement = Judgement(alert.id, alert.stream, str(alert.fields["target"]), verdict,
                              str(alert.fields.get("description", "")), time.time(),
                              session.user if session else None, " ".join(lesson.split()))
        before = await asyncio.to_thread(self.feedback.judge, judgement)
        if before != verdict:
            self.metrics.feedback.labels(alert.stream, judgement.target, verdict).inc()
            if before is not None:
                self.metrics.feedback.labels(alert.stream, judgement.target, before).dec()
        self._log.info("alert judged", alert_id=alert.id, stream=alert.stream,
                       target=judgement.target, verdict=verdict, user=judgement.user)
        return reply({"id": alert.id, "feedback": verdict})

    # --- scans -----------------------------------------------------------------------

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
        return reply(scan.json(_int(request.query.get("since"), 0, 0, 10**9)))

    async def _scan_stop(self, request: web.Request) -> web.Response:
        scan = self._scan_of(request)
        self.scans.stop(scan.id)
        return reply(scan.summary())

    async def _scan_thumb(self, request: web.Request) -> web.Response:
        scan = self._scan_of(request)
        body = await asyncio.to_thread(self.scans.thumb, scan.id,
                                       _int(request.match_info["index"], -1, -1, 10**9))
        if body is None:
            raise error(404, "no such thumbnail")
        return _jpeg(body)

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
                    await _save_part(part, path, limit, self.cfg.upload_max_mb, pace)
                elif part.name in ("targets", "target", "find"):
                    if len(texts) > MAX_TARGETS:
                        raise error(400, f"at most {MAX_TARGETS} targets per scan")
                    texts.extend((await _read_small(part, pace)).splitlines())
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


async def _save_part(part: BodyPartReader, path: Path, limit: int, limit_mb: float, pace: Pace) -> None:
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


async def _read_small(part: BodyPartReader, pace: Pace) -> str:
    """A text field of the form, refused past a few KB (the whole part is never held)."""
    data = b""
    while chunk := await pace.read(partial(part.read_chunk, 4096)):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise error(400, f"the {part.name} field is longer than {MAX_FIELD_BYTES} bytes")
    return data.decode("utf-8", "replace")


async def _body_json(request: web.Request) -> dict[str, Any]:
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


def _hostname(host: str) -> str:
    """The name in a Host header, without its port: ``[::1]:9108`` and ``[::1]`` are ``[::1]``."""
    if host.startswith("["):
        return host[:host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0]


def _text(text: str) -> bool:
    """Short text that can be encoded (JSON may hold a lone surrogate, "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return len(text) <= 1024


def _too_many(message: str, wait: float) -> web.HTTPException:
    return web.HTTPTooManyRequests(text=json.dumps({"error": message}), content_type="application/json",
                                   headers={"Retry-After": str(int(wait) + 1)})


def _int(text: str | None, default: Any, low: int, high: int) -> Any:
    if text is None or text == "":
        return default
    try:
        return max(low, min(high, int(text)))
    except ValueError:
        raise error(400, f"not a whole number: {text[:20]!r}") from None


def _float(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise error(400, f"not a number: {text[:20]!r}") from None
