"""A stand-in for vLLM's OpenAI-compatible server that answers from the pixels it gets.

It is a real HTTP server (aiohttp, in a thread with its own event loop) with
vLLM's JSON shapes: chat completions with base64 ``image_url`` parts,
``/v1/models``, ``/health``, and both error body shapes. Its verdict comes
from the image: "red" in the target means "is there a red region?", so a
frame that was lost, mangled or stale on the way gives the wrong answer.

Faults are injected by setting attributes: ``latency``, ``fail_rate``, ``fail_every``,
``mode`` ("json", "text", "garbage", "html": a proxy's 200 error page, on every path), ``error_shape`` ("nested", "flat"),
``healthy``. It counts requests in flight and keeps a log of every request.
With ``boxes`` it gives each present target's box (its colour's pixels); a
second look ("Look closely: ...") is confirmed only if a head sits above the
colour (a person, not a poster or a car), or refused outright with
``refuse_strict``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from aiohttp import web

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"

# HSV ranges (OpenCV: H in 0..179) of the colours the stand-in knows.
COLOURS: dict[str, list[tuple[tuple[int, int, int], tuple[int, int, int]]]] = {
    "red": [((0, 120, 70), (8, 255, 255)), ((172, 120, 70), (179, 255, 255))],
    "green": [((45, 120, 70), (75, 255, 255))],
    "blue": [((100, 120, 70), (130, 255, 255))],
    "skin": [((5, 50, 120), (25, 170, 255))],  # tests/clips.py's heads
}
MIN_FRACTION = 0.004  # of the image's pixels


def colour_mask(image: np.ndarray, colour: str) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    mask = np.zeros(hsv.shape[:2], np.uint8)
    for lo, hi in COLOURS[colour]:
        mask |= cv2.inRange(hsv, np.array(lo), np.array(hi))
    return mask


def colour_fraction(image: np.ndarray, colour: str) -> float:
    mask = colour_mask(image, colour)
    return float(np.count_nonzero(mask)) / mask.size


def has_head(image: np.ndarray, box: list[int]) -> bool:
    """A second look's judgement: a person has a head just above the shirt; a poster or a car
    does not."""
    x1, y1, x2, y2 = box
    above = image[max(0, y1 - (y2 - y1) // 2):y1, x1:x2]
    return above.size > 0 and colour_fraction(above, "skin") > 0.05


def colour_box(image: np.ndarray, colour: str) -> list[int]:
    """The bounding box of the colour's pixels, in pixels of this image (as Qwen2.5-VL gives it)."""
    ys, xs = np.nonzero(colour_mask(image, colour))
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@dataclass
class Request:
    model: str
    target: str
    width: int
    height: int
    present: bool
    structured: bool
    at: float
    targets: list[str]
    prompt: str = ""


