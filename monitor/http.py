"""GET /metrics, /healthz and /readyz (and the console), served from the daemon's own event loop.

Served from the loop on purpose: a wedged loop stops answering /healthz,
which is what a liveness check should see.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitor.metrics import Metrics


class Routes(Protocol):
    def routes(self, app: web.Application) -> None: ...


class HttpServer:
    def __init__(self, host: str, port: int, metrics: Metrics,
                 readiness: Callable[[], str | None], idle_timeout: float = 10.0,
                 console: Routes | None = None) -> None:
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
        self._exposition = ThreadPoolExecutor(1, thread_name_prefix="metrics")

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
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]  # the real one when 0 was asked for

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
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
