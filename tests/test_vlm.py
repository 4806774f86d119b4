from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from monitor.config import VlmConfig
from monitor.metrics import Metrics
from monitor.modelwatch import ModelWatch
from monitor.openai_http import env_proxy
from monitor.preprocess import prepare
from monitor.vlm import BadAnswer, Rejected, Unavailable, VlmClient, chat_body, chat_request, error_message
from tests.conftest import free_port
from tests.fakes.vllm import FakeVLM

RED = "a person wearing a red shirt"


def jpeg(red: bool) -> bytes:
    frame = np.full((720, 1280, 3), 120, np.uint8)
    if red:
        frame[200:450, 600:700] = (30, 30, 210)
    return prepare(frame, max_pixels=896 * 504).jpeg


def client_for(fake: FakeVLM, **kw: object) -> tuple[VlmClient, Metrics]:
    metrics = Metrics()
    cfg = VlmConfig.model_validate({"base_url": fake.base_url, "max_retries": 0, **kw})
    return VlmClient(cfg, metrics), metrics


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else float(value)


async def test_verdict_comes_from_the_pixels(fake_vlm: FakeVLM) -> None:
    client, metrics = client_for(fake_vlm)
    yes = await client.analyze(jpeg(True), [RED])
    no = await client.analyze(jpeg(False), [RED])
    await client.close()
    assert yes.verdicts[0].present and yes.verdicts[0].confidence >= 7
    assert not no.verdicts[0].present
    assert all(r.structured for r in fake_vlm.requests)  # response_format json_schema was sent
    assert (fake_vlm.requests[0].width, fake_vlm.requests[0].height) == (896, 504)
    assert sample(metrics, "vlm_monitor_vlm_requests_total", {"outcome": "ok"}) == 2
    # 896x504 = 576 image tokens + 2, plus the prompt's text, as the server reported them.
    assert sample(metrics, "vlm_monitor_vlm_tokens_total", {"kind": "prompt"}) >= 2 * 578
    assert sample(metrics, "vlm_monitor_vlm_request_duration_seconds_count") == 2


async def test_plain_text_answers_are_understood(fake_vlm: FakeVLM) -> None:
    fake_vlm.mode = "text"
    client, _ = client_for(fake_vlm)
    result = await client.analyze(jpeg(True), [RED])
    await client.close()
    assert result.verdicts[0].present and result.verdicts[0].confidence == 9


async def test_garbage_answers_are_errors_not_verdicts(fake_vlm: FakeVLM) -> None:
    fake_vlm.mode = "garbage"
    client, metrics = client_for(fake_vlm)
    with pytest.raises(BadAnswer):
        await client.analyze(jpeg(True), [RED])
    await client.close()
    assert sample(metrics, "vlm_monitor_vlm_requests_total", {"outcome": "bad_answer"}) == 1


async def test_an_html_page_with_200_is_a_bad_answer_and_not_a_model_list(fake_vlm: FakeVLM) -> None:
    fake_vlm.mode = "html"  # a proxy's error page, sent with status 200
    client, metrics = client_for(fake_vlm)
    with pytest.raises(BadAnswer, match="HTML page"):
        await client.analyze(jpeg(True), [RED])
    status = await client.check()
    await client.close()
    assert sample(metrics, "vlm_monitor_vlm_requests_total", {"outcome": "bad_answer"}) == 1
    # Not usable, but not the fatal "wrong model" either: a proxy's page may go away.
    assert not status.usable and not status.reachable
    assert "not a model list" in (status.reason or "")


async def test_a_refused_api_key_is_named_without_the_servers_text(fake_vlm: FakeVLM) -> None:
    fake_vlm.api_key = "right"
    client, _ = client_for(fake_vlm, api_key="wrong")
    with pytest.raises(Rejected) as e:
        await client.analyze(jpeg(True), [RED])
    await client.close()
    assert "401" in str(e.value) and "api_key" in str(e.value) and "Unauthorized" not in str(e.value)


