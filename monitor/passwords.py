"""Password hashes for the console's users: scrypt from the standard library.

Memory-hard and with no native dependency; ``vlm-monitor hash-password``
prints what the config's ``server.users[].password_hash`` holds. Pure.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    """Raises ValueError (binascii.Error) for anything but base64url."""
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


# 2^15 x 8 x 128 bytes = 32 MiB and ~0.1 s per check: slow for a guesser, fine for a login.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


class BadHash(ValueError):
    """A password hash from the config that is not ours."""


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * r * (n + p + 2),
                          dklen=32)


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """``scrypt$N$r$p$salt$hash``: what ``vlm-monitor hash-password`` prints."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


def parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16:
            raise ValueError
        salt, digest = unb64(parts[4]), unb64(parts[5])
        if len(salt) < 8 or len(digest) != 32:
            raise ValueError
        return n, r, p, salt, digest
    except ValueError:
        raise BadHash("not a hash from `vlm-monitor hash-password` (scrypt$N$r$p$salt$hash)") from None


def check_password(password: str, stored: str) -> bool:
    n, r, p, salt, digest = parse_hash(stored)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), digest)


@functools.cache
def dummy_hash() -> str:
    """Checked for a name that is not configured, so that the answer takes as long as
    for a real user (no way to learn the names by timing)."""
    return hash_password("not a password")
