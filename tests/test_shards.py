"""Shards: rendezvous hashing (pure), and three real replicas sharing one config."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml

from monitor.shards import Shard, ShardError, owner, parse_shard
from tests.conftest import free_port, start_cli
from tests.fakes.vllm import FakeVLM


def test_each_stream_has_exactly_one_owner_and_a_new_replica_moves_about_a_share() -> None:
    names = [f"cam-{i}" for i in range(1000)]
    three = {n: owner(n, 3) for n in names}
    four = {n: owner(n, 4) for n in names}
    shards = [Shard(i, 3).select(names) for i in range(3)]
    assert sorted(n for s in shards for n in s) == sorted(names)  # every stream once
    assert all(250 <= len(s) <= 420 for s in shards), [len(s) for s in shards]
    moved = [n for n in names if three[n] != four[n]]
    # Only the streams the new replica wins move: about a quarter, all to replica 3.
    assert all(four[n] == 3 for n in moved)
    assert 0.18 <= len(moved) / len(names) <= 0.32


@pytest.mark.parametrize(("text", "host", "expected"), [
    ("0/3", "", Shard(0, 3)), ("2/3", "", Shard(2, 3)), ("ordinal/4", "vlm-monitor-3", Shard(3, 4)),
    (" 1/2 ", "", Shard(1, 2)),
])
def test_parse_shard(text: str, host: str, expected: Shard) -> None:
    assert parse_shard(text, host) == expected


@pytest.mark.parametrize(("text", "host", "message"), [
    ("3/3", "", "from 0 to 2"), ("1", "", "expected I/N"), ("a/3", "", "from 0 to 2"),
    ("0/0", "", "expected I/N"), ("ordinal/3", "vlm-monitor", "does not end in a number"),
    ("ordinal/3", "vlm-monitor-5", "from 0 to 2"),
    # Digits that are not ASCII: "²" was an internal error, "٣" was read as 3 (issue 23).
    ("0/²", "", "expected I/N"), ("0/٣", "", "expected I/N"), ("٠/3", "", "from 0 to 2"),
    # A count that would hash every stream's name a billion times (it hung).
    ("0/1000000000", "", "N from 1 to 1024"), ("0/1025", "", "N from 1 to 1024"),
])
def test_bad_shards_are_one_line(text: str, host: str, message: str) -> None:
    with pytest.raises(ShardError, match=message):
        parse_shard(text, host)


def test_three_replicas_share_thirty_cameras_each_run_by_exactly_one(
        tmp_path: Path, fake_vlm: FakeVLM) -> None:
    dead = free_port()  # the cameras are down: which replica tries each is what counts here
    names = [f"cam{i:02d}" for i in range(30)]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "vlm": {"base_url": fake_vlm.base_url},
        "streams": [{"name": n, "url": f"rtsp://127.0.0.1:{dead}/{n}", "targets": ["x"]} for n in names],
        "server": {"listen": "127.0.0.1:${PORT}"}, "state_dir": "${STATE}"}))
    ports = [free_port() for _ in range(3)]
    procs = [start_cli("run", "--config", str(cfg), "--shard", f"{i}/3",
                       env={"PORT": str(p), "STATE": str(tmp_path / f"state{i}")})
             for i, p in enumerate(ports)]
    try:
        runs: list[set[str]] = []
        for i, port in enumerate(ports):
            deadline = time.monotonic() + 30
            while True:
                try:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, f"replica {i} did not start"
                    time.sleep(0.2)
            assert f'vlm_monitor_shard_info{{count="3",index="{i}"}} 1.0' in text
            runs.append({n for n in names if f'vlm_monitor_stream_up{{stream="{n}"}}' in text})
            # Its console shows its own shard's cameras, and says which shard it is.
            console = {c["name"] for c in httpx.get(f"http://127.0.0.1:{port}/api/cameras").json()}
            assert console == runs[-1]
            assert httpx.get(f"http://127.0.0.1:{port}/api/session").json()["shard"] == f"{i}/3"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    assert sorted(n for run in runs for n in run) == names  # each camera in exactly one replica
    assert all(runs) and [p.returncode for p in procs] == [0, 0, 0]
    assert all(runs[i] == set(Shard(i, 3).select(names)) for i in range(3))


def test_a_bad_shard_is_exit_2_in_one_line(tmp_path: Path) -> None:
    from tests.conftest import cli

    cfg = tmp_path / "c.yaml"
    cfg.write_text("streams: [{name: a, url: a.mp4, targets: [x]}]\n")
    result = cli("run", "--config", str(cfg), "--shard", "3/3")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "from 0 to 2" in result.stderr
    result = cli("run", "--config", str(cfg), "--shard", "0/²")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "expected I/N" in result.stderr
    result = cli("run", "--config", str(cfg), env={"VLM_MONITOR_SHARD": "x"})
    assert result.returncode == 2 and "expected I/N" in result.stderr
