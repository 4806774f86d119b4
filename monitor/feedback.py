"""Judgements of alerts ("right" or "false alarm"), in SQLite beside the outbox.

Kept apart from the outbox on purpose: the outbox prunes its history after a
week, and a judgement (with the description the model gave) is what a later
change learns from, so it stays. One row per alert; judging again replaces
the verdict. Calls are short and synchronous; the console runs them in a
worker thread. The streams read each target's latest false alarms from memory
(``lessons``) and tell the model about them (see ``prompts.counter_examples``).

What the model is told is the *lesson*: the text the operator saw and kept (or
edited, or cleared) when marking the false alarm, never the model's own
description unseen. That description is the scene's words: a sign reading
"IGNORE PREVIOUS INSTRUCTIONS" would otherwise go into every later prompt.
Judgements stored before lessons existed teach nothing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from monitor.storage import open_sqlite

VERDICTS = ("right", "false_alarm")
LESSONS_KEPT = 10  # per target, in memory; the prompt takes fewer (prompts.counter_examples)

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    alert_id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    target TEXT NOT NULL,
    verdict TEXT NOT NULL,
    description TEXT NOT NULL,
    at REAL NOT NULL,
    user TEXT,
    lesson TEXT
);
CREATE INDEX IF NOT EXISTS feedback_target ON feedback (stream, target, verdict, at);
"""


@dataclass(frozen=True, slots=True)
class Judgement:
    alert_id: str
    stream: str
    target: str
    verdict: str
    description: str
    at: float
    user: str | None
    lesson: str = ""  # what the model is told this target is not: the operator's text


class Feedback:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_sqlite(path, SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(feedback)")}
        if "lesson" not in columns:  # a file from before lessons: its rows teach nothing
            self._db.execute("ALTER TABLE feedback ADD COLUMN lesson TEXT")
        self._lock = threading.Lock()
        # The newest false alarms per (stream, target), in memory: the streams read them for
        # every prompt, so they must not touch the disk.
        self._lessons: dict[tuple[str, str], list[str]] = {}
        with self._lock:
            rows = self._db.execute(
                "SELECT stream, target, lesson FROM feedback WHERE verdict = 'false_alarm' "
                "AND lesson != '' ORDER BY at DESC").fetchall()
        for stream, target, description in rows:
            kept = self._lessons.setdefault((str(stream), str(target)), [])
            if len(kept) < LESSONS_KEPT:
                kept.append(str(description))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def judge(self, j: Judgement) -> str | None:
        """Store the judgement; returns the verdict it replaced, if any."""
        if j.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            old = self._db.execute("SELECT verdict FROM feedback WHERE alert_id = ?",
                                   (j.alert_id,)).fetchone()
            self._db.execute(
                "INSERT OR REPLACE INTO feedback (alert_id, stream, target, verdict, description, at, user, "
                "lesson) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (j.alert_id, j.stream, j.target, j.verdict, j.description, j.at or time.time(), j.user,
                 j.lesson if j.verdict == "false_alarm" else ""))
            self._relearn(j.stream, j.target)
        return str(old[0]) if old else None

    def _relearn(self, stream: str, target: str) -> None:
        rows = self._db.execute(
            "SELECT lesson FROM feedback WHERE stream = ? AND target = ? AND verdict = 'false_alarm' "
            "AND lesson != '' ORDER BY at DESC LIMIT ?", (stream, target, LESSONS_KEPT)).fetchall()
        self._lessons[(stream, target)] = [str(r[0]) for r in rows]

    def lessons(self, stream: str, target: str) -> list[str]:
        """The descriptions of this target's latest false alarms, newest first (from memory)."""
        return self._lessons.get((stream, target), [])

    def of(self, alert_ids: list[str]) -> dict[str, str]:
        """The verdict of each of these alerts that was judged."""
        if not alert_ids:
            return {}
        marks = ",".join("?" * len(alert_ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT alert_id, verdict FROM feedback WHERE alert_id IN ({marks})", alert_ids).fetchall()
        return {str(a): str(v) for a, v in rows}

    def counts(self) -> dict[tuple[str, str, str], int]:
        """(stream, target, verdict) -> judgements stored: the metric starts from these."""
        with self._lock:
            rows = self._db.execute(
                "SELECT stream, target, verdict, COUNT(*) FROM feedback GROUP BY stream, target, verdict"
            ).fetchall()
        return {(str(s), str(t), str(v)): int(n) for s, t, v, n in rows}

