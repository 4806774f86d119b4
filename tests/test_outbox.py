from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from monitor.alerts.model import Alert
from monitor.alerts.outbox import HISTORY_S, Outbox
from monitor.alerts.snapshots import Snapshots


def alert(stream: str = "cam", target: str = "a red car") -> Alert:
    return Alert.detected(stream, target, datetime(2026, 11, 25, 14, 3, 5, 120000, UTC), 5.0, 9, "seen")


def test_alerts_come_out_oldest_first_per_sink_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    box = Outbox(path)
    first, second = alert("a"), alert("b")
    box.add(first, ["hook", "log"])
    box.add(second, ["hook"])
    box.close()

    box = Outbox(path)  # as after a restart (or SIGKILL: every add is committed)
    head = box.head("hook")
    assert head is not None and head.alert_id == first.id
    assert Alert.from_body(head.body) == first
    assert Alert.from_body(head.body).body() == first.body()  # same bytes: same signature
    box.retry(head.seq, "hook", next_at=head.next_at + 60, error="HTTP 503")
    again = box.head("hook")
    assert again is not None and again.alert_id == first.id and again.attempts == 1  # no overtaking
    box.delivered(head.seq, "hook")
    assert box.head("hook").alert_id == second.id  # type: ignore[union-attr]
    assert box.pending("hook")[0] == 1 and box.pending("log")[0] == 1


def test_prune_keeps_what_any_sink_still_needs_and_the_history_for_a_week(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    a, b = alert(), alert()
    box.add(a, ["hook", "log"], now=1000.0)
    box.add(b, ["hook"], now=1000.0)
    ha = box.head("hook")
    assert ha is not None
    box.delivered(ha.seq, "hook")
    assert box.prune(now=1001.0) == 0  # the log sink still needs a
    hl = box.head("log")
    assert hl is not None
    box.delivered(hl.seq, "log")
    hb = box.head("hook")
    assert hb is not None
    box.dead(hb.seq, "hook", "HTTP 400")
    assert box.prune(now=1002.0) == 0  # both settled, kept as the console's history
    assert [e.alert.id for e in box.events()] == [b.id, a.id]
    c = alert()
    box.add(c, ["hook"], now=1000.0 + HISTORY_S + 1)
    assert box.prune(now=1000.0 + HISTORY_S + 2) == 2  # a and b are past a week; c is pending
    assert box.states() == {"pending": 1}


def test_deliveries_to_removed_sinks_are_given_up(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.add(alert(), ["old", "hook"])
    assert box.orphans(["hook"]) == {"old": 1}
    assert box.head("old") is None and box.head("hook") is not None


def test_snapshot_retention_by_count_age_and_size(tmp_path: Path) -> None:
    import os
    import time

    now = time.time()
    snaps = Snapshots(tmp_path / "s", max_count=3, max_age_s=100, max_bytes=10_000)
    assert snaps.save("id0", b"x" * 1000) == "id0.jpg"
    for i in range(5):
        snaps.path(f"id{i}").write_bytes(b"x" * 1000)
        os.utime(snaps.path(f"id{i}"), (now - 50 + i, now - 50 + i))
    snaps.prune(now=now)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["id2.jpg", "id3.jpg", "id4.jpg"]
    snaps.prune(now=now + 54)  # id2 and id3 are now older than 100 s
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["id4.jpg"]

    big = Snapshots(tmp_path / "b", max_count=100, max_age_s=1e9, max_bytes=2500)
    for i in range(4):
        big.path(f"b{i}").write_bytes(b"y" * 1000)
        os.utime(big.path(f"b{i}"), (now + i, now + i))
    big.prune(now=now + 5)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["b2.jpg", "b3.jpg"]
    assert big.read("b3.jpg") == b"y" * 1000
    assert big.read("../b/b3.jpg") == b"y" * 1000  # only a name inside the folder is ever read


def test_a_snapshot_folder_removed_under_the_daemon_is_made_again(tmp_path: Path) -> None:
    import shutil

    snaps = Snapshots(tmp_path / "s", max_count=3, max_age_s=100, max_bytes=10_000)
    shutil.rmtree(tmp_path / "s")
    assert snaps.save("a", b"jpeg") == "a.jpg" and snaps.read("a.jpg") == b"jpeg"


def test_every_event_reads_past_one_page(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    for i in range(1203):  # eval scored only the first 500 of a long suite's alerts
        box.add(alert(stream=f"case{i}"), [])
    box.add(Alert.stream_state("cam", False, datetime(2026, 11, 25, tzinfo=UTC), "gone"), [])
    found = box.every_event("target_detected")
    assert len(found) == 1203 and len({e.seq for e in found}) == 1203
    assert [e.seq for e in found] == sorted((e.seq for e in found), reverse=True)
    box.close()
