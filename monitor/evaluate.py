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
import re
import shutil
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


def span_of(t: float, spans: list[tuple[float, float]]) -> int | None:
    """The labelled span an alert first seen at ``t`` falls in, give or take a sample. Pure."""
    return next((i for i, (a, b) in enumerate(spans) if a - TOLERANCE_S <= t <= b + TOLERANCE_S), None)


def score(alerts: list[float], spans: list[tuple[float, float]], delay: float) -> Score:
    """Alerts (first-seen offsets) against the labelled spans; ``delay``: from first seen to the
    alert (the rest of the streak). Pure."""
    s = Score()
    hit: set[int] = set()
    for t in sorted(alerts):
        span = span_of(t, spans)
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
    clips: int = 0  # alerts' clips kept


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


def clip_name(variant: str, case: int, video: str, first_seen: float, right: bool) -> str:
    """``second-look-case0-yard-night-5s-wrong.mp4``: a kept clip's file name. Pure."""
    def part(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-")[:60] or "x"
    return (f"{part(variant)}-case{case}-{part(Path(video).stem)}-{first_seen:g}s-"
            f"{'right' if right else 'wrong'}.mp4")


def variant_config(base: Config, suite: Suite, variant: Variant, state: Path, clips: bool = False) -> Config:
    """The config that replays every case under this variant: one file stream per case (its
    alerts' clips cut only when they are to be kept)."""
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
        "clips": base.clips if clips else {"enabled": False},
        "shutdown_grace_seconds": base.shutdown_grace_seconds})


async def run_variant(base: Config, suite: Suite, variant: Variant, clips: Path | None = None) -> Result:
    """Replay the suite under ``variant``; with ``clips``, keep each alert's clip there."""
    with tempfile.TemporaryDirectory(prefix="vlm-monitor-eval-") as tmp:
        config = variant_config(base, suite, variant, Path(tmp), clips is not None)
        metrics = Metrics()
        code = await Daemon(config, metrics).run(asyncio.Event())  # returns once the files are done
        if code != 0:
            raise EvalError(f"variant {variant.name!r}: replaying the recordings failed (see the log)")
        outbox = Outbox(Path(tmp) / "outbox.sqlite3")
        try:
            events = outbox.every_event("target_detected")  # a long suite has more than a page
        finally:
            outbox.close()
        try:
            kept = await asyncio.to_thread(_keep_clips, Path(tmp) / "clips", clips, suite, variant,
                                           events) if clips is not None else 0
        except OSError as err:
            raise EvalError(f"cannot keep the clips in {clips}: {err.strerror or err}") from None
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
                  value("verification_duration_seconds_sum"), kept)


def _keep_clips(written: Path, into: Path, suite: Suite, variant: Variant, events: list[Any]) -> int:
    """Blocking: copy the alerts' clips out of the variant's state directory; how many."""
    kept = 0
    for e in events:
        source = written / f"{e.alert.id}.mp4"
        if not source.is_file():
            continue  # no clip could be cut (said in the log)
        i = int(e.alert.stream.removeprefix("case"))
        case, t = suite.cases[i], float(e.alert.fields["first_seen_offset_seconds"])
        right = span_of(t, case.present) is not None
        shutil.copyfile(source, into / clip_name(variant.name, i, case.video, t, right))
        kept += 1
    return kept


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


async def evaluate(base: Config, suite: Suite, clips: Path | None = None) -> list[Result]:
    logs.get("monitor.eval").info("evaluating", cases=len(suite.cases), variants=len(suite.variants))
    return [await run_variant(base, suite, v, clips) for v in suite.variants]
