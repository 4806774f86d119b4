"""Scans of uploaded recordings (the seed's page): a queue, one scan at a time.

A scan samples the whole recording once a second and asks the model about
all its targets per sample, in the loop ``vlm-monitor scan`` runs
(``recording.first_appearances``), but its model calls
are background requests (``FrameAnalyzer(background=True)``): they take only
slots no camera is waiting for, so the cameras keep their samples.

Each scan has a folder under ``<state_dir>/scans/<id>/``: the upload while it
is queued or running (deleted once done), ``scan.json`` with every sample's
verdicts, and a thumbnail per sample. Finished scans are kept up to a count
and a total size, oldest removed first. The uploaded file's name is shown,
never used as a path.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor import logs
from monitor.board import THUMB_WIDTH
from monitor.config import DetectionConfig, PreprocessConfig, Target
from monitor.pipeline import FrameAnalyzer, SampleResult
from monitor.recording import first_appearances
from monitor.sources.base import Sample, SourceError
from monitor.vlm import VlmClient

STATUSES = ("queued", "running", "done", "failed", "stopped")
MAX_TARGETS = 8
MAX_TARGET_CHARS = 300
UPLOAD_NAME = "upload.video"


class ScanRejected(ValueError):
    """The request cannot become a scan; the message is for the user."""


def scan_targets(texts: list[str]) -> list[Target]:
    """The targets typed on the page: one to eight, each one line of plain text. Pure."""
    targets = [" ".join(t.split()) for t in texts]
    targets = [t for t in targets if t]
    if not targets:
        raise ScanRejected("say what to find: at least one target")
    if len(targets) > MAX_TARGETS:
        raise ScanRejected(f"at most {MAX_TARGETS} targets per scan")
    if any(len(t) > MAX_TARGET_CHARS for t in targets):
        raise ScanRejected(f"a target is longer than {MAX_TARGET_CHARS} characters")
    if len(set(targets)) != len(targets):
        raise ScanRejected("the same target twice")
    return [Target(name=t, description=t) for t in targets]


def display_name(filename: str | None) -> str:
    """The client's file name, for showing only: its last part, printable, bounded. Pure."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())
    return name[:120] or "upload"


