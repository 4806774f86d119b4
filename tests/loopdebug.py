"""``pytest --slow-callbacks FILE``: every event loop in asyncio's debug mode, slow callbacks listed.

A callback (a task's step) that holds the loop for 50 ms or more stalls every
camera's sampling, the model's answers and the console; file I/O and CPU work
belong in a worker thread. This runs the whole suite with debug mode on
(``PYTHONASYNCIODEBUG``, so the daemons the tests start as processes have it
too, at asyncio's own 100 ms), and writes each slow callback asyncio reports in
this process, with the test it happened in, to FILE. On a loaded 2-core
machine a callback can also be slow because the process was not scheduled:
read the list for what the callback did, not for its count.
"""

from __future__ import annotations

import asyncio.base_events
import logging
import os
from pathlib import Path

import pytest

THRESHOLD = 0.05


class _Slow(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.test = "(collection)"
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing"):
            self.found.append(f"{self.test}\n    {message}")


_handler = _Slow()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow-callbacks", metavar="FILE", default=None,
                     help="run every event loop in asyncio's debug mode and list the callbacks "
                          f"that held it for {THRESHOLD * 1000:.0f} ms or more in FILE")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--slow-callbacks"):
        config.option.asyncio_debug = True  # pytest-asyncio's loops
        os.environ["PYTHONASYNCIODEBUG"] = "1"  # every other loop, and the processes the tests start
        logging.getLogger("asyncio").addHandler(_handler)
        base = asyncio.base_events.BaseEventLoop
        init = base.__init__

        def debug_init(self: asyncio.base_events.BaseEventLoop) -> None:
            init(self)
            self.slow_callback_duration = THRESHOLD

        base.__init__ = debug_init  # type: ignore[method-assign]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _handler.test = item.nodeid


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    path = config.getoption("--slow-callbacks")
    if path:
        Path(path).write_text("".join(f"{line}\n" for line in _handler.found))
        terminalreporter.write_line(f"slow callbacks (>= {THRESHOLD * 1000:.0f} ms): "
                                    f"{len(_handler.found)}, listed in {path}")
