"""Whether the model server is usable, known in one place and probed while it is not."""

from __future__ import annotations

import asyncio
import contextlib

from monitor import logs
from monitor.backoff import backoff_delay
from monitor.vlm import VlmClient


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

    def report_down(self, reason: str) -> None:
        if self.ready.is_set():
            self.ready.clear()
            self.reason = reason
            self._log.warning("model server unavailable", reason=reason)
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
