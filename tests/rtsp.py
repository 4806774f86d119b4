"""Drives tests/fakes/rtsp_server.py (GStreamer, run by the system Python) from tests."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

SERVER = Path(__file__).parent / "fakes" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"


class RtspServer:
    def __init__(self, port: int, *, user: str | None = None, password: str | None = None,
                 gop: int = 25, size: str = "640x360", pattern: str = "solid-color",
                 bitrate: int | None = None, codec: str = "h264") -> None:
        self.port = port
        self.args = [str(port), "--gop", str(gop), "--size", size, "--pattern", pattern, "--codec", codec]
        if bitrate:
            self.args += ["--bitrate", str(bitrate)]
        if user:
            self.args += ["--user", user, "--password", password or ""]
        self.proc: subprocess.Popen[str] | None = None
        self.colour = "grey"
        self._pin: threading.Thread | None = None  # the client that prime() keeps on the stream

    def url(self, path: str = "/live", creds: str = "") -> str:
        return f"rtsp://{creds + '@' if creds else ''}127.0.0.1:{self.port}{path}"

    def start(self) -> RtspServer:
        # A session of its own: a camera is not on the daemon's box, so where the kernel
        # shares the CPU by session (autogroup) it is not one with the test's or bench's.
        # It ends when its stdin closes, so it does not outlive the test.
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), *self.args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"RTSP server did not start: {line!r} {err[-2000:]}")
        if self.colour != "grey":
            self.send(self.colour)
        return self

    def prime(self) -> None:
        """Start the shared stream, and keep one client on it until the server is killed.

        gst-rtsp-server aborts (``gst_rtsp_media_get_rates: assertion failed``) when
        a crowd of TCP clients joins its shared stream while no TCP client is on it:
        4 test servers of 4 died within 15 crowds of 8 clients; with one client kept
        on the stream, 0 of 4. A real camera serves such crowds.
        """
        import av

        if self._pin is not None and self._pin.is_alive():
            return
        opened = threading.Event()
        url = self.url()

        def hold() -> None:
            try:
                with av.open(url, options={"rtsp_transport": "tcp", "timeout": "3000000"},
                             timeout=(10.0, None)) as c:
                    for i, _ in enumerate(c.demux(c.streams.video[0])):
                        if i == 0:
                            opened.set()
                        if self.proc is None:
                            return
            except (av.FFmpegError, OSError):
                return  # the server was killed
            finally:
                opened.set()

        self._pin = threading.Thread(target=hold, name="rtsp-pin", daemon=True)
        self._pin.start()
        opened.wait(15)

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
        if self._pin is not None:
            self._pin.join(10)  # its connection is gone: it ends at once
            self._pin = None
