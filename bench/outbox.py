"""Alerts per second the SQLite outbox sustains on this machine.

    .venv/bin/python -m bench.outbox [--alerts 2000]

Each alert goes the whole way through the outbox as the dispatcher drives it:
committed (WAL, synchronous=FULL) with a delivery row for each of two sinks,
read back as each sink's head, marked delivered, and pruned. The seed had no
alerting at all, so there is no baseline to compare with; the figure to
compare is the alert rate of a busy site (a few per minute).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from monitor.alerts.model import Alert
from monitor.alerts.outbox import Outbox


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=2000)
    args = parser.parse_args()
    sinks = ["webhook", "log"]
    with tempfile.TemporaryDirectory() as tmp:
        box = Outbox(Path(tmp) / "outbox.sqlite3")
        now = datetime.now(UTC)
        start = time.perf_counter()
        for i in range(args.alerts):
            box.add(Alert.detected(f"cam{i % 16}", "a person wearing a red shirt", now, float(i), 9,
                                   "A person in a red shirt by the door."), sinks)
        added = time.perf_counter() - start
        for sink in sinks:
            while (head := box.head(sink)) is not None:
                box.delivered(head.seq, sink)
                box.prune()
        total = time.perf_counter() - start
        box.close()
    print(f"{args.alerts} alerts, 2 sinks each, SQLite WAL synchronous=FULL")
    print(f"commit only:                       {args.alerts / added:8.0f} alerts/s")
    print(f"commit + deliver + prune (all):    {args.alerts / total:8.0f} alerts/s")


if __name__ == "__main__":
    main()
