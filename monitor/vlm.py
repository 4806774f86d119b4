"""The model client: one AsyncOpenAI client, a global bound on requests in flight.

vLLM never answers 429: it queues without limit, so back-pressure is ours.
The semaphore here is the one place that bounds in-flight requests across
all streams; asyncio wakes its waiters in FIFO order, so no stream starves.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from monitor.config import VlmConfig
from monitor.metrics import Metrics
from monitor.verdict import AnswerError, Verdict, build_prompt, parse_answers, response_format

_holding_slot: contextvars.ContextVar[bool] = contextvars.ContextVar("vlm_holding_slot", default=False)


class VlmError(Exception):
    """A model request that gave no verdict. ``outcome`` is its metric label."""

    outcome = "server_error"


class Unavailable(VlmError):
    """The server could not be reached, timed out or failed (5xx): worth waiting for."""

    def __init__(self, message: str, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome


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


class VlmClient:
    def __init__(self, cfg: VlmConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self._client = openai.AsyncOpenAI(
            base_url=cfg.base_url,
            api_key=cfg.api_key.get_secret_value(),
            timeout=cfg.timeout_seconds,
            max_retries=cfg.max_retries,
        )
        self._limit = asyncio.Semaphore(cfg.max_concurrency)
        metrics.declare_vlm()

    async def close(self) -> None:
        await self._client.close()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a free request slot, then hold it for this task's next analyze() calls.

        Live streams take their frame only once they hold a slot, so a frame never
        waits in a queue growing old: the wait happens before the frame is chosen.
        """
        async with self._limit:
            token = _holding_slot.set(True)
            try:
                yield
            finally:
                _holding_slot.reset(token)

    async def analyze(self, jpeg: bytes, targets: Sequence[str]) -> Analysis:
        """Ask, in one request, whether each target is in the image. VlmError when no verdicts."""
        image_url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
        messages: list[ChatCompletionMessageParam] = [{
            "role": "user",
            "content": [
                {"type": "text", "text": build_prompt(targets)},
                {"type": "image_url", "image_url": {"url": image_url}},
            ],
        }]
        async with contextlib.AsyncExitStack() as stack:
            if not _holding_slot.get():
                await stack.enter_async_context(self._limit)
            self.metrics.vlm_inflight.inc()
            start = time.perf_counter()
            try:
                response = await self._client.chat.completions.create(
                    model=self.cfg.model,
                    messages=messages,
                    max_tokens=self.cfg.max_tokens,
                    temperature=0.0,
                    response_format=cast(Any, response_format(len(targets))),
                )
            except VlmError as e:
                self.metrics.vlm_requests.labels(e.outcome).inc()
                raise
            except openai.APIError as e:
                err = _classify(e)
                self.metrics.vlm_requests.labels(err.outcome).inc()
                raise err from None
            finally:
                latency = time.perf_counter() - start
                self.metrics.vlm_inflight.dec()
        self.metrics.vlm_duration.observe(latency)
        try:
            # A proxy's error page comes back as a 200 with HTML: the client hands over a str.
            if not isinstance(response, ChatCompletion):
                raise AnswerError(f"the server answered with {_what(response)}, not a chat completion")
            usage = response.usage
            prompt_tokens = usage.prompt_tokens if usage else 0
            completion_tokens = usage.completion_tokens if usage else 0
            if not response.choices:
                raise AnswerError("no choices in the response")
            content = response.choices[0].message.content
            if content is not None and len(content) > MAX_ANSWER_CHARS:
                raise AnswerError(f"the answer is {len(content)} characters long")
            verdicts = parse_answers(content, len(targets))
        except (AnswerError, AttributeError, TypeError, ValueError) as e:
            self.metrics.vlm_requests.labels("bad_answer").inc()
            raise BadAnswer(f"model answer not understood: {e}") from None
        self.metrics.vlm_tokens.labels("prompt").inc(prompt_tokens)
        self.metrics.vlm_tokens.labels("completion").inc(completion_tokens)
        self.metrics.vlm_requests.labels("ok").inc()
        return Analysis(verdicts, latency, prompt_tokens, completion_tokens)

    async def check(self) -> ServerStatus:
        """Does the server answer, and serve our model? Also sets the vlm_up gauge."""
        try:
            page = await self._client.with_options(max_retries=0, timeout=5.0).models.list()
        except openai.APIError as e:
            status = ServerStatus(False, False, str(_classify(e)))
        except (AttributeError, TypeError, ValueError):
            status = NOT_VLLM
        except Exception as e:  # the watch must outlive whatever a server or proxy sends
            status = ServerStatus(False, False, f"model server check failed ({type(e).__name__})")
        else:
            try:
                served = {str(m.id): getattr(m, "max_model_len", None) for m in page.data}
            except (AttributeError, TypeError):
                served = None
            if served is None:
                status = NOT_VLLM
            elif self.cfg.model in served:
                length = served[self.cfg.model]
                status = ServerStatus(True, True, None,
                                      length if isinstance(length, int) else None)
            else:
                shown = ", ".join(list(served)[:5]) or "none"
                status = ServerStatus(True, False, f"the server does not serve model "
                                      f"{self.cfg.model!r} (it serves: {shown})")
        self.metrics.vlm_up.set(1 if status.usable else 0)
        return status


def _classify(e: openai.APIError) -> VlmError:
    if isinstance(e, openai.APITimeoutError):
        return Unavailable("model server timed out", "timeout")
    if isinstance(e, openai.APIConnectionError):
        # The cause's class (ConnectError, …) helps; its text may hold the URL, so not that.
        detail = type(e.__cause__).__name__ if e.__cause__ is not None else ""
        return Unavailable(
            "cannot connect to the model server" + (f" ({detail})" if detail else ""),
            "connection_error")
    if isinstance(e, openai.APIStatusError):
        if e.status_code in (401, 403):
            # The server's own text may echo the key or a realm: say what it means instead.
            return Rejected(f"model server refused the API key ({e.status_code}): "
                            "check vlm.api_key")
        message = error_message(e.body, e.message)
        if e.status_code >= 500 or e.status_code in (408, 429):
            return Unavailable(f"model server error {e.status_code}: {message}", "server_error")
        return Rejected(f"model server refused the request ({e.status_code}): {message}")
    if isinstance(e, openai.APIResponseValidationError):
        return BadAnswer("model server sent a malformed response")
    return VlmError(f"model request failed: {e.__class__.__name__}")
