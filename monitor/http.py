"""GET /metrics, /healthz and /readyz (and the console), served from the daemon's own event loop.

Served from the loop on purpose: a wedged loop stops answering /healthz,
which is what a liveness check should see.

A client address holds at most ``PER_ADDRESS`` connections at once: past that
a new one is closed as it is accepted, before a byte is read, so one host
opening sockets and sending nothing cannot take the descriptors the cameras,
the model server and /healthz need (each idle one is also closed after
``idle_timeout``). Trusted proxies are exempt: behind one, everyone shares its
address, and the console counts requests per client behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitor import logs
from monitor.metrics import Metrics

PER_ADDRESS = 64  # connections at once from one client address (a browser opens ~6)


class Routes(Protocol):
    def routes(self, app: web.Application) -> None: ...


def within(address: str, networks: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)


class ConnectionCap:
    """How many connections each client address holds; refuses past ``limit``. Pure."""

    def __init__(self, limit: int, exempt: Sequence[IPv4Network | IPv6Network] = ()) -> None:
        self.limit = limit
        self.exempt = list(exempt)
        self.held: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        if self.held.get(address, 0) >= self.limit and not within(address, self.exempt):
            return False
        self.held[address] = self.held.get(address, 0) + 1
        return True

    def release(self, address: str) -> None:
        left = self.held.get(address, 0) - 1
        if left > 0:
            self.held[address] = left
        else:
            self.held.pop(address, None)


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted against its client's address."""

    def __init__(self, inner: asyncio.Protocol, cap: ConnectionCap, refused: Callable[[str], None]) -> None:
        self.inner = inner
        self.cap = cap
        self.refused = refused
        self.address: str | None = None  # None: refused, nothing reaches aiohttp

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        if not self.cap.admit(address):
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            self.refused(address)
            return
        self.address = address
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.address is not None:
            self.cap.release(self.address)
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.address is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.address is not None else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class HttpServer:
    def __init__(self, host: str, port: int, metrics: Metrics,
                 readiness: Callable[[], str | None], idle_timeout: float = 10.0,
                 console: Routes | None = None, trusted_proxies: Sequence[str] = ()) -> None:
        self.host = host
        # A connection that sends nothing (or nothing more) is closed after this long, so
        # idle and half-open sockets cannot pile up (aiohttp's default is 75 s).
        self.idle_timeout = idle_timeout
        self.port = port
        self.metrics = metrics
        # None when ready, else the reason in one line.
        self.readiness = readiness
        self.console = console
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._exposition = ThreadPoolExecutor(1, thread_name_prefix="metrics")
        self.cap = ConnectionCap(PER_ADDRESS, [ip_network(p, strict=False) for p in trusted_proxies])
        self._repeats = logs.Repeats()
        self._log = logs.get("monitor.http")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self.console is not None:
            self.console.routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     keepalive_timeout=self.idle_timeout)
        await self._runner.setup()
        handler = self._runner.server
        assert handler is not None
        self._listener = await asyncio.get_running_loop().create_server(
            lambda: _Counted(handler(), self.cap, self._refused), self.host, self.port)
        self.port = self._listener.sockets[0].getsockname()[1]  # the real one when 0 was asked for

    def _refused(self, address: str) -> None:
        left_out = self._repeats.check(address, time.monotonic())
        if left_out is not None:  # one line a minute per address, never one per attempt
            self._log.warning("connection refused: too many at once from one address",
                              address=address, limit=self.cap.limit, left_out=left_out)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()  # closes the connections still open
            self._runner = None
        self._exposition.shutdown(wait=False)

    async def _metrics(self, request: web.Request) -> web.Response:
        # Rendering is ~15 ms at 200 cameras, ~3,000 series: off the loop, in a thread of its
        # own (not the default pool, where it would queue behind the frames being prepared).
        body = await asyncio.get_running_loop().run_in_executor(
            self._exposition, generate_latest, self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        reason = self.readiness()
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")
