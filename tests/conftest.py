from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.clips import make_clip
from tests.fakes.vllm import FakeVLM

ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.loopdebug"]


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """20 s 1280x720 clips: the red figure visible from 5 s to 12 s, and never."""
    d = tmp_path_factory.mktemp("clips")
    return {
        "red": make_clip(d / "red.mp4", red=(5.0, 12.0)),
        "empty": make_clip(d / "empty.mp4", red=None, seconds=8.0),
    }


@pytest.fixture
def fake_vlm() -> Iterator[FakeVLM]:
    fake = FakeVLM().start()
    yield fake
    fake.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)  # when the answer was sent

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real webhook receiver in a thread.

    Each request is answered with the next of ``statuses`` if any, else
    ``failing_status`` until ``fail_until`` (time.monotonic()), else 200,
    after ``delay`` seconds.
    """

    port: int = 0
    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    fail_until: float = 0.0
    failing_status: int = 503
    delay: float = 0.0
    attempts: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    got: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.statuses:
            status = self.statuses.pop(0)
        elif time.monotonic() < self.fail_until:
            status = self.failing_status
        else:
            status = 200
        if status < 300:
            self.received.append(Received(dict(request.headers), body))
            self.got.set()
        return web.Response(status=status)

    def start(self) -> Receiver:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/hook", self._handle)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            self.port = runner.addresses[0][1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 90,
        cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as a user would."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("VLM_MONITOR_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd or ROOT, input=input)


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "monitor", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env, cwd=ROOT)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def outbox_count(db: Path, query: str) -> int:
    """A ``SELECT COUNT(*)`` on a running daemon's outbox; 0 until the file and its tables
    exist (the file appears a moment before its schema: a busy machine shows that moment)."""
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(db)) as con:
            return int(con.execute(query).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
