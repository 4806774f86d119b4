"""The model client: the endpoints' HTTP APIs, a global bound on requests in flight.

vLLM never answers 429: it queues without limit, so back-pressure is ours.
``VlmClient`` is the one place that bounds in-flight requests across all
streams, per endpoint; its waiters are woken in arrival order, so no stream
starves.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.config import EndpointConfig, VlmConfig
from monitor.limits import AimdLimit
from monitor.load import LoopLag
from monitor.metrics import Metrics
from monitor.openai_http import ApiConnectionError, ApiError, ApiStatusError, ApiTimeout, OpenAiHttp
from monitor.prompts import build_prompt
from monitor.verdict import AnswerError, Verdict, parse_answers, response_format


class VlmError(Exception):
    """A model request that gave no verdict. ``outcome`` is its metric label; ``endpoint``
    the name of the endpoint that failed, once one was asked."""

    outcome = "server_error"
    endpoint: str | None = None


class Unavailable(VlmError):
    """The server could not be reached, timed out or failed (5xx): worth waiting for."""

    def __init__(self, message: str, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class Late(VlmError):
    """The request ran out of time while this daemon's event loop could not run: the
    daemon is short of CPU, which says nothing about the model server."""

    outcome = "late"


class Rejected(VlmError):
    """The server refused the request (4xx: wrong model, bad key, image too large)."""

    outcome = "rejected"


class BadAnswer(VlmError):
    """The server answered, but not with a verdict."""

    outcome = "bad_answer"


@dataclass(frozen=True, slots=True)
class ServerStatus:
    reachable: bool
    serves_model: bool
    reason: str | None  # why it is not usable, in one line
    max_model_len: int | None = None
    late: bool = False  # the check timed out while our own loop was late: it proves nothing

    @property
    def usable(self) -> bool:
        return self.reachable and self.serves_model


# Something answers, but not vLLM (a proxy's error page, a login wall): it may pass,
# so it is "unreachable", never the fatal "does not serve the model".
NOT_VLLM = ServerStatus(False, False, "the server answered /v1/models with something "
                        "that is not a model list (a proxy's error page?)")


@dataclass(frozen=True, slots=True)
class Analysis:
    verdicts: list[Verdict]  # one per target asked about, in order
    latency: float
    prompt_tokens: int
    completion_tokens: int
    model: str  # the model that judged (a fallback's may differ)
    endpoint: str


# A verdict is a few hundred characters; max_tokens bounds what vLLM writes, this what we read.
MAX_ANSWER_CHARS = 64_000


def _what(response: object) -> str:
    if isinstance(response, str):
        text = response.lstrip()[:200].lower()
        return "an HTML page" if text.startswith(("<!doctype html", "<html")) else "plain text"
    return f"a {type(response).__name__}"


def error_message(body: Any, fallback: str) -> str:
    """The message of either vLLM error shape: {"error": {...}} (>= 0.10.1) or the flat one."""
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:300]
        if isinstance(inner, str):
            return inner[:300]
        if isinstance(body.get("message"), str):
            return str(body["message"])[:300]
    return fallback


class Endpoint:
    """One model server: its client, its bound on requests in flight, its health."""

    def __init__(self, cfg: EndpointConfig, shared: VlmConfig, metrics: Metrics) -> None:
        assert cfg.model is not None and cfg.api_key is not None  # resolved_endpoints() fills them
        self.name = cfg.name
        self.model = cfg.model
        self.base_url = cfg.base_url
        self.fallback = cfg.fallback
        self.adaptive = AimdLimit() if cfg.max_concurrency == "auto" else None
        self.limit = self.adaptive.limit if self.adaptive else int(cfg.max_concurrency)
        self.inflight = 0
        # Set through VlmClient.mark, by the model watch; True until it learns otherwise, so
        # that scan and probe, which run no watch, use every endpoint.
        self.healthy = True
        self.api = OpenAiHttp(cfg.base_url, cfg.api_key.get_secret_value(),
                              timeout=shared.timeout_seconds, max_retries=shared.max_retries)
        metrics.declare_endpoint(self.name)
        metrics.endpoint_limit.labels(self.name).set(self.limit)

    @property
    def free(self) -> float:
        return (self.limit - self.inflight) / self.limit


def chat_request(model: str, jpeg: bytes, targets: Sequence[str], max_tokens: int) -> dict[str, Any]:
    """One chat completion asking about every target in one image. Pure."""
    image_url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    return {
        "model": model,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": build_prompt(targets)},
            {"type": "image_url", "image_url": {"url": image_url}},
        ]}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "response_format": response_format(len(targets)),
    }


_NO_IMAGE = b'"data:image/jpeg;base64,"'


def chat_body(model: str, jpeg: bytes, targets: Sequence[str], max_tokens: int) -> bytes:
    """``chat_request`` as the JSON that is sent, the image's base64 spliced in after encoding. Pure.

    JSON-encoding scans every character of the 60 KB of base64 for ones to escape, and
    base64 has none: spliced, a sample's body costs 0.07 ms instead of 0.17, on the
    event loop. A target's words come before the image and only our own numbers and
    schema after it, so the last empty image in the JSON is the one to fill.
    """
    raw = json.dumps(chat_request(model, b"", targets, max_tokens)).encode()
    head, empty, tail = raw.rpartition(_NO_IMAGE)
    return b"".join((head, empty[:-1], base64.b64encode(jpeg), b'"', tail))


def read_answer(response: Any, targets: int) -> tuple[list[Verdict], int, int]:
    """The verdicts in a chat completion, and its prompt and completion tokens. Pure; raises
    AnswerError (or a lookup or type error) for anything that is not what was asked for."""
    # A proxy's error page comes back as a 200 with HTML: a str, not a dict.
    if not isinstance(response, dict):
        raise AnswerError(f"the server answered with {_what(response)}, not a chat completion")
    usage = response.get("usage") or {}
    if not response.get("choices"):
        raise AnswerError("no choices in the response")
    content = response["choices"][0]["message"]["content"]
    if content is not None and not isinstance(content, str):
        raise AnswerError(f"the answer is {_what(content)}, not text")
    if content is not None and len(content) > MAX_ANSWER_CHARS:
        raise AnswerError(f"the answer is {len(content)} characters long")
    return (parse_answers(content, targets), int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0))


@dataclass(frozen=True, slots=True)
class Lease:
    """A request slot on one endpoint, held (``VlmClient.slot``) for the requests made through it."""

    client: VlmClient
    endpoint: Endpoint

    async def analyze(self, jpeg: bytes, targets: Sequence[str]) -> Analysis:
        return await self.client.ask(self.endpoint, jpeg, targets)


class VlmClient:
    """The endpoints, and the choice of one for each request.

    Each request goes to the usable endpoint with the largest free share of its
    limit; while every primary is down, to the fallbacks; when all are down, to
    the primaries anyway (the call fails fast and the caller's policy decides).
    Waiters are served in arrival order (a condition variable), so no stream
    starves another.
    """

    def __init__(self, cfg: VlmConfig, metrics: Metrics, loop_lag: LoopLag | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.loop_lag = loop_lag  # to tell our own lateness from a slow server
        self.endpoints = [Endpoint(e, cfg, metrics) for e in cfg.resolved_endpoints()]
        self._changed = asyncio.Condition()
        self._waiting = 0  # foreground requests waiting for a slot
        self._waking: set[asyncio.Task[None]] = set()  # waiters being told an endpoint changed
        metrics.declare_vlm()

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.api.close()

    def _pick(self) -> Endpoint | None:
        primaries = [e for e in self.endpoints if not e.fallback]
        candidates = ([e for e in primaries if e.healthy]
                      or [e for e in self.endpoints if e.fallback and e.healthy] or primaries)
        room = [e for e in candidates if e.inflight < e.limit]
        return max(room, key=lambda e: e.free) if room else None

    async def _acquire(self, background: bool = False) -> Endpoint:
        """A slot on an endpoint. A background request (a scan from the console) takes one
        only while no other request waits, so it uses what the cameras leave free."""
        async with self._changed:
            if not background:
                self._waiting += 1
            try:
                while (endpoint := self._pick()) is None or (background and self._waiting):
                    if endpoint is not None:
                        self._changed.notify(1)  # not ours to take: pass the wake-up on
                    try:
                        await self._changed.wait()
                    except asyncio.CancelledError:
                        self._changed.notify(1)  # a wake-up meant for us goes to the next waiter
                        raise
            finally:
                if not background:
                    self._waiting -= 1
            endpoint.inflight += 1
        self.metrics.endpoint_inflight.labels(endpoint.name).set(endpoint.inflight)
        return endpoint

    async def _release(self, endpoint: Endpoint) -> None:
        async with self._changed:
            endpoint.inflight -= 1
            # One slot is free: wake one waiter. Waking them all (a hundred cameras wait
            # here) cost O(cameras²) wake-ups a second and starved the event loop.
            self._changed.notify(1)
        self.metrics.endpoint_inflight.labels(endpoint.name).set(endpoint.inflight)

    def unchecked(self) -> None:
        """No endpoint is known to be usable until its first check (``ModelWatch``'s)."""
        for endpoint in self.endpoints:
            endpoint.healthy = False

    def mark(self, endpoint: Endpoint, healthy: bool) -> bool:
        """What the watch found: the endpoint is usable, or not. True if that changed; then the
        requests waiting for a slot look again (they may now have somewhere to go)."""
        if endpoint.healthy == healthy:
            return False
        endpoint.healthy = healthy
        task = asyncio.get_running_loop().create_task(self._look_again())
        self._waking.add(task)
        task.add_done_callback(self._waking.discard)
        return True

    async def _look_again(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def slot(self, background: bool = False) -> AsyncIterator[Lease]:
        """Wait for a free request slot, then hold it: ``async with client.slot() as lease:
        await lease.analyze(...)``.

        Live streams take their frame only once they hold a slot, so a frame never
        waits in a queue growing old: the wait happens before the frame is chosen.
        """
        endpoint = await self._acquire(background)
        try:
            yield Lease(self, endpoint)
        finally:
            await self._release(endpoint)

    async def analyze(self, jpeg: bytes, targets: Sequence[str]) -> Analysis:
        """Ask, in one request, whether each target is in the image. VlmError when no verdicts."""
        async with self.slot() as lease:
            return await lease.analyze(jpeg, targets)

    async def ask(self, endpoint: Endpoint, jpeg: bytes, targets: Sequence[str]) -> Analysis:
        """``analyze`` on this endpoint, whatever its load (``probe`` asks each in turn)."""
        saturated = endpoint.inflight >= endpoint.limit
        self.metrics.vlm_inflight.inc()
        began = time.monotonic()  # the loop's clock too, so LoopLag can be asked about it
        try:
            response = await endpoint.api.post(
                "/chat/completions", chat_body(endpoint.model, jpeg, targets, self.cfg.max_tokens))
        except ApiError as e:
            if isinstance(e, ApiTimeout) and self._late(began, self.cfg.timeout_seconds):
                raise self._failed(endpoint, Late("the daemon was too busy to read the answer in "
                                                  "time (short of CPU)")) from None
            raise self._failed(endpoint, _classify(e)) from None
        finally:
            latency = time.monotonic() - began
            self.metrics.vlm_inflight.dec()
        self.metrics.vlm_duration.observe(latency)
        try:
            verdicts, prompt_tokens, completion_tokens = read_answer(response, len(targets))
        except (AnswerError, AttributeError, KeyError, IndexError, TypeError, ValueError) as e:
            raise self._failed(endpoint, BadAnswer(f"model answer not understood: {e}")) from None
        if endpoint.adaptive is not None:
            # The limit was the bound if it was full when this request went or when it came
            # back: the requests sent together at the start count as a round at the limit.
            saturated = saturated or endpoint.inflight >= endpoint.limit
            before, endpoint.limit = endpoint.limit, endpoint.adaptive.update(latency, saturated)
            self.metrics.endpoint_limit.labels(endpoint.name).set(endpoint.limit)
            if endpoint.limit > before:
                await self._look_again()  # room for more: let the waiters look again
        self.metrics.vlm_tokens.labels("prompt").inc(prompt_tokens)
        self.metrics.vlm_tokens.labels("completion").inc(completion_tokens)
        self._count(endpoint, "ok")
        return Analysis(verdicts, latency, prompt_tokens, completion_tokens, endpoint.model,
                        endpoint.name)

    def _late(self, began: float, timeout: float) -> bool:
        return self.loop_lag is not None and self.loop_lag.late_during(began, timeout)

    def _count(self, endpoint: Endpoint, outcome: str) -> None:
        self.metrics.vlm_requests.labels(outcome).inc()
        self.metrics.endpoint_requests.labels(endpoint.name, outcome).inc()

    def _failed(self, endpoint: Endpoint, error: VlmError) -> VlmError:
        self._count(endpoint, error.outcome)
        error.endpoint = endpoint.name
        return error

    async def check(self, endpoint: Endpoint | None = None) -> ServerStatus:
        """Does the server answer, and serve its model? (The first endpoint, if none is named.)"""
        endpoint = endpoint or self.endpoints[0]
        began = time.monotonic()
        try:
            page = await endpoint.api.get("/models", seconds=5.0, retries=0)
        except ApiError as e:
            late = isinstance(e, ApiTimeout) and self._late(began, 5.0)
            status = ServerStatus(False, False, str(_classify(e)), late=late)
        except Exception as e:  # the watch must outlive whatever a server or proxy sends
            status = ServerStatus(False, False, f"model server check failed ({type(e).__name__})")
        else:
            try:
                served = {str(m["id"]): m.get("max_model_len") for m in page["data"]}
            except (AttributeError, KeyError, TypeError):
                served = None
            if served is None:
                status = NOT_VLLM
            elif endpoint.model in served:
                length = served[endpoint.model]
                status = ServerStatus(True, True, None,
                                      length if isinstance(length, int) else None)
            else:
                shown = ", ".join(list(served)[:5]) or "none"
                status = ServerStatus(True, False, f"the server does not serve model "
                                      f"{endpoint.model!r} (it serves: {shown})")
        if not status.late:
            self.metrics.endpoint_up.labels(endpoint.name).set(1 if status.usable else 0)
        return status


def _classify(e: ApiError) -> VlmError:
    if isinstance(e, ApiTimeout):
        return Unavailable("model server timed out", "timeout")
    if isinstance(e, ApiConnectionError):
        return Unavailable(f"cannot connect to the model server ({e.detail})", "connection_error")
    if isinstance(e, ApiStatusError):
        if e.status in (401, 403):
            # The server's own text may echo the key or a realm: say what it means instead.
            return Rejected(f"model server refused the API key ({e.status}): check vlm.api_key")
        message = error_message(e.body, f"HTTP {e.status}")
        if e.status >= 500 or e.status in (408, 429):
            return Unavailable(f"model server error {e.status}: {message}", "server_error")
        return Rejected(f"model server refused the request ({e.status}): {message}")
    return BadAnswer(f"model server sent an unusable answer ({e})")
