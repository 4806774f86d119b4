"""A live camera as a source: its capture thread, its up/down hold-off and its timer.

The capture itself (PyAV, in its own thread) is in ``monitor.sources.capture``;
``LiveSource`` owns one, turns its raw up/down reports into ``stream_down`` /
``stream_up`` after a hold-off, and samples its newest frame once an interval.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from monitor.patches import target_size
from monitor.sources.base import Dropped, Sample
from monitor.sources.capture import Latest, LiveReader
from monitor.sources.pool import CapturePool, RemoteReader
from monitor.sources.worker import CaptureSpec


@dataclass(frozen=True, slots=True)
class StateChange:
    """What a live source tells its stream, on the event loop.

    ``up`` / ``down`` (with the reason) as they happen; ``reconnect``; ``decode``
    once the decode mode is chosen; ``stream_down`` / ``stream_up`` only past
    the hold-off (those are the ones worth an alert).
    """

    kind: Literal["up", "down", "reconnect", "decode", "stream_down", "stream_up"]
    detail: str


class LiveSource:
    """A live camera: its reader thread, its up/down hold-off and its timer.

    Used as an async context manager: entering starts the reader, leaving stops
    it, cancels the hold-off timer and drops whatever the reader reports after
    that, so a stopped stream never announces anything.
    """

    def __init__(self, spec: CaptureSpec, *, down_alert_after_s: float,
                 on_change: Callable[[StateChange], None], keep_full: bool = False,
                 capture: CapturePool | None = None) -> None:
        self.interval = spec.interval
        self._on_change = on_change
        self._availability = Availability(down_alert_after_s)
        self._holdoff = down_alert_after_s
        self._down_reason = ""
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.reader: LiveReader | RemoteReader
        if capture is not None and spec.max_pixels is not None and not keep_full:
            # In a capture worker's process, unless the frame at the camera's own size
            # is wanted for a second look (it stays where it was decoded).
            self.reader = capture.reader(spec, self._from_thread)
        else:
            budget = spec.max_pixels
            self.reader = LiveReader(
                spec.url, spec.name, interval=spec.interval, decode=spec.decode, transport=spec.transport,
                open_timeout_s=spec.open_timeout_s, frozen_after_s=spec.frozen_after_s,
                report=self._from_thread,
                scale_to=None if budget is None else lambda w, h: target_size(w, h, budget),
                keep_full=keep_full, clips=spec.desk())

    async def __aenter__(self) -> LiveSource:
        self._loop = asyncio.get_running_loop()
        self.reader.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.reader.stop()
        await asyncio.to_thread(self.reader.join, 15.0)

    def _from_thread(self, kind: str, detail: str) -> None:
        if self._loop is not None and not self._closed:
            self._loop.call_soon_threadsafe(self._apply, kind, detail)

    def _apply(self, kind: str, detail: str) -> None:  # on the event loop
        if self._closed:
            return
        assert self._loop is not None
        if kind in ("reconnect", "decode"):
            self._on_change(StateChange(kind, detail))  # type: ignore[arg-type]
            return
        up = kind == "up"
        if up and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not up:
            self._down_reason = detail
            if self._timer is None:  # the hold-off runs from the first "down"
                self._timer = self._loop.call_later(self._holdoff, self._poll)
        self._on_change(StateChange("up" if up else "down", detail))
        self._announce(self._availability.update(up, self._loop.time()))

    def _poll(self) -> None:
        self._timer = None
        if self._closed or self._loop is None:
            return
        self._announce(self._availability.poll(self._loop.time()))
        due = self._availability.due()
        if due is not None:  # the loop may run a timer a hair early: try again at the due time
            self._timer = self._loop.call_at(due + 0.01, self._poll)

    def _announce(self, event: str | None) -> None:
        if event == "stream_up":
            self._on_change(StateChange("stream_up", "receiving frames"))
        elif event == "stream_down":
            self._on_change(StateChange("stream_down", self._down_reason))

    async def samples(self, stop: asyncio.Event) -> AsyncIterator[Sample | Dropped]:
        """One item per interval of wall time: the newest frame as a sample, if it is new and
        fresh, else why there is none (``Dropped``, which may stand for several intervals)."""
        reader, interval = self.reader, self.interval
        loop = asyncio.get_running_loop()
        next_due = first_tick(loop.time(), interval)
        last_seq = 0
        index = 0
        while not stop.is_set():
            delay = next_due - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    return
                except TimeoutError:
                    pass
            missed = int((loop.time() - next_due) // interval)
            if missed > 0:
                yield Dropped("stale", missed)
            next_due += (missed + 1) * interval
            latest = reader.latest()
            if latest is None or time.monotonic() - latest.taken > 2 * interval:
                yield Dropped("stream_down")
                continue
            if latest.seq == last_seq:
                latest = await self._next_frame(last_seq, loop.time() + GRACE * interval, stop)
                if latest is None:
                    yield Dropped("no_new_frame")
                    continue
            last_seq = latest.seq
            yield self._sample(index, latest)
            index += 1

    async def _next_frame(self, seq: int, until: float, stop: asyncio.Event) -> Latest | None:
        """A frame newer than ``seq`` if one arrives by ``until`` (the loop's clock), else None.

        A camera that sends a keyframe every interval sends it at a fixed phase of our
        ticks; where that phase is near a tick, arrival jitter puts every other keyframe
        just after its tick, to be dropped as ``no_new_frame``. Likely what a run of 20
        cameras of 1080p met before this wait: 73% judged, the rest ``no_new_frame``,
        while capture alone got every keyframe of the same stream.
        """
        loop = asyncio.get_running_loop()
        while loop.time() < until and not stop.is_set():
            await asyncio.sleep(GRACE_POLL_S)
            latest = self.reader.latest()
            if latest is not None and latest.seq != seq:
                return latest
        return None

    def newest(self, sample: Sample) -> Sample:
        """The sample with the newest frame, if a newer one has arrived since it was taken."""
        latest = self.reader.latest()
        if latest is None or latest.taken <= sample.captured:
            return sample
        return self._sample(sample.index, latest)

    def _sample(self, index: int, latest: Latest) -> Sample:
        """The frame as a sample; its offset is seconds since the stream first delivered."""
        base = self.reader.connected_at or latest.taken
        return Sample(index, round(latest.taken - base, 3), latest.wall, latest.frame, latest.taken,
                      latest.full, latest.lag)


# How long past its tick a sample waits for a new frame, as a share of the interval, and
# how often it looks meanwhile (the frame is in another process's slot: there is no event).
GRACE = 0.25
GRACE_POLL_S = 0.02


def first_tick(now: float, interval: float) -> float:
    """A camera's first sample time: on a grid of its interval that every camera shares.

    Cameras that sample in the same instant cost less than the same cameras spread
    over the second (20 cameras, each way in one run: 3.0 against 3.9 ms of the
    daemon's CPU a sample), likely as the preprocessing threads and the event loop
    stay awake and warm through a burst instead of waking for each sample. Cameras
    started together line up by themselves; the grid keeps one started later (by a
    reload that adds or changes it) in step with the rest.
    """
    return math.ceil(now / interval) * interval


class Availability:
    """Turns a stream's raw up/down flaps into stream_down / stream_up events. Pure.

    ``stream_down`` is raised only once the stream has been down for
    ``holdoff`` seconds, and ``stream_up`` only after a ``stream_down``, so a
    camera that blips for a second, or flaps, does not flood the sinks.
    """

    def __init__(self, holdoff: float) -> None:
        self.holdoff = holdoff
        self.up: bool | None = None
        self._down_since: float | None = None
        self._announced_down = False

    def update(self, up: bool, now: float) -> str | None:
        self.up = up
        if up:
            self._down_since = None
            if self._announced_down:
                self._announced_down = False
                return "stream_up"
            return None
        if self._down_since is None:
            self._down_since = now
        return self.poll(now)

    def poll(self, now: float) -> str | None:
        if (self.up is False and not self._announced_down and self._down_since is not None
                and now - self._down_since >= self.holdoff):
            self._announced_down = True
            return "stream_down"
        return None

    def due(self) -> float | None:
        """When ``stream_down`` falls due, while one is pending; None otherwise."""
        if self.up is False and not self._announced_down and self._down_since is not None:
            return self._down_since + self.holdoff
        return None