async def test_what_no_vllm_would_send_is_an_error_not_a_crash() -> None:
    """A proxy's 502 page, a 429 that passes on the retry, an endless body, a wrong shape."""
    answers: list[web.Response] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        return answers.pop(0)

    app = web.Application(client_max_size=1 << 24)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    cfg = VlmConfig(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    client = VlmClient(cfg, Metrics())
    try:
        answers[:] = [web.Response(status=502, text="<html>Bad Gateway</html>") for _ in range(2)]
        with pytest.raises(Unavailable, match="error 502: HTTP 502"):
            await client.analyze(jpeg(True), [RED])
        ok = {"choices": [{"message": {"content": '{"present": true, "confidence": 9, '
                                                  '"description": "red"}'}}]}
        answers[:] = [web.Response(status=429, text="slow down"), web.json_response(ok)]
        assert (await client.analyze(jpeg(True), [RED])).verdicts[0].present
        answers[:] = [web.Response(body=b"x" * (3 << 20))]
        with pytest.raises(BadAnswer, match="over 1048576 bytes"):
            await client.analyze(jpeg(True), [RED])
        for odd in ({"choices": [{"message": {"content": 7}}]}, {"choices": [{}]}, [1, 2]):
            answers[:] = [web.json_response(odd)]
            with pytest.raises(BadAnswer):
                await client.analyze(jpeg(True), [RED])
        assert not answers
    finally:
        await client.close()
        await runner.cleanup()


@pytest.mark.parametrize("shape", ["nested", "flat"])
async def test_wrong_model_is_rejected_with_the_servers_message(fake_vlm: FakeVLM, shape: str) -> None:
    fake_vlm.error_shape = shape
    client, _ = client_for(fake_vlm, model="Qwen/Nope")
    with pytest.raises(Rejected, match="The model `Qwen/Nope` does not exist"):
        await client.analyze(jpeg(True), [RED])
    status = await client.check()
    await client.close()
    assert status.reachable and not status.serves_model
    assert "Qwen/Nope" in (status.reason or "")


async def test_server_errors_and_a_dead_server_are_unavailable(fake_vlm: FakeVLM) -> None:
    fake_vlm.fail_rate = 1.0
    client, metrics = client_for(fake_vlm, max_retries=1)
    with pytest.raises(Unavailable, match="500"):
        await client.analyze(jpeg(True), [RED])
    await client.close()
    assert fake_vlm.failures == 2  # the one retry we allow, and no more
    assert sample(metrics, "vlm_monitor_vlm_requests_total", {"outcome": "server_error"}) == 1

    dead = VlmClient(VlmConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0), Metrics())
    with pytest.raises(Unavailable, match="cannot connect"):
        await dead.analyze(jpeg(True), [RED])
    status = await dead.check()
    await dead.close()
    assert not status.reachable


async def test_slow_server_times_out(fake_vlm: FakeVLM) -> None:
    fake_vlm.latency = 2.0
    client, metrics = client_for(fake_vlm, timeout_seconds=0.3)
    with pytest.raises(Unavailable, match="timed out"):
        await client.analyze(jpeg(True), [RED])
    await client.close()
    assert sample(metrics, "vlm_monitor_vlm_requests_total", {"outcome": "timeout"}) == 1


async def test_inflight_requests_never_exceed_the_bound(fake_vlm: FakeVLM) -> None:
    fake_vlm.latency = 0.05
    client, metrics = client_for(fake_vlm, max_concurrency=3)
    image = jpeg(True)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, int(sample(metrics, "vlm_monitor_vlm_inflight_requests")))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(client.analyze(image, [RED]) for _ in range(24)))
    watcher.cancel()
    await client.close()
    assert len(results) == 24
    assert fake_vlm.max_inflight == 3  # the server saw exactly the bound, never more
    assert peak <= 3
    assert sample(metrics, "vlm_monitor_vlm_inflight_requests") == 0


def test_metrics_never_carry_the_api_key(fake_vlm: FakeVLM) -> None:
    async def go() -> Metrics:
        client, metrics = client_for(fake_vlm, api_key="sk-very-secret")
        await client.analyze(jpeg(False), [RED])
        await client.close()
        return metrics

    metrics = asyncio.run(go())
    assert b"sk-very-secret" not in generate_latest(metrics.registry)


def test_error_message_reads_both_vllm_shapes() -> None:
    nested = {"error": {"message": "At most 1 image(s) may be provided in one prompt.", "type": "BadRequestError"}}
    flat = {"object": "error", "message": "The model `x` does not exist.", "code": 404}
    assert error_message(nested, "?") == "At most 1 image(s) may be provided in one prompt."
    assert error_message(flat, "?") == "The model `x` does not exist."
    assert error_message("nonsense", "fallback") == "fallback"