@dataclass
class Scan:
    id: str
    name: str  # the uploaded file's name, for display
    targets: list[str]
    created: float
    status: str = "queued"
    duration: float | None = None  # the recording's length, when it says
    analysed: float = 0.0  # seconds of it analysed so far
    first_detection: float | None = None
    first_by_target: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def progress(self) -> float:
        if self.status == "done":
            return 1.0
        if not self.duration:
            return 0.0
        return max(0.0, min(1.0, self.analysed / self.duration))

    def json(self, since: int = 0) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "targets": self.targets, "status": self.status,
                "created": self.created, "duration": self.duration, "analysed": self.analysed,
                "progress": round(self.progress, 4), "first_detection_seconds": self.first_detection,
                "first_detection_by_target": self.first_by_target, "error": self.error,
                "sample_count": len(self.samples), "samples": self.samples[since:]}

    def summary(self) -> dict[str, Any]:
        data = self.json(len(self.samples))
        del data["samples"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scan:
        scan = cls(str(data["id"]), str(data["name"]), list(data["targets"]), float(data["created"]),
                   str(data["status"]), data.get("duration"), float(data.get("analysed", 0.0)),
                   data.get("first_detection_seconds"), dict(data.get("first_detection_by_target", {})),
                   list(data.get("samples", [])), data.get("error"))
        if scan.status in ("queued", "running"):  # the daemon stopped under it
            scan.status, scan.error = "failed", "interrupted: the daemon restarted"
        return scan


class Scans:
    """The queue and the kept results. One owner: the daemon; the console calls in."""

    def __init__(self, directory: Path, client: VlmClient, detection: DetectionConfig,
                 preprocess: PreprocessConfig, *, concurrency: int, keep: int, max_bytes: int) -> None:
        self.directory = directory
        self.client = client
        self.detection = detection
        self.preprocess = preprocess
        self.concurrency = concurrency
        self.keep = keep
        self.max_bytes = max_bytes
        self.scans: dict[str, Scan] = {}
        self._queue: asyncio.Queue[Scan] = asyncio.Queue()
        self._log = logs.get("monitor.scans")

    def load(self) -> None:
        """The scans kept from earlier runs (blocking; at start, in a thread)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        found = []
        for folder in self.directory.iterdir():
            try:
                found.append(Scan.from_json(json.loads((folder / "scan.json").read_text())))
            except (OSError, ValueError, KeyError, TypeError):
                shutil.rmtree(folder, ignore_errors=True)  # an upload that never became a scan
        for scan in sorted(found, key=lambda s: s.created):
            self.scans[scan.id] = scan
            (self.directory / scan.id / UPLOAD_NAME).unlink(missing_ok=True)
        self._prune()

    def new_folder(self) -> tuple[str, Path]:
        """A fresh id and the path its upload is written to."""
        scan_id = secrets.token_hex(8)
        folder = self.directory / scan_id
        folder.mkdir(parents=True)
        return scan_id, folder / UPLOAD_NAME

    def discard(self, scan_id: str) -> None:
        shutil.rmtree(self.directory / scan_id, ignore_errors=True)

    def submit(self, scan_id: str, name: str, targets: list[Target], duration: float | None) -> Scan:
        scan = Scan(scan_id, name, [t.name for t in targets], time.time(), duration=duration)
        self.scans[scan_id] = scan
        self._save(scan)
        self._queue.put_nowait(scan)
        self._log.info("scan queued", scan=scan_id, targets=scan.targets, queued=self._queue.qsize())
        return scan

    def stop(self, scan_id: str) -> Scan | None:
        scan = self.scans.get(scan_id)
        if scan is not None and scan.status in ("queued", "running"):
            scan.stop.set()
            if scan.status == "queued":
                scan.status = "stopped"
                self._finish(scan)
        return scan

    def thumb(self, scan_id: str, index: int) -> bytes | None:
        if scan_id not in self.scans:
            return None
        try:
            return (self.directory / scan_id / f"{int(index)}.jpg").read_bytes()
        except (OSError, ValueError):
            return None

    async def run(self) -> None:
        """Run queued scans, one at a time, until cancelled."""
        while True:
            scan = await self._queue.get()
            if scan.status != "queued":
                continue
            try:
                await self._scan(scan)
            except SourceError as e:
                scan.status, scan.error = "failed", str(e)
            except Exception as e:  # a scan's failure is the scan's, never the daemon's
                scan.status, scan.error = "failed", f"{type(e).__name__}: {e}"
                self._log.error("scan crashed", scan=scan.id, error=scan.error, exc_info=True)
            finally:
                if scan.status == "running":
                    scan.status = "stopped"
                await asyncio.to_thread(self._finish, scan)
                self._log.info("scan finished", scan=scan.id, status=scan.status,
                               first_detection_seconds=scan.first_detection, error=scan.error)

    async def _scan(self, scan: Scan) -> None:
        scan.status = "running"
        folder = self.directory / scan.id
        targets = [Target(name=t, description=t) for t in scan.targets]
        analyzer = FrameAnalyzer(self.client, targets, self.preprocess, thumb_width=THUMB_WIDTH,
                                 background=True)
        thumbs = 0  # bytes of thumbnails written
        steps = first_appearances(str(folder / UPLOAD_NAME), analyzer, self.detection,
                                  self.concurrency, stop=scan.stop)
        async for step in steps:
            row = self._row(step.sample, step.result, self.detection.min_confidence)
            thumb = step.result.prepared.thumb if step.result.prepared else None
            # A long recording's thumbnails stop at the budget of all scans together, not at
            # the end of the scan (the prune comes only then).
            if thumb is not None and thumbs + len(thumb) <= self.max_bytes:
                await asyncio.to_thread((folder / f"{len(scan.samples)}.jpg").write_bytes, thumb)
                thumbs += len(thumb)
                row["thumb"] = True
            scan.first_by_target.update(step.found)
            if step.found:
                first = min(step.found.values())
                if scan.first_detection is None or first < scan.first_detection:
                    scan.first_detection = first
            scan.samples.append(row)
            scan.analysed = step.sample.offset + 1.0
        errors = [v["error"] for row in scan.samples for v in row["verdicts"] if v["error"]]
        if scan.samples and len(errors) == len(scan.samples) * len(scan.targets):
            scan.status, scan.error = "failed", f"the model could judge no sample: {errors[-1]}"
            return
        scan.status = "stopped" if scan.stop.is_set() else "done"
        if scan.status == "done" and scan.duration is None:
            scan.duration = scan.analysed

    @staticmethod
    def _row(sample: Sample, result: SampleResult, min_confidence: int) -> dict[str, Any]:
        return {"second": sample.offset, "verdicts": [r.json(min_confidence) for r in result.targets],
                "thumb": False}

    def _save(self, scan: Scan) -> None:
        path = self.directory / scan.id / "scan.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(scan.json()))
        os.replace(tmp, path)

    def _finish(self, scan: Scan) -> None:
        """Blocking: write the result, drop the upload, keep the kept scans within bounds."""
        try:
            self._save(scan)
            (self.directory / scan.id / UPLOAD_NAME).unlink(missing_ok=True)
        except OSError as e:
            self._log.error("cannot save the scan's result", scan=scan.id, error=e.strerror)
        self._prune()

    def _prune(self) -> None:
        """Finished scans beyond the count or the total size go, oldest first."""
        finished = [s for s in self.scans.values() if s.status not in ("queued", "running")]
        finished.sort(key=lambda s: s.created, reverse=True)
        total = kept = 0
        for scan in finished:
            size = _size(self.directory / scan.id)
            if kept >= self.keep or total + size > self.max_bytes:
                self.discard(scan.id)  # what it held no longer counts: older scans may still fit
                del self.scans[scan.id]
                continue
            total += size
            kept += 1


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.glob("*") if p.is_file())
