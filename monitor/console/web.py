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
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from ipaddress import ip_network
from urllib.parse import urlsplit

from aiohttp import web

from monitor import logs
from monitor.alerts.outbox import Outbox
from monitor.alerts.snapshots import Snapshots
from monitor.board import Board
from monitor.config import ConsoleConfig, ServerConfig
from monitor.console.auth import COOKIE, SESSION_SECONDS, LoginThrottle, Session, Signer, client_address
from monitor.console.camera_api import CameraRoutes, Fleet
from monitor.console.clips import ClipRoutes
from monitor.console.event_api import EventRoutes
from monitor.console.reading import SESSION_KEY, body_json, is_text
from monitor.console.replies import error, reply, too_many
from monitor.console.revoked import Revoked
from monitor.console.scan_api import ScanRoutes
from monitor.console.scans import Scans
from monitor.feedback import Feedback
from monitor.metrics import Metrics
from monitor.passwords import check_password, dummy_hash

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css",
          "favicon.svg": "image/svg+xml"}
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
PER_CLIENT = 32  # requests in progress from one client address (a browser needs a few)
CHECKS_AT_ONCE = 2  # password checks running (each holds 32 MiB)
CHECKS_WAITING = 6  # and waiting for one of those; past it a login is 429 at once, unhashed


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
        self.feedback = feedback
        self.scans = scans
        # The API's resources, each with only what it needs.
        self.resources = (CameraRoutes(board, fleet, cfg.recent_samples),
                          EventRoutes(outbox, snapshots, ClipRoutes(clips, key), feedback, metrics),
                          ScanRoutes(scans, cfg))
        self.shard = shard  # "I/N" when this replica runs one shard of the streams
        self.throttle = LoginThrottle()
        # The pages are read once, here (the console is built in a thread), never on the loop.
        self._pages = {name: resources.files("monitor.console").joinpath("static", name).read_bytes()
                       for name in STATIC}
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
        for resource in self.resources:
            resource.add(r)

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
            raise too_many(f"more than {PER_CLIENT} requests at once from one address", 1.0)
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
            raise too_many(f"too many failed logins; try again in {wait:.0f} s", wait)
        if self._checking >= CHECKS_AT_ONCE + CHECKS_WAITING:
            raise too_many("too many logins at once; try again in a second", 1.0)
        # Counted as failed until it succeeds: attempts in flight count against the throttle,
        # so a burst is not all heard before the first of it fails.
        self.throttle.failed(address, time.time())
        body = await body_json(request)
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not is_text(name + password):
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


def _hostname(host: str) -> str:
    """The name in a Host header, without its port: ``[::1]:9108`` and ``[::1]`` are ``[::1]``."""
    if host.startswith("["):
        return host[:host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0]
