"""Structured logging: JSON lines off a TTY, readable columns on one.

Every stream's task binds ``stream=`` in a contextvar, so each line it logs
carries the stream's name without passing a logger around.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, Literal, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure(level: str = "info", fmt: Literal["auto", "json", "console"] = "auto",
              stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=out.isatty())
                     if fmt == "console" else structlog.processors.JSONRenderer())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    # Libraries log through the standard library (aiohttp's "Error handling request" with
    # a traceback): render them the same way, one JSON line each off a TTY.
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[*shared[:-1], structlog.stdlib.ExtraAdder(), shared[-1]]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.WARNING))  # their info lines are noise here
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name)


class Repeats:
    """Decides which of a run of same-kind failures to log: the first, then one a minute
    with how many were left out, so a failure that repeats every second is not a line a
    second. Pure: the caller passes the time."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def check(self, kind: str, now: float) -> int | None:
        """None: leave this one out. Else log it, saying how many were left out since the last."""
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._left_out.pop(kind, 0)

    def left_out(self) -> int:
        return sum(self._left_out.values())


class LoopErrors:
    """The event loop's own error reports, each kind logged at most once a minute.

    Out of file descriptors, asyncio reports a failed accept() for every listening
    socket and retry, and aiohttp one per connection it could not make: 200,000
    tracebacks a minute in one test. Set with ``loop.set_exception_handler``.
    """

    def __init__(self) -> None:
        self._repeats = Repeats()
        self._log = get("monitor.loop")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "event loop error")[:80]
        left_out = self._repeats.check(message, time.monotonic())
        if left_out is None:
            return
        exc = context.get("exception")
        self._log.error(message, error=f"{type(exc).__name__}: {exc}" if exc else None,
                        left_out=left_out, exc_info=exc if isinstance(exc, BaseException) else None)

