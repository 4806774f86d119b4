"""Sessions ended by logout, kept until they would have expired anyway.

The session cookie is signed, not stored, so without this list a logged-out
cookie (copied from a shared computer, a proxy's log) would work until it
expires. Checked in memory on every request; written to SQLite in a worker
thread, so a restart does not bring a logged-out session back. (A removed user
or a changed password ends every session of that user without a list: see
``Signer.generation``.)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from monitor.storage import open_sqlite

SCHEMA = "CREATE TABLE IF NOT EXISTS revoked (nonce TEXT PRIMARY KEY, expires REAL NOT NULL);"
MAX_KEPT = 100_000  # each entry needed a login (a password check) to make


class Revoked:
    def __init__(self, path: Path) -> None:
        self._db = open_sqlite(path, SCHEMA)
        self._lock = threading.Lock()
        now = time.time()
        with self._lock:
            self._db.execute("DELETE FROM revoked WHERE expires < ?", (now,))
            rows = self._db.execute("SELECT nonce, expires FROM revoked ORDER BY expires").fetchall()
        self._nonces: dict[str, float] = dict(rows)  # nonce -> when its session would expire

    def __contains__(self, nonce: str) -> bool:
        return nonce in self._nonces

    def revoke(self, nonce: str, expires: float) -> None:
        """In memory at once (the caller's next request is refused); on disk in this call,
        which the caller runs in a worker thread."""
        self._nonces[nonce] = expires
        now = time.time()
        for old in [n for n, e in self._nonces.items() if e < now]:
            del self._nonces[old]
        while len(self._nonces) > MAX_KEPT:  # the soonest to expire go first
            del self._nonces[min(self._nonces, key=self._nonces.__getitem__)]
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO revoked VALUES (?, ?)", (nonce, expires))
            self._db.execute("DELETE FROM revoked WHERE expires < ?", (now,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
