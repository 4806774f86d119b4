"""The streams that run: one ``StreamRunner`` task each, in the daemon's task group.

``Streams`` owns them by name: it starts them, stops them (sampling first,
then ``grace`` seconds for the analysis in flight, then cancellation), and
applies the stream side of a reload. What a reload changes is a pure rule,
``plan_reload``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from monitor.config import Config, StreamSettings
from monitor.stream import Shared, StreamRunner

# Config sections a reload applies; the others need a restart.
RELOADABLE = frozenset({"streams", "detection", "preprocess", "scene_change", "timezone"})


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    added: list[str]
    removed: list[str]
    restarted: list[str]  # their effective settings changed
    fixed: list[str]  # changed sections that only a restart applies
    config: Config  # what runs after the reload


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """What a reload from ``old`` to ``new`` does. Pure."""
    fixed = [k for k in type(old).model_fields if k not in RELOADABLE
             and getattr(old, k) != getattr(new, k)]
    applied = old.model_copy(update={k: getattr(new, k) for k in RELOADABLE})
    before, after = old.stream_settings(), applied.stream_settings()
    return ReloadPlan(
        added=[n for n in after if n not in before],
        removed=[n for n in before if n not in after],
        restarted=[n for n in before if n in after and before[n] != after[n]],
        fixed=fixed, config=applied)


def stream_targets(config: Config) -> list[tuple[str, list[str]]]:
    """Each stream's name and its targets' names, for what shows them (Home Assistant, the board)."""
    return [(s.name, [t.name for t in s.targets]) for s in config.streams]


class Streams:
    def __init__(self, shared: Shared, tasks: asyncio.TaskGroup) -> None:
        self.shared = shared
        self._tasks = tasks
        self._runners: dict[str, StreamRunner] = {}

    def start(self, settings: StreamSettings) -> None:
        runner = StreamRunner(settings, self.shared)
        runner.task = self._tasks.create_task(runner.run(), name=f"stream-{settings.stream.name}")
        self._runners[settings.stream.name] = runner

    def active(self) -> list[asyncio.Task[None]]:
        return [r.task for r in self._runners.values() if r.task is not None and not r.task.done()]

    @property
    def ended(self) -> bool:
        """Every stream has ended (files). A shard with none has not: it waits for a signal."""
        return bool(self._runners) and not self.active()

    async def stop(self, names: list[str] | None, grace: float) -> None:
        """Stop sampling (every stream, with None), give in-flight analysis ``grace`` seconds,
        then cancel it."""
        runners = [self._runners[n] for n in names] if names is not None else list(self._runners.values())
        for r in runners:
            r.stopping.set()
        tasks = [r.task for r in runners if r.task is not None and not r.task.done()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace) if grace > 0 else (set(), set(tasks))
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def apply(self, plan: ReloadPlan, old: Config) -> None:
        """The streams of a reload: the removed and changed ones stopped, what they showed
        forgotten, the changed and new ones started."""
        await self.stop(plan.removed + plan.restarted, old.shutdown_grace_seconds)
        before, after = old.stream_settings(), plan.config.stream_settings()
        for name in plan.removed + plan.restarted:
            del self._runners[name]
            kept = {t.name for t in after[name].stream.targets} if name in after else set()
            self.shared.metrics.forget_stream(name, [t.name for t in before[name].stream.targets
                                                     if t.name not in kept], whole=name in plan.removed)
        targets = stream_targets(plan.config)
        await self.shared.state.streams_changed(targets)
        if self.shared.board is not None:
            self.shared.board.set_streams(targets)
        for name in plan.restarted + plan.added:
            self.start(after[name])

    def failed(self) -> list[str]:
        return [r.cfg.name for r in self._runners.values() if r.failed]

    def unusable(self) -> dict[str, str]:
        """Streams of which the model could judge no sample, with the last error."""
        return {r.cfg.name: r.tally.last_error for r in self._runners.values() if r.tally.model_unusable}