def test_the_body_sent_is_the_request_even_when_a_target_names_an_empty_image() -> None:
    image = jpeg(True)
    sly = 'a sign reading "data:image/jpeg;base64," on a door'
    for targets in ([RED], [sly, "data:image/jpeg;base64,"]):
        assert json.loads(chat_body("qwen", image, targets, 200)) == chat_request("qwen", image, targets, 200)


async def test_several_targets_are_asked_in_one_request(fake_vlm: FakeVLM) -> None:
    client, metrics = client_for(fake_vlm)
    result = await client.analyze(jpeg(True), ["a blue car", RED, "a green bin"])
    await client.close()
    assert [v.present for v in result.verdicts] == [False, True, False]
    assert len(fake_vlm.requests) == 1 and fake_vlm.requests[0].targets == ["a blue car", RED, "a green bin"]
    # The image was paid for once: one request's worth of image tokens.
    assert 301 <= sample(metrics, "vlm_monitor_vlm_tokens_total", {"kind": "prompt"}) < 2 * 578


def test_probe_says_in_one_line_what_a_proxy_sent(fake_vlm: FakeVLM, tmp_path: Any) -> None:
    from tests.conftest import cli

    fake_vlm.mode = "html"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"vlm: {{base_url: '{fake_vlm.base_url}'}}\nstreams: [{{name: a, url: a.mp4, targets: [x]}}]\n")
    result = cli("probe", "--config", str(cfg))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not a model list" in result.stderr
    assert "internal error" not in result.stderr


def test_the_proxy_comes_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("http://gpu:8000/v1") is None
    monkeypatch.setenv("HTTP_PROXY", "http://user:secret@proxy.lan:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.internal")
    proxy = env_proxy("http://gpu:8000/v1")
    assert proxy is not None and (proxy.host, proxy.port, proxy.user) == ("proxy.lan", 3128, "user")
    assert env_proxy("https://gpu:8000/v1") is None  # no HTTPS_PROXY
    assert env_proxy("http://vllm.internal:8000/v1") is None  # spared by NO_PROXY
    assert env_proxy("http://localhost:8000/v1") is None


async def test_requests_go_through_the_proxy_the_environment_names(
        fake_vlm: FakeVLM, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stand-in server is the proxy: a host that cannot be resolved is reached only through it.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{fake_vlm.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    cfg = VlmConfig.model_validate({"base_url": "http://model.invalid:8000/v1", "max_retries": 0})
    client = VlmClient(cfg, Metrics())
    try:
        analysis = await client.analyze(jpeg(True), [RED])
    finally:
        await client.close()
    assert analysis.verdicts[0].present


async def test_a_server_back_after_a_long_outage_is_seen_within_the_probe_cap(fake_vlm: FakeVLM) -> None:
    """The watch's probes back off, but never to more than PROBE_CAP_S apart: however long
    the server was down, it is seen back (and samples judged again) within about that. Here
    scaled down: probes from 0.05 s, capped at 0.2 s, a 1.5 s outage (uncapped, the probes
    would be ~1.6 s apart by then)."""
    client, _ = client_for(fake_vlm)
    watch = ModelWatch(client)
    watch.PROBE_BASE_S, watch.PROBE_CAP_S = 0.05, 0.2
    probing = asyncio.create_task(watch.run())
    try:
        await asyncio.wait_for(watch.ready.wait(), 10)
        port = fake_vlm.port
        await asyncio.to_thread(fake_vlm.stop)
        with pytest.raises(Unavailable) as refused:
            await client.analyze(jpeg(True), [RED])
        watch.note(refused.value)
        assert not watch.ready.is_set()
        await asyncio.sleep(1.5)  # the outage itself
        assert not watch.ready.is_set()
        await asyncio.to_thread(fake_vlm.start, port)
        back = asyncio.get_running_loop().time()
        await asyncio.wait_for(watch.ready.wait(), 10)
        assert asyncio.get_running_loop().time() - back < 0.2 + 0.3
    finally:
        probing.cancel()
        await asyncio.gather(probing, return_exceptions=True)
        await client.close()
