"""Stream URLs: live or file, and their credentials, read one way only. Pure.

Camera passwords hold '@', '#', '/' and ':' often enough that urlsplit() gets
them wrong (it splits at the first '#'), so the credentials are cut off the
raw text at the last '@' before anything else looks at the URL; redacting for
logs and connecting for diagnosis both use ``split_url``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "http", "https", "udp", "srt", "tcp"})
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://(.*)$", re.S)


@dataclass(frozen=True, slots=True)
class UrlParts:
    scheme: str  # lower case
    username: str | None  # percent-decoded
    password: str | None
    host: str  # without brackets for IPv6
    port: int | None  # None: not written, or not a number (see port_error)
    path: str  # from the first '/' after the host, query excluded
    query: str
    port_error: bool = False


def split_url(url: str) -> UrlParts | None:
    """The URL's parts, credentials cut at the last '@'; None for a plain file path."""
    m = _SCHEME.match(url)
    if m is None:
        return None
    scheme, rest = m.group(1).lower(), m.group(2)
    username = password = None
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        user, sep, pw = userinfo.partition(":")
        username, password = unquote(user), (unquote(pw) if sep else None)
    rest, _, query = rest.partition("?")
    cut = rest.find("/")
    netloc, path = (rest, "") if cut == -1 else (rest[:cut], rest[cut:])
    if netloc.startswith("["):  # [IPv6]:port
        host, _, after = netloc[1:].partition("]")
        port_text = after[1:] if after.startswith(":") else ""
    else:
        host, _, port_text = netloc.partition(":")
    port, port_error = None, False
    if port_text:
        port_error = not port_text.isdigit() or not 0 < int(port_text) < 65536
        port = None if port_error else int(port_text)
    return UrlParts(scheme, username, password, host, port, path, query, port_error)


def redact_url(url: str) -> str:
    """The URL with any credentials replaced by *** and the query string hidden."""
    m = _SCHEME.match(url)
    if m is None:  # a plain file path
        return url
    rest = m.group(2)
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    if "?" in rest:
        rest = rest.split("?", 1)[0] + "?…"
    return m.group(1) + "://" + rest


def is_live(url: str) -> bool:
    parts = split_url(url)
    return parts is not None and parts.scheme in LIVE_SCHEMES


def file_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    return Path(url)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the console on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
