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
from monitor.vlm import Endpoint, Unavailable, VlmClient, VlmError


class ModelWatch:
    """Knows whether each model endpoint is usable; probes, with backoff, those that are not.

    ``ready`` is set while at least one endpoint is usable. Logs only when an
    endpoint's state or reason changes, so a dead server is one line, not one
    per frame. An endpoint that does not serve its model is given up (it will
    not mend itself); when every endpoint is, that is fatal.
    """

    RECHECK_S = 30.0
    # A down server is probed about PROBE_BASE_S after it failed, then less often, but never
    # more than PROBE_CAP_S apart: every camera's samples are dropped until a probe sees it
    # back, and a probe is one small GET. With a 30 s cap, a 10 s restart of the model
    # server under 100 cameras went unseen for up to 14 s after it was back (2,300 samples).
    PROBE_BASE_S = 1.0
    PROBE_CAP_S = 5.0

    def __init__(self, client: VlmClient) -> None:
        self.client = client
        self.ready = asyncio.Event()
        self.fatal: str | None = None
        self.fatal_event = asyncio.Event()
        self._reasons: dict[str, str | None] = {
            e.name: "the model server has not been checked yet" for e in client.endpoints}
        self._given_up: set[str] = set()
        self._wake = {e.name: asyncio.Event() for e in client.endpoints}
        client.unchecked()
        self._log = logs.get("monitor.vlm")

    @property
    def reason(self) -> str | None:
        """Why no endpoint is usable, in one line; None while one is."""
        if self.ready.is_set():
            return None
        if len(self._reasons) == 1:
            return next(iter(self._reasons.values()))
        return "; ".join(f"{name}: {why}" for name, why in self._reasons.items())

    def note(self, error: VlmError) -> None:
        """A model call failed. A server that cannot be reached or timed out is down until
        a probe says otherwise; one that answered, even with a 5xx, is not."""
        if not (isinstance(error, Unavailable) and error.outcome in ("connection_error", "timeout")):
            return
        for endpoint in self.client.endpoints:
            if endpoint.name == error.endpoint and endpoint.healthy:
                self._set(endpoint, False, str(error))
                self._log.warning("model server unavailable", endpoint=endpoint.name, reason=str(error))
                self._wake[endpoint.name].set()

    def _set(self, endpoint: Endpoint, usable: bool, reason: str | None) -> None:
        self.client.mark(endpoint, usable)  # the client wakes its own waiters
        self._reasons[endpoint.name] = reason
        if any(e.healthy for e in self.client.endpoints):
            self.ready.set()
        else:
            self.ready.clear()
        self.client.metrics.vlm_up.set(1 if self.ready.is_set() else 0)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for endpoint in self.client.endpoints:
                tg.create_task(self._probe(endpoint), name=f"model-watch-{endpoint.name}")

    async def _probe(self, endpoint: Endpoint) -> None:
        attempt = 0
        last_reason: str | None = None
        wake = self._wake[endpoint.name]
        while True:
            status = await self.client.check(endpoint)
            if status.late and endpoint.healthy:
                # Our own loop stalled through the check: ask again soon, judge nothing.
                await asyncio.sleep(1.0)
                continue
            if status.usable:
                if not endpoint.healthy:
                    self._log.info("model server ready", endpoint=endpoint.name, model=endpoint.model,
                                   max_model_len=status.max_model_len)
                self._set(endpoint, True, None)
                last_reason, attempt = None, 0
                wake.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation
                # that arrives as the event is set, and the watch then never ends.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.RECHECK_S):
                        await wake.wait()
                continue
            self._set(endpoint, False, status.reason)
            if status.reachable and not status.serves_model:
                # A wrong model name will not mend itself: give this endpoint up.
                self._given_up.add(endpoint.name)
                self._log.error("model endpoint given up", endpoint=endpoint.name, reason=status.reason)
                if self._given_up == set(self._wake):
                    self.fatal = status.reason
                    self.fatal_event.set()
                return
            if status.reason != last_reason:
                self._log.warning("model server unavailable, retrying", endpoint=endpoint.name,
                                  reason=status.reason)
                last_reason = status.reason
            await asyncio.sleep(backoff_delay(attempt, self.PROBE_BASE_S, self.PROBE_CAP_S))
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
