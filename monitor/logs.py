"""Structured logging: JSON lines off a TTY, readable columns on one.

Every stream's task binds ``stream=`` in a contextvar, so each line it logs
carries the stream's name without passing a logger around.
"""

from __future__ import annotations

import logging
import sys
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