class FakeVLM:
    def __init__(self, model: str = MODEL, api_key: str | None = None) -> None:
        self.model = model
        self.api_key = api_key
        self.latency: float = 0.0
        self.jitter: float = 0.0
        self.fail_rate: float = 0.0  # random, seeded
        self.fail_every: int = 0  # deterministic: every Nth request fails
        self.capacity: int = 0  # requests served at once (the GPU); 0: no limit. Others queue.
        self._gpu: asyncio.Semaphore | None = None
        self.mode = "json"
        self.description: str | None = None  # said of every frame instead of what is seen
        self.boxes = True  # give the target's box (from its pixels) with each present answer
        self.refuse_strict = False  # say "no" to every second look ("Look closely: ...")
        self.min_fraction = MIN_FRACTION  # of the image in the colour, to call it present
        self.error_shape = "nested"
        self.healthy = True
        self.requests: list[Request] = []
        self.inflight = 0
        self.max_inflight = 0
        self.failures = 0
        self._rng = random.Random(1234)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- lifecycle -------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, port: int = 0) -> FakeVLM:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start(port))
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-vllm", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake vLLM did not start")
        return self

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    async def _start(self, port: int) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    # --- handlers --------------------------------------------------------
    def _error(self, status: int, message: str, kind: str = "BadRequestError") -> web.Response:
        if self.error_shape == "flat":  # vLLM before 0.10.1
            body: dict[str, Any] = {"object": "error", "message": message, "type": kind,
                                    "param": None, "code": status}
        else:
            body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
        return web.json_response(body, status=status)

    def _html(self) -> web.Response:
        return web.Response(text="<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
                            content_type="text/html")

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def _models(self, request: web.Request) -> web.Response:
        if self.mode == "html":
            return self._html()
        return web.json_response({"object": "list", "data": [{
            "id": self.model, "object": "model", "created": 0, "owned_by": "vllm",
            "root": self.model, "parent": None, "max_model_len": 32768}]})

    async def _chat(self, request: web.Request) -> web.Response:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Unauthorized", "AuthenticationError")
        body = await request.json()
        if body.get("model") != self.model:
            return self._error(404, f"The model `{body.get('model')}` does not exist.",
                               "NotFoundError")
        texts: list[str] = []
        images: list[np.ndarray] = []
        for message in body.get("messages", []):
            content = message.get("content")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for part in parts or []:
                if part.get("type") == "text":
                    texts.append(part["text"])
                elif part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    if not url.startswith("data:image/"):
                        return self._error(400, "only data URLs are accepted here")
                    raw = base64.b64decode(url.split(",", 1)[1])
                    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
                    if image is None:
                        return self._error(400, "Failed to load image")
                    images.append(image)
        if not images:
            return self._error(400, "no image in the request")
        if len(images) > 4:
            return self._error(400, "At most 4 image(s) may be provided in one prompt.")
        prompt = "\n".join(texts)
        listed = re.search(r"Targets:\s*\n((?:\d+\. .+\n?)+)", prompt)
        if listed:
            targets = [re.sub(r"^\d+\. ", "", t).strip() for t in listed.group(1).strip().splitlines()]
        else:
            m = re.search(r"Target:\s*(.+)", prompt) or re.search(r"Is there an? (.+?) in", prompt)
            targets = [m.group(1).strip() if m else prompt]
        image = images[0]
        answers = []
        for target in targets:
            colour = next((c for c in COLOURS if c in target.lower()), None)
            fraction = colour_fraction(image, colour) if colour else 0.0
            strict = "Look closely" in target
            if fraction >= self.min_fraction and strict and colour is not None and (
                    self.refuse_strict or not has_head(image, colour_box(image, colour))):
                answers.append({"present": False, "confidence": 9,
                                "description": "Up close, it is a poster, not a person."})
            elif fraction >= self.min_fraction:
                answers.append({"present": True, "confidence": 9, "description":
                                f"A {colour} figure is in the frame ({fraction:.1%} of the image)."})
                if self.boxes and colour is not None:
                    answers[-1]["box"] = colour_box(image, colour)
            else:
                answers.append({"present": False, "confidence": 8,
                                "description": "An empty scene; no such target."})
        if self.description is not None:
            for a in answers:
                a["description"] = self.description
        structured = body.get("response_format", {}).get("type") == "json_schema"

        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self.capacity and self._gpu is None:
                self._gpu = asyncio.Semaphore(self.capacity)
            delay = self.latency + (self._rng.uniform(-self.jitter, self.jitter) if self.jitter else 0)
            async with self._gpu or contextlib.nullcontext():
                if delay > 0:
                    await asyncio.sleep(delay)
            self.requests.append(Request(body["model"], targets[0], image.shape[1], image.shape[0],
                                         bool(answers[0]["present"]), structured, time.monotonic(),
                                         targets, prompt))
            nth = len(self.requests)
            if (self.fail_rate and self._rng.random() < self.fail_rate) or (
                    self.fail_every and nth % self.fail_every == 0):
                self.failures += 1
                return self._error(500, "EngineCore encountered an issue.", "InternalServerError")
        finally:
            self.inflight -= 1

        if self.mode == "html":
            return self._html()
        if self.mode == "garbage":
            text = "I'm sorry, I can only describe cats. 🐈"
        elif len(targets) > 1:
            text = json.dumps({"answers": answers})
        elif self.mode == "text" or not structured:
            a = answers[0]
            text = (f"Answer: {'YES' if a['present'] else 'NO'}\nDescription: {a['description']}\n"
                    f"Confidence: {a['confidence']}")
        else:
            text = json.dumps(answers[0])
        image_tokens = (image.shape[1] // 28) * (image.shape[0] // 28) + 2
        prompt_tokens = image_tokens + len(prompt) // 4
        completion_tokens = max(1, len(text) // 4)
        return web.json_response({
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion",
            "created": int(time.time()), "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                 "tool_calls": []},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


def main() -> None:
    """Run the stand-in by hand: ``python -m tests.fakes.vllm [PORT]``."""
    import sys

    fake = FakeVLM().start(int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
    print(f"fake vLLM at {fake.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
