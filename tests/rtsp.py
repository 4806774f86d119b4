"""Drives tests/fakes/rtsp_server.py (GStreamer, run by the system Python) from tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

SERVER = Path(__file__).parent / "fakes" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"


class RtspServer:
    def __init__(self, port: int, *, user: str | None = None, password: str | None = None,
                 gop: int = 25, size: str = "640x360", pattern: str = "solid-color") -> None:
        self.port = port
        self.args = [str(port), "--gop", str(gop), "--size", size, "--pattern", pattern]
        if user:
            self.args += ["--user", user, "--password", password or ""]
        self.proc: subprocess.Popen[str] | None = None
        self.colour = "grey"

    def url(self, path: str = "/live", creds: str = "") -> str:
        return f"rtsp://{creds + '@' if creds else ''}127.0.0.1:{self.port}{path}"

    def start(self) -> RtspServer:
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), *self.args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"RTSP server did not start: {line!r} {err[-2000:]}")
        if self.colour != "grey":
            self.send(self.colour)
        return self

    def prime(self) -> None:
        """Have one client start the shared stream before a crowd opens it.

        The test server (gst-rtsp-server under PyGObject) was seen to die when ~20
        clients asked for the not-yet-prepared shared stream at the same moment;
        a real camera serves them.
        """
        import av

        with av.open(self.url(), options={"rtsp_transport": "tcp"}, timeout=(10.0, 10.0)) as c:
            next(c.demux(c.streams.video[0]))

    def send(self, command: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == f"ack {command}"
        if command in ("red", "grey"):
            self.colour = command

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
