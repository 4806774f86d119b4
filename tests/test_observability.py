"""Prometheus and Grafana: the rules pass promtool, and every query of the dashboard and the
rules works against a real Prometheus scraping a real daemon."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from monitor.metrics import Metrics
from tests.conftest import ROOT, Receiver, free_port, start_cli
from tests.fakes.vllm import FakeVLM

RULES = ROOT / "config" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "config" / "grafana" / "vlm-monitor.json"


def test_promtool_check_rules() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = subprocess.run(["promtool", "test", "rules", "rules_test.yml"], capture_output=True, text=True,
                            cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def rule_queries() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_dashboard_is_portable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "vlm-monitor" and "id" not in dash
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["stream"]["query"]["query"] == "label_values(vlm_monitor_stream_up, stream)"
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("camera up", "frame age", "dropped", "latency", "outcome", "tokens", "alerts", "delivery",
                  "waiting for a cpu", "cameras behind"):
        assert topic in titles


def query(base: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_real_prometheus_scrapes_the_daemon_and_every_query_returns_data(
        tmp_path: Path, clips: dict[str, Path], fake_vlm: FakeVLM, receiver: Receiver) -> None:
    fake_vlm.latency = 0.05
    port, prom_port = free_port(), free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "vlm": {"base_url": fake_vlm.base_url},
        "streams": [{"name": "front-door", "url": str(clips["red"]), "targets": ["a person wearing a red shirt"],
                     "realtime": True}],
        "alerts": [{"type": "webhook", "url": receiver.url}], "clips": {"enabled": False},
        "server": {"listen": f"127.0.0.1:{port}"},
        "state_dir": str(tmp_path / "state"),
    }))
    prom_cfg = tmp_path / "prometheus.yml"
    prom_cfg.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "vlm-monitor", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }))
    daemon = start_cli("run", "--config", str(cfg))
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{prom_port}"
    try:
        assert receiver.got.wait(30), "no alert"  # matches and an alert have happened by now
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if query(base, 'vlm_monitor_alerts_total{stream="front-door"} > 0'):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        time.sleep(3)  # a few more scrapes, for rate() over the 10 s window
        assert query(base, 'up{job="vlm-monitor"}')[0]["value"][1] == "1"

        for expr in dashboard_queries():
            concrete = expr.replace("$__rate_interval", "10s").replace("$stream", ".*")
            assert query(base, concrete), f"no data for dashboard query {expr}"
        for expr in rule_queries():
            query(base, expr)  # parses and evaluates (an alert condition is rightly empty now)
            for name in set(re.findall(r"vlm_monitor_[a-z_]+", expr)):
                assert query(base, name), f"rule {expr!r} names {name}, which has no data"
        rules = httpx.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"][0]["rules"]
        assert len(rules) == 8 and all(r["health"] == "ok" for r in rules), rules
    finally:
        prometheus.terminate()
        prometheus.wait(10)
        daemon.terminate()
        daemon.communicate(timeout=20)


async def test_idle_connections_to_the_listener_are_closed() -> None:
    import socket as socket_

    from monitor.http import HttpServer

    server = HttpServer("127.0.0.1", 0, Metrics(), lambda: None, idle_timeout=1.0)
    await server.start()

    def silent_client() -> float:
        with socket_.create_connection(("127.0.0.1", server.port)) as s:
            s.settimeout(20)
            start = time.monotonic()
            assert s.recv(10) == b""  # closed by the server, not timed out here
            return time.monotonic() - start

    try:
        assert await asyncio.to_thread(silent_client) < 5
    finally:
        await server.stop()


def test_library_log_lines_are_one_json_line_each() -> None:
    import io
    import logging

    from monitor import logs

    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    try:
        raise ValueError("bad request line")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["event"] == "Error handling request" and "ValueError" in line["exception"]


async def test_the_loops_own_errors_are_one_line_a_minute_per_kind() -> None:
    import io

    from monitor import logs

    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(logs.LoopErrors())
    try:
        for _ in range(1000):  # what running out of descriptors makes of every accept() try
            loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                         "exception": OSError(24, "Too many open files")})
        loop.call_exception_handler({"message": "Task exception was never retrieved",
                                     "exception": ValueError("x")})
    finally:
        loop.set_exception_handler(None)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["socket.accept() out of system resource",
                                                 "Task exception was never retrieved"]
    assert "Too many open files" in lines[0]["error"] and lines[0]["left_out"] == 0
