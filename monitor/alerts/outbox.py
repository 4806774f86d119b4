"""The alert outbox: SQLite under the state directory, so that no alert is lost.

An alert is committed here before any sink hears of it, with one delivery
row per sink that wants it. A delivery is ``pending`` until the sink has it
(``delivered``) or it is given up (``dead``: refused by the receiver, or older
than the sink's maximum age). Delivered alerts are pruned; dead ones are kept
a week for inspection. WAL mode, synchronous=FULL: a committed alert survives
SIGKILL and power loss.

Calls are synchronous and short; the dispatcher runs them in a worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from monitor.alerts.model import Alert

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    stream TEXT NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    alert_seq INTEGER NOT NULL REFERENCES alerts(seq) ON DELETE CASCADE,
    sink TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | delivered | dead
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    PRIMARY KEY (alert_seq, sink)
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (sink, state, alert_seq);
"""

DEAD_RETENTION_S = 7 * 86400


@dataclass(frozen=True, slots=True)
class Delivery:
    seq: int
    alert_id: str
    event: str
    stream: str
    body: bytes
    created: float
    attempts: int
    next_at: float


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, alert: Alert, sinks: Iterable[str], now: float | None = None) -> None:
        """Store the alert and a pending delivery per sink, in one transaction."""
        now = time.time() if now is None else now
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.execute(
                "INSERT INTO alerts (id, event, stream, body, created) VALUES (?, ?, ?, ?, ?)",
                (alert.id, alert.event, alert.stream, alert.body(), now))
            seq = cur.lastrowid
            self._db.executemany(
                "INSERT INTO deliveries (alert_seq, sink, next_at) VALUES (?, ?, ?)",
                [(seq, sink, now) for sink in sinks])

    def head(self, sink: str) -> Delivery | None:
        """The oldest pending delivery for a sink: deliveries go out in the order raised."""
        with self._lock:
            row = self._db.execute(
                "SELECT a.seq, a.id, a.event, a.stream, a.body, a.created, d.attempts, d.next_at "
                "FROM deliveries d JOIN alerts a ON a.seq = d.alert_seq "
                "WHERE d.sink = ? AND d.state = 'pending' ORDER BY a.seq LIMIT 1", (sink,)).fetchone()
        return Delivery(*row) if row else None

    def delivered(self, seq: int, sink: str) -> None:
        self._set(seq, sink, "delivered", None, None)

    def dead(self, seq: int, sink: str, error: str) -> None:
        self._set(seq, sink, "dead", None, error)

    def retry(self, seq: int, sink: str, next_at: float, error: str) -> None:
        self._set(seq, sink, "pending", next_at, error)

    def _set(self, seq: int, sink: str, state: str, next_at: float | None, error: str | None) -> None:
        with self._lock, self._db:
            self._db.execute(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, "
                "next_at = COALESCE(?, next_at), last_error = ? WHERE alert_seq = ? AND sink = ?",
                (state, next_at, error, seq, sink))

    def prune(self, now: float | None = None) -> int:
        """Drop alerts every sink has (and dead letters past retention); returns how many."""
        now = time.time() if now is None else now
        with self._lock, self._db:
            cur = self._db.execute(
                "DELETE FROM alerts WHERE NOT EXISTS (SELECT 1 FROM deliveries d "
                "WHERE d.alert_seq = alerts.seq AND (d.state = 'pending' "
                "OR (d.state = 'dead' AND alerts.created > ?)))", (now - DEAD_RETENTION_S,))
            return cur.rowcount

    def orphans(self, sinks: Iterable[str]) -> dict[str, int]:
        """Give up pending deliveries to sinks no longer configured; how many, per sink."""
        names = list(sinks)
        marks = ",".join("?" * len(names)) or "''"
        with self._lock, self._db:
            rows = self._db.execute(
                f"SELECT sink, COUNT(*) FROM deliveries WHERE state = 'pending' "
                f"AND sink NOT IN ({marks}) GROUP BY sink", names).fetchall()
            self._db.execute(
                f"UPDATE deliveries SET state = 'dead', last_error = 'sink removed from the config' "
                f"WHERE state = 'pending' AND sink NOT IN ({marks})", names)
        return {str(sink): int(n) for sink, n in rows}

    def pending(self, sink: str) -> tuple[int, float | None]:
        """How many deliveries to the sink are pending, and when the oldest was raised."""
        with self._lock:
            count, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(a.created) FROM deliveries d JOIN alerts a ON a.seq = d.alert_seq "
                "WHERE d.sink = ? AND d.state = 'pending'", (sink,)).fetchone()
        return int(count), oldest

    def states(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall()
        return {state: int(n) for state, n in rows}

