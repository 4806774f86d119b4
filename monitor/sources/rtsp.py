"""Why a live stream would not open, found out by asking the camera ourselves.

FFmpeg only says the open failed; one RTSP DESCRIBE tells a wrong path (404)
from wrong credentials (401) from a dead or hung host, in words that hold no
credentials.
"""

from __future__ import annotations

import base64
import socket

from monitor.urls import DEFAULT_PORTS, split_url


def diagnose(url: str, timeout_s: float = 5.0) -> str:
    """Why a stream would not open, in words that hold no credentials.

    OpenCV only says "not opened"; for RTSP one DESCRIBE tells a wrong path
    (404) from wrong credentials (401) from a dead host.
    """
    parts = split_url(url)
    if parts is None or not parts.host:
        return "the URL has no host"
    if parts.port_error:
        return "the URL's port is not a number"
    host, scheme = parts.host, parts.scheme
    port = parts.port or DEFAULT_PORTS.get(scheme, 554)
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    except OSError as e:
        return f"cannot connect to {host}:{port} ({e.strerror or type(e).__name__})"
    with sock:
        if scheme != "rtsp":
            return "the server accepted the connection but sent no usable video"
        clean = f"rtsp://{host}:{port}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
        request = f"DESCRIBE {clean} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n"
        if parts.username is not None:
            creds = f"{parts.username}:{parts.password or ''}"
            request += f"Authorization: Basic {base64.b64encode(creds.encode()).decode()}\r\n"
        try:
            sock.settimeout(timeout_s)
            sock.sendall((request + "\r\n").encode())
            status_line = sock.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
        except OSError:
            return f"{host}:{port} accepted the connection but did not answer RTSP"
    fields = status_line.split(" ", 2)
    code = fields[1] if len(fields) > 1 else ""
    if code == "401":
        return "401 Unauthorized: check the user name and password"
    if code == "404":
        return "404 Not Found: check the stream path"
    if code == "200":
        return "the camera answers, but its video could not be opened or decoded"
    return f"the server answered {status_line[:60]!r}"
