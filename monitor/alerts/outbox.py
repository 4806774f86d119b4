"""The alert outbox: SQLite under the state directory, so that no alert is lost.

An alert is committed here before any sink hears of it, with one delivery
row per sink that wants it. A delivery is ``pending`` until the sink has it
(``delivered``) or it is given up (``dead``: refused by the receiver, or older
than the sink's maximum age). Settled alerts stay a week as the event history
the console shows (at most ``HISTORY_MAX`` of them), then are pruned; an alert
no sink wants is stored settled, for the history alone. WAL mode, synchronous=FULL: a committed alert survives
SIGKILL and power loss.

Calls are synchronous and short; the dispatcher runs them in a worker thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from monitor.alerts.model import Alert
from monitor.storage import open_sqlite

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

HISTORY_S = 7 * 86400
HISTORY_MAX = 20_000
EVENTS_PAGE_MAX = 500


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


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An alert as the history shows it: when stored, and each sink's delivery state."""

    seq: int
    created: float
    alert: Alert
    deliveries: list[dict[str, object]]


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_sqlite(path, SCHEMA)
        self._lock = threading.Lock()

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
        """Drop settled alerts past the history's age or count; returns how many.

        An alert with a delivery still pending is never dropped.
        """
        now = time.time() if now is None else now
        settled = ("NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_seq = alerts.seq "
                   "AND d.state = 'pending')")
        with self._lock, self._db:
            n = self._db.execute(f"DELETE FROM alerts WHERE created < ? AND {settled}",
                                 (now - HISTORY_S,)).rowcount
            n += self._db.execute(
                f"DELETE FROM alerts WHERE {settled} AND seq <= "
                f"(SELECT seq FROM alerts ORDER BY seq DESC LIMIT 1 OFFSET ?)", (HISTORY_MAX,)).rowcount
            return n

    def every_event(self, event: str) -> list[StoredEvent]:
        """All stored alerts of one kind, newest first, page by page (``events`` gives a page)."""
        found: list[StoredEvent] = []
        while page := self.events(event=event, before=found[-1].seq if found else None,
                                  limit=EVENTS_PAGE_MAX):
            found += page
        return found

    def events(self, *, stream: str | None = None, target: str | None = None,
               event: str | None = None, since: float | None = None, until: float | None = None,
               before: int | None = None, after: int | None = None,
               limit: int = 50) -> list[StoredEvent]:
        """Stored alerts, newest first, with each sink's delivery state; ``before`` pages back
        by seq, ``after`` asks only for what came since."""
        where: list[str] = ["1"]
        args: list[object] = []
        for clause, value in (("stream = ?", stream), ("json_extract(body, '$.target') = ?", target),
                              ("event = ?", event), ("created >= ?", since), ("created < ?", until),
                              ("seq < ?", before), ("seq > ?", after)):
            if value is not None:
                where.append(clause)
                args.append(value)
        limit = max(1, min(limit, EVENTS_PAGE_MAX))
        with self._lock:
            rows = self._db.execute(
                f"SELECT seq, body, created FROM alerts WHERE {' AND '.join(where)} "
                f"ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
            seqs = [r[0] for r in rows]
            marks = ",".join("?" * len(seqs)) or "NULL"
            deliveries = self._db.execute(
                f"SELECT alert_seq, sink, state, attempts, next_at, last_error FROM deliveries "
                f"WHERE alert_seq IN ({marks}) ORDER BY sink", seqs).fetchall()
        by_seq: dict[int, list[dict[str, object]]] = {}
        for seq, sink, state, attempts, next_at, error in deliveries:
            by_seq.setdefault(seq, []).append({
                "sink": sink, "state": state, "attempts": attempts,
                "next_attempt": next_at if state == "pending" else None, "error": error})
        return [StoredEvent(seq, created, Alert.from_body(body), by_seq.get(seq, []))
                for seq, body, created in rows]

    def event(self, alert_id: str) -> Alert | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return Alert.from_body(row[0]) if row else None

    def clips_announced(self, alert_ids: list[str]) -> set[str]:
        """Which of these alerts had a clip written (a clip_ready event names them)."""
        if not alert_ids:
            return set()
        marks = ",".join("?" * len(alert_ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT json_extract(body, '$.alert_id') FROM alerts WHERE event = 'clip_ready' "
                f"AND json_extract(body, '$.alert_id') IN ({marks})", alert_ids).fetchall()
        return {str(r[0]) for r in rows}

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

