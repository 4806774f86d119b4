"""The OpenAI-compatible HTTP API, spoken directly over aiohttp: JSON in, JSON out.

The ``openai`` package cost 2.7 ms of CPU per chat request against a local
server (httpx alone 1.3 ms, aiohttp 0.5 ms; a daemon with 100 cameras makes
100 such requests a second), and the daemon uses two calls of it. So this
module speaks those two calls itself, with the same retry rule: connection
failures, timeouts, 408, 409, 429 and 5xx are tried again, at most
``max_retries`` times, with jittered backoff.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from typing import Any

import aiohttp
from yarl import URL

from monitor import __version__
from monitor.backoff import backoff_delay

# A verdict is a few hundred bytes and a model list a few KB: a longer body is not vLLM.
MAX_BODY_BYTES = 1 << 20
RETRIED = frozenset({408, 409, 429})


class ApiError(Exception):
    """A request that got no usable answer."""


class ApiTimeout(ApiError):
    pass


class ApiConnectionError(ApiError):
    """No HTTP answer at all. ``detail``: the failure's class name (its text may hold the URL)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ApiStatusError(ApiError):
    """An answer with status >= 400; ``body`` is its JSON, or its text when not JSON."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class ApiTooLarge(ApiError):
    pass


def env_proxy(url: str) -> URL | None:
    """The proxy that HTTP_PROXY / HTTPS_PROXY name for ``url``, unless NO_PROXY spares its host."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    return URL(proxy) if proxy else None


class OpenAiHttp:
    """One server's API. The session is made on first use, inside the running loop."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float, max_retries: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json",
                         "User-Agent": f"vlm-monitor/{__version__}"}
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # The callers bound requests in flight, so the pool need not. Idle connections
            # are dropped after 4 s, before vLLM's (uvicorn's) 5 s keep-alive closes them
            # under a request. HTTP(S)_PROXY and NO_PROXY apply, as with httpx, read once
            # here: aiohttp's trust_env reads them, and parses ~/.netrc, in a thread for
            # every request (4% of the daemon's CPU at 20 cameras).
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0)
            proxy = env_proxy(self.base_url)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers,
                proxy=proxy.with_user(None) if proxy else None,
                proxy_auth=aiohttp.BasicAuth.from_url(proxy) if proxy else None)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, path: str, body: bytes) -> Any:
        """POST ``body``, JSON already."""
        return await self.request("POST", path, body)

    async def get(self, path: str, *, seconds: float | None = None, retries: int | None = None) -> Any:
        return await self.request("GET", path, None, seconds=seconds, retries=retries)

    async def request(self, method: str, path: str, data: bytes | None, *,
                      seconds: float | None = None, retries: int | None = None) -> Any:
        """The answer's JSON (or its text, when a 200 is not JSON), within ``seconds`` a try
        (default: the configured timeout). ApiError when none."""
        retries = self.max_retries if retries is None else retries
        attempt = 0
        while True:
            try:
                return await self._once(method, path, data, seconds or self.timeout)
            except (ApiTimeout, ApiConnectionError, ApiStatusError) as e:
                again = not isinstance(e, ApiStatusError) or e.status >= 500 or e.status in RETRIED
                if not again or attempt >= retries:
                    raise
            await asyncio.sleep(backoff_delay(attempt, 0.5, 8.0))
            attempt += 1

    async def _once(self, method: str, path: str, data: bytes | None, seconds: float) -> Any:
        try:
            async with self._http().request(method, self.base_url + path, data=data,
                                            timeout=aiohttp.ClientTimeout(total=seconds)) as response:
                raw = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    raw += chunk
                    if len(raw) > MAX_BODY_BYTES:
                        raise ApiTooLarge(f"the answer is over {MAX_BODY_BYTES} bytes")
                status = response.status
        except TimeoutError:
            raise ApiTimeout("timed out") from None
        except (aiohttp.ClientError, OSError) as e:
            raise ApiConnectionError(type(e).__name__) from None
        text = raw.decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        if status >= 400:
            raise ApiStatusError(status, body)
        return body
