"""Running as a service: sd_notify against a real datagram socket, the systemd unit."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from pathlib import Path

import yaml

from monitor.app import Daemon
from monitor.config import parse_config
from monitor.metrics import Metrics
from monitor.systemd import Notifier
from tests.conftest import ROOT
from tests.fakes.vllm import FakeVLM


class NotifySocket:
    """What systemd would hear on $NOTIFY_SOCKET, with arrival times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


async def test_sd_notify_ready_then_watchdog_pings_that_stop_when_the_loop_is_blocked(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    listener = NotifySocket(tmp_path / "notify.sock")
    notifier = Notifier({"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "400000"})
    assert notifier.watchdog_interval == 0.2
    config = parse_config(yaml.safe_dump({
        "vlm": {"base_url": fake_vlm.base_url},
        "streams": [{"name": "a", "url": str(clips["red"]), "targets": ["a red car"], "realtime": True}],
        "server": {"listen": "127.0.0.1:0"},
        "state_dir": str(tmp_path / "state"),
    }), "test")
    daemon = Daemon(config, Metrics(), notifier)
    shutdown = asyncio.Event()
    task = asyncio.create_task(daemon.run(shutdown))
    try:
        await daemon.started.wait()
        await asyncio.sleep(1.0)
        blocked_from = time.monotonic()
        time.sleep(1.5)  # noqa: ASYNC251 - wedging the event loop, as a bug would, is the point
        blocked_to = time.monotonic()
        await asyncio.sleep(1.0)
    finally:
        shutdown.set()
        assert await task == 0
    listener.close()
    notifier.close()
    kinds = [m.split("\n")[0] for _, m in listener.messages]
    assert kinds[0] == "READY=1" and "STATUS=watching 1 stream(s)" in listener.messages[0][1]
    # STOPPING=1 at the end; the loop keeps pinging while it winds down.
    stopping = kinds.index("STOPPING=1")
    assert set(kinds[stopping + 1:]) <= {"WATCHDOG=1"}
    pings = [t for t, m in listener.messages if m == "WATCHDOG=1"]
    before = [t for t in pings if t < blocked_from]
    during = [t for t in pings if blocked_from + 0.05 < t < blocked_to]
    after = [t for t in pings if t > blocked_to + 0.05]
    assert len(before) >= 3 and during == [] and len(after) >= 3


def test_no_notify_socket_means_no_notifications() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.notify("READY=1") is False


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "systemd" / "vlm-monitor.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "DynamicUser=yes" in unit
    assert "\nLimitNOFILE=65536\n" in unit  # above 1024: slow clients must not starve the cameras
    # verify checks that ExecStart exists: point it at this checkout's install.
    local = tmp_path / "vlm-monitor.service"
    local.write_text(unit.replace("/opt/vlm-monitor/venv/bin/vlm-monitor",
                                  str(ROOT / ".venv" / "bin" / "vlm-monitor")))
    result = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(local)],
                              capture_output=True, text=True)
    assert "Overall exposure level" in security.stdout
    level = float(security.stdout.split("Overall exposure level for vlm-monitor.service:")[1].split()[0])
    assert level <= 2.0, security.stdout[-500:]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = ROOT / ".venv" / "bin" / "hadolint"
    result = subprocess.run([str(hadolint), "--no-color", "Dockerfile"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER 10001:10001\n" in dockerfile and "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
