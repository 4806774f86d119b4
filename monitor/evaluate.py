"""``vlm-monitor eval SUITE.yaml --config FILE``: try a target on labelled recordings before
trusting it on a camera.

The suite lists recordings, each with a target and the seconds where the
target is truly there. Each *variant* (the config as it is, and changes to
it: another description, zones off, a second look) replays every recording
through the daemon itself (the same pipeline, detectors, zones, second look
and gate, against the config's model server, with a state directory of its
own), and its alerts are scored: right (first seen inside a labelled span),
wrong (outside every span), missed (a span with no right alert), with the
seconds from the span's start to the alert, and the model calls and tokens
per camera-hour. Exit 0 when the first variant meets every expectation.

Suite format (YAML)::

    cases:
      - video: clips/yard-night.mp4        # relative to the suite's folder
        target: {name: intruder, description: a person, zones: [gate]}
        present: [[5, 12]]                 # seconds where it truly is; [] for never
        zones: [{name: gate, polygon: [[0.1, 0.5], [0.4, 0.5], [0.4, 1], [0.1, 1]]}]
    variants:                              # optional; the first is what the exit code judges
      - {name: as configured}
      - {name: second look, verify: true}
      - {name: no zones, zones: false}
      - {name: other words, description: a man in a red top}
      - {name: all hours, schedule: false}
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator

from monitor import logs
from monitor.alerts.outbox import Outbox
from monitor.app import Daemon
from monitor.config import Config, ConfigError, Target, ZoneConfig, parse_document
from monitor.config.base import Model
from monitor.metrics import Metrics

TOLERANCE_S = 1.0  # an alert this close to a span (one sample) still counts for it


class EvalError(Exception):
    """The suite could not be replayed; one line for the user."""


class Case(Model):
    video: str
    target: Target
    present: list[tuple[float, float]] = Field(default_factory=list)
    zones: list[ZoneConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _spans(self) -> Case:
        for start, end in self.present:
            if not 0 <= start < end:
                raise ValueError(f"present span [{start:g}, {end:g}] must have 0 <= start < end")
        return self


class Variant(Model):
    name: str = Field(min_length=1, max_length=60)
    description: str | None = None  # the target in other words
    verify: bool | None = None
    zones: bool = True  # false: ignore the targets' zones
    schedule: bool = True  # false: ignore the targets' schedules


class Suite(Model):
    cases: list[Case] = Field(min_length=1, max_length=200)
    variants: list[Variant] = Field(default_factory=lambda: [Variant(name="as configured")])


@dataclass
class Score:
    right: int = 0
    wrong: int = 0
    missed: int = 0
    delays: list[float] = field(default_factory=list)  # seconds from a span's start to its alert

    def add(self, other: Score) -> None:
        self.right += other.right
        self.wrong += other.wrong
        self.missed += other.missed
        self.delays += other.delays

    @property
    def holds(self) -> bool:
        return self.wrong == 0 and self.missed == 0


def score(alerts: list[float], spans: list[tuple[float, float]], delay: float) -> Score:
    """Alerts (first-seen offsets) against the labelled spans; ``delay``: from first seen to the
    alert (the rest of the streak). Pure."""
    s = Score()
    hit: set[int] = set()
    for t in sorted(alerts):
        span = next((i for i, (a, b) in enumerate(spans) if a - TOLERANCE_S <= t <= b + TOLERANCE_S), None)
        if span is None:
            s.wrong += 1
        elif span in hit:
            s.right += 1  # another episode inside the same span: not wrong
        else:
            hit.add(span)
            s.right += 1
            s.delays.append(max(0.0, t - spans[span][0]) + delay)
    s.missed = len(spans) - len(hit)
    return s


@dataclass
class Result:
    variant: str
    score: Score
    per_case: list[Score]
    calls: float
    tokens: float
    seconds: float  # of video replayed
    verify_seconds: float  # model time the second looks added


def load_suite(path: Path) -> Suite:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {type(e).__name__}") from None
    suite, loc = parse_document(text, Suite, str(path))
    for i, case in enumerate(suite.cases):
        video = Path(case.video).expanduser()
        if not video.is_absolute():
            video = path.parent / video
        if not video.is_file():
            raise loc.error(("cases", i, "video"), f"no such file: {video}")
        names = {z.name for z in case.zones}
        unknown = [z for z in case.target.zones if z not in names]
        if unknown:
            raise loc.error(("cases", i, "target"), f"unknown zone {unknown[0]!r}")
        suite.cases[i] = case.model_copy(update={"video": str(video)})
    return suite


def variant_config(base: Config, suite: Suite, variant: Variant, state: Path) -> Config:
    """The config that replays every case under this variant: one file stream per case."""
    streams = []
    for i, case in enumerate(suite.cases):
        target = case.target
        update: dict[str, Any] = {}
        if variant.description is not None:
            update["description"] = variant.description
        if variant.verify is not None:
            update["verify"] = variant.verify
        if not variant.zones:
            update["zones"] = []
        if not variant.schedule:
            update["schedule"] = []
        target = target.model_copy(update=update)
        streams.append({"name": f"case{i}", "url": SecretStr(case.video), "targets": [target],
                        "zones": case.zones if variant.zones else []})
    return Config.model_validate({
        **{k: getattr(base, k) for k in ("vlm", "detection", "preprocess", "scene_change", "timezone")},
        "streams": streams, "alerts": [], "server": {"listen": "127.0.0.1:0"},
        "console": {"enabled": False}, "snapshots": {"enabled": False}, "state_dir": state,
        "shutdown_grace_seconds": base.shutdown_grace_seconds})


async def run_variant(base: Config, suite: Suite, variant: Variant) -> Result:
    with tempfile.TemporaryDirectory(prefix="vlm-monitor-eval-") as tmp:
        config = variant_config(base, suite, variant, Path(tmp))
        metrics = Metrics()
        code = await Daemon(config, metrics).run(asyncio.Event())  # returns once the files are done
        if code != 0:
            raise EvalError(f"variant {variant.name!r}: replaying the recordings failed (see the log)")
        outbox = Outbox(Path(tmp) / "outbox.sqlite3")
        try:
            events = outbox.every_event("target_detected")  # a long suite has more than a page
        finally:
            outbox.close()
    by_case: dict[str, list[float]] = {}
    for e in events:
        by_case.setdefault(e.alert.stream, []).append(float(e.alert.fields["first_seen_offset_seconds"]))
    delay = (config.detection.consecutive_matches - 1) * 1.0
    total, per_case = Score(), []
    for i, case in enumerate(suite.cases):
        s = score(by_case.get(f"case{i}", []), case.present, delay)
        per_case.append(s)
        total.add(s)

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(f"vlm_monitor_{name}", labels) or 0.0

    def streams(name: str) -> float:
        return sum(value(name, stream=f"case{i}") for i in range(len(suite.cases)))

    calls = streams("frames_analysed_total") + sum(value("verifications_total", result=r)
                                                   for r in ("confirmed", "refused", "error"))
    tokens = value("vlm_tokens_total", kind="prompt") + value("vlm_tokens_total", kind="completion")
    return Result(variant.name, total, per_case, calls, tokens, streams("sampling_intervals_total"),
                  value("verification_duration_seconds_sum"))


def report(results: list[Result], suite: Suite) -> str:
    lines = ["| variant | right | wrong | missed | seconds to alert (mean) | model calls per camera-hour "
             "| tokens per camera-hour |", "|---|---|---|---|---|---|---|"]
    for r in results:
        hours = max(r.seconds, 1.0) / 3600
        mean = f"{sum(r.score.delays) / len(r.score.delays):.1f}" if r.score.delays else "-"
        lines.append(f"| {r.variant} | {r.score.right} | {r.score.wrong} | {r.score.missed} | {mean} "
                     f"| {r.calls / hours:,.0f} | {r.tokens / hours:,.0f} |")
    first = results[0]
    for case, s in zip(suite.cases, first.per_case, strict=True):
        if not s.holds:
            lines.append(f"{first.variant}: {Path(case.video).name} ({case.target.name}): "
                         f"{s.wrong} wrong, {s.missed} missed")
    return "\n".join(lines)


async def evaluate(base: Config, suite: Suite) -> list[Result]:
    logs.get("monitor.eval").info("evaluating", cases=len(suite.cases), variants=len(suite.variants))
    return [await run_variant(base, suite, v) for v in suite.variants]
