"""The analysed frame of each alert, kept as a JPEG under the state directory.

Retention by count, age and total size, enforced after every save, oldest first.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class Snapshots:
    def __init__(self, directory: Path, *, max_count: int, max_age_s: float, max_bytes: int) -> None:
        self.directory = directory
        self.max_count = max_count
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, alert_id: str) -> Path:
        return self.directory / f"{alert_id}.jpg"

    def save(self, alert_id: str, jpeg: bytes) -> str:
        """Write the JPEG (atomically) and return its file name."""
        final = self.path(alert_id)
        tmp = final.with_suffix(".tmp")
        self.directory.mkdir(parents=True, exist_ok=True)  # someone may have removed it
        tmp.write_bytes(jpeg)
        os.replace(tmp, final)
        self.prune()
        return final.name

    def read(self, name: str) -> bytes | None:
        try:
            return (self.directory / Path(name).name).read_bytes()
        except OSError:
            return None

    def prune(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        files = []
        for p in self.directory.glob("*.jpg"):
            try:
                st = p.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        files.sort(reverse=True)  # newest first: keep from the front
        removed, total = 0, 0
        for i, (mtime, size, p) in enumerate(files):
            total += size
            if i >= self.max_count or now - mtime > self.max_age_s or total > self.max_bytes:
                p.unlink(missing_ok=True)
                removed += 1
        return removed
