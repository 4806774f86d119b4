"""Signed links: a URL that works without a console session until it expires. Pure.

A clip's link goes out with its ``clip_ready`` event to a chat bot or a phone,
which have no session. It names one file and an expiry, and carries an
HMAC-SHA256 of both under the console's key: change either and it is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

from monitor.passwords import b64


def signature(key: bytes, path: str, expires: int) -> str:
    return b64(hmac.new(key, f"link\0{path}\0{expires}".encode(), hashlib.sha256).digest())


def signed(key: bytes, base_url: str, path: str, expires: int) -> str:
    """``base_url`` + ``path`` with its expiry (Unix seconds) and signature."""
    return f"{base_url.rstrip('/')}{quote(path)}?expires={expires}&sig={signature(key, path, expires)}"


def valid(key: bytes, path: str, expires: str | None, sig: str | None, now: float) -> bool:
    """Whether a request for ``path`` carries a signature we made, not yet expired."""
    if not expires or not sig or not expires.isascii() or not expires.isdigit() or len(expires) > 12:
        return False
    return int(expires) > now and hmac.compare_digest(sig.encode("ascii", "replace"),
                                                      signature(key, path, int(expires)).encode())
