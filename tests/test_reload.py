"""SIGHUP reloads the config: streams added, removed or changed without touching the others."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import free_port, start_cli
from tests.fakes.vllm import FakeVLM


class Lines:
    """The daemon's JSON log lines, read as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[dict[str, Any]] = []
        assert proc.stdout is not None
        self._stdout = proc.stdout
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._stdout:
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def wait_for(self, event: str, within: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for line in self.lines:
                if line["event"] == event:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} line in {within} s")

    def named(self, event: str, stream: str | None = None) -> list[dict[str, Any]]:
        return [x for x in self.lines if x["event"] == event and (stream is None or x.get("stream") == stream)]


def test_sighup_reloads_streams_and_rejects_a_bad_config(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    port = free_port()
    cfg = tmp_path / "c.yaml"

    def write(streams: list[str], c_target: str = "a red shirt", **extra: Any) -> None:
        cfg.write_text(yaml.safe_dump({
            "vlm": {"base_url": fake_vlm.base_url},
            "streams": [{"name": n, "url": str(clips["red"]), "realtime": True,
                         "targets": [c_target if n == "c" else "a red shirt"]} for n in streams],
            "server": {"listen": f"127.0.0.1:{port}"},
            "state_dir": str(tmp_path / "state"),
            **extra,
        }))

    write(["a", "b"])
    proc = start_cli("run", "--config", str(cfg))
    lines = Lines(proc)
    try:
        lines.wait_for("model server ready")
        write(["a", "c"])
        proc.send_signal(signal.SIGHUP)
        reloaded = lines.wait_for("config reloaded")
        assert (reloaded["added"], reloaded["removed"], reloaded["restarted"]) == (["c"], ["b"], [])
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'vlm_monitor_stream_up{stream="c"}' in metrics
        assert 'stream="b"' not in metrics

        cfg.write_text(cfg.read_text().replace("realtime: true", "realtime: true\n  colour: red", 1))
        proc.send_signal(signal.SIGHUP)
        rejected = lines.wait_for("reload rejected; the running config stays")
        assert "streams[0].colour: unknown key" in rejected["error"]
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200

        # A hostile file (aliases that expand to billions of values) is just a rejected reload.
        laughs = "x: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
            f"x{i}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9))
        cfg.write_text(laughs)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while len(lines.named("reload rejected; the running config stays")) < 2:
            assert time.monotonic() < deadline, "the hostile reload was not rejected"
            time.sleep(0.05)
        assert "more than 100,000 values" in lines.named("reload rejected; the running config stays")[1]["error"]
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200

        # c's target changes: its old target's series go, not to stay frozen on dashboards.
        write(["a", "c"], c_target="a blue car")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while len(lines.named("config reloaded")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lines.named("config reloaded")[-1]["restarted"] == ["c"]
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'vlm_monitor_alerts_total{stream="c",target="a red shirt"}' not in metrics
        assert 'vlm_monitor_alerts_total{stream="c",target="a blue car"}' in metrics
        assert 'vlm_monitor_alerts_total{stream="a",target="a red shirt"}' in metrics

        write(["a", "c"], c_target="a blue car", vlm={"base_url": fake_vlm.base_url, "max_concurrency": 2})
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert lines.wait_for("these config sections change only on restart")["sections"] == ["vlm"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    # "a" ran through every reload untouched; "b" was stopped; "c" started once.
    assert len(lines.named("stream starting", "a")) == 1
    assert len(lines.named("stream stopped", "a")) == 1  # at SIGTERM, not before
    assert len(lines.named("stream stopped", "b")) == 1
    assert len(lines.named("stream starting", "c")) == 2  # added, then restarted with a new target
