"""Who may use the console: signed session cookies, CSRF tokens, login throttling.

HMAC-SHA256 from the standard library signs the cookie and the CSRF token
(passwords: ``monitor.passwords``). The key
that signs them lives in the state directory, so sessions survive a restart
and every shard behind one load balancer can share it through the same file.
Everything here is pure except ``load_key``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

from monitor.http import within
from monitor.passwords import b64, unb64

SESSION_SECONDS = 12 * 3600
COOKIE = "vlm_session"


def load_key(path: Path) -> bytes:
    """The signing key: read, or made once (mode 0600)."""
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    os.replace(tmp, path)
    return key


@dataclass(frozen=True, slots=True)
class Session:
    user: str | None  # None: the console is open (loopback, no users configured)
    nonce: str
    expires: float
    generation: str = ""  # the user's credentials when it began (Signer.generation)


class Signer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, purpose: str, data: bytes) -> str:
        return b64(hmac.new(self._key, purpose.encode() + b"\0" + data, hashlib.sha256).digest())

    def cookie(self, session: Session) -> str:
        body = b64(json.dumps([session.user, session.nonce, session.expires, session.generation]).encode())
        return f"{body}.{self._mac('session', body.encode())}"

    def generation(self, user: str, password_hash: str) -> str:
        """Changes with the user's password (and is unknown for a removed user): a session
        that began under other credentials is void."""
        return self._mac("generation", f"{user}\0{password_hash}".encode())[:22]

    def session(self, cookie: str | None, now: float) -> Session | None:
        """The session a cookie holds, if we signed it and it has not expired."""
        if not cookie or "." not in cookie:
            return None
        body, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac, self._mac("session", body.encode())):
            return None
        try:
            user, nonce, expires, generation = json.loads(unb64(body))
        except (ValueError, TypeError):
            return None  # also a cookie from before generations: it could not be revoked
        if not isinstance(expires, int | float) or expires < now:
            return None
        return Session(user, str(nonce), float(expires), str(generation))

    def csrf(self, session: Session) -> str:
        """Bound to the session: a page on another site can neither read nor forge it."""
        return self._mac("csrf", session.nonce.encode())

    def new_session(self, user: str | None, now: float, generation: str = "") -> Session:
        return Session(user, secrets.token_urlsafe(16), now + SESSION_SECONDS, generation)


def client_address(remote: str | None, forwarded_for: str | None,
                   trusted: Sequence[IPv4Network | IPv6Network]) -> str:
    """Who sent a request: the peer, or, when the peer is a trusted proxy, the nearest address
    in X-Forwarded-For that is not one (the hops before it are the client's to make up)."""
    address = remote or "?"
    if not forwarded_for or not within(address, trusted):
        return address
    for hop in reversed(forwarded_for.split(",")):
        address = hop.strip()[:64] or "?"
        if not within(address, trusted):
            break
    return address


@dataclass
class LoginThrottle:
    """A few failed logins from one address make the next ones wait, doubling each time.

    ``wait`` says how long before the next attempt is heard; a success forgets
    the address. Bounded: the oldest addresses are forgotten first.
    """

    free_failures: int = 3
    max_wait: float = 60.0
    forget_after: float = 900.0
    max_addresses: int = 10_000
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)  # address -> (count, last)

    def wait(self, address: str, now: float) -> float:
        count, last = self._failures.get(address, (0, 0.0))
        if count < self.free_failures or now - last > self.forget_after:
            return 0.0
        delay = min(self.max_wait, 2.0 ** (count - self.free_failures))
        return max(0.0, last + delay - now)

    def failed(self, address: str, now: float) -> None:
        count, last = self._failures.pop(address, (0, 0.0))
        if now - last > self.forget_after:
            count = 0
        self._failures[address] = (count + 1, now)
        while len(self._failures) > self.max_addresses:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
