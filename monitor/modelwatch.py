"""Whether the model server is usable, known in one place and probed while it is not.

``ModelWatch`` is that one place: every failed model call is ``note``d there,
and it alone decides that the server is down. What a stream does about a
down server is its ``ModelPolicy``: a live camera fails fast (a frame that
waits goes stale), a recording waits (no frame of a file is stale), ``scan``
does neither (it reports the error).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from monitor import logs
from monitor.backoff import backoff_delay
from monitor.vlm import Unavailable, VlmClient, VlmError


class ModelWatch:
    """Knows whether the model server is usable; probes it, with backoff, while it is not.

    Logs only when the state or the reason changes, so a dead server is one
    line, not one per frame.
    """

    RECHECK_S = 30.0

    def __init__(self, client: VlmClient) -> None:
        self.client = client
        self.ready = asyncio.Event()
        self.fatal: str | None = None
        self.fatal_event = asyncio.Event()
        self.reason: str | None = "the model server has not been checked yet"
        self._wake = asyncio.Event()
        self._log = logs.get("monitor.vlm")

    def note(self, error: VlmError) -> None:
        """A model call failed. A server that cannot be reached or timed out is down until
        a probe says otherwise; one that answered, even with a 5xx, is not."""
        if isinstance(error, Unavailable) and error.outcome in ("connection_error", "timeout"):
            if self.ready.is_set():
                self.ready.clear()
                self.reason = str(error)
                self._log.warning("model server unavailable", reason=self.reason)
            self._wake.set()

    async def run(self) -> None:
        attempt = 0
        last_reason: str | None = None
        while True:
            status = await self.client.check()
            if status.usable:
                if not self.ready.is_set():
                    self._log.info("model server ready", model=self.client.cfg.model,
                                   max_model_len=status.max_model_len)
                self.reason, last_reason, attempt = None, None, 0
                self.ready.set()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.RECHECK_S)
                continue
            self.ready.clear()
            self.reason = status.reason
            if status.reachable and not status.serves_model:
                # A wrong model name will not mend itself: say so and stop.
                self.fatal = status.reason
                self.fatal_event.set()
                return
            if status.reason != last_reason:
                self._log.warning("model server unavailable, retrying", reason=status.reason)
                last_reason = status.reason
            await asyncio.sleep(backoff_delay(attempt, 1.0, 30.0))
            attempt += 1


class ModelPolicy(Protocol):
    """What a stream does while the model server is down."""

    def available(self) -> bool:
        """False: fail the call at once (a circuit breaker) instead of spending a timeout."""
        ...

    async def wait(self, error: Unavailable, attempt: int) -> bool:
        """The server was unavailable: True once it is worth asking again, False to give up."""
        ...


class ReportErrors:
    """``scan``: no circuit, no waiting; the caller reports the error."""

    def available(self) -> bool:
        return True

    async def wait(self, error: Unavailable, attempt: int) -> bool:
        return False


class FailFast:
    """Live cameras: while the watch says down, drop frames at once (it probes meanwhile)."""

    def __init__(self, watch: ModelWatch) -> None:
        self.watch = watch

    def available(self) -> bool:
        return self.watch.ready.is_set()

    async def wait(self, error: Unavailable, attempt: int) -> bool:
        self.watch.note(error)
        return False


class WaitForServer:
    """Recordings: wait for the server rather than lose a frame, until the stream stops."""

    def __init__(self, watch: ModelWatch, stopping: asyncio.Event) -> None:
        self.watch = watch
        self.stopping = stopping

    def available(self) -> bool:
        return True

    async def wait(self, error: Unavailable, attempt: int) -> bool:
        self.watch.note(error)
        waits = [asyncio.create_task(self.watch.ready.wait()), asyncio.create_task(self.stopping.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not self.stopping.is_set():
                # A server that answers but fails (5xx) is retried with backoff, not in a hot loop.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), backoff_delay(attempt, 0.5, 30.0))
        finally:
            for w in waits:
                w.cancel()
        return not self.stopping.is_set()
