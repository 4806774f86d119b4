"""How the model's answer becomes a typed verdict (what we ask is in ``prompts``). Pure functions.

The main path asks for JSON through ``response_format`` (honoured by vLLM
across versions). Servers that ignore it answer in free text, so the parser
also reads the seed's ``Answer: / Description: / Confidence:`` lines, and
JSON wrapped in a Markdown fence. Anything else is an error, never a guess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_DESCRIPTION = 500


class AnswerError(ValueError):
    """The model's answer is not what was asked for."""


Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Verdict:
    present: bool
    confidence: int
    description: str
    box: Box | None = None  # x1, y1, x2, y2 in pixels of the image the model saw, when it gave one

    def is_match(self, min_confidence: int) -> bool:
        return self.present and self.confidence >= min_confidence


ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "present": {"type": "boolean"},
        "confidence": {"type": "integer", "minimum": 1, "maximum": 10},
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
        "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
    },
    "required": ["present", "confidence", "description"],
    "additionalProperties": False,
}

def response_format(n_targets: int) -> dict[str, Any]:
    """The json_schema response format for one target, or for a list of n in one answer."""
    if n_targets == 1:
        return {"type": "json_schema", "json_schema": {"name": "target_verdict", "schema": ANSWER_SCHEMA}}
    schema = {
        "type": "object",
        "properties": {"answers": {"type": "array", "items": ANSWER_SCHEMA,
                                   "minItems": n_targets, "maxItems": n_targets}},
        "required": ["answers"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "target_verdicts", "schema": schema}}

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)
_LINE = re.compile(r"^[\s*#>-]*(?:\d+[.)]\s*)?[*]*([A-Za-z ]+?)\s*[*]*\s*:\s*[*]*\s*(.*?)\s*$")
_CONF = re.compile(r"^\s*(\d{1,2})(?:\.0+)?\s*(?:/\s*10)?\s*$")


def _confidence(value: Any) -> int:
    if isinstance(value, bool):
        raise AnswerError("confidence is not a number")
    if isinstance(value, int | float) and float(value).is_integer():
        n = int(value)
    elif isinstance(value, str) and (m := _CONF.match(value)):
        n = int(m.group(1))
    else:
        raise AnswerError(f"confidence {str(value)[:20]!r} is not an integer from 1 to 10")
    if not 1 <= n <= 10:
        raise AnswerError(f"confidence {n} is outside 1-10")
    return n


def _present(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().strip("[]*.").strip().lower()
        if word in ("yes", "true"):
            return True
        if word in ("no", "false"):
            return False
    raise AnswerError(f"answer {str(value)[:20]!r} is neither yes nor no")


def _from_json(obj: Any) -> Verdict:
    if not isinstance(obj, dict):
        raise AnswerError("JSON answer is not an object")
    keys = {k.lower(): v for k, v in obj.items() if isinstance(k, str)}
    raw_present = keys.get("present", keys.get("answer"))
    if raw_present is None or "confidence" not in keys:
        raise AnswerError("JSON answer lacks 'present' or 'confidence'")
    description = keys.get("description", "")
    present = _present(raw_present)
    return Verdict(present, _confidence(keys["confidence"]), str(description)[:MAX_DESCRIPTION].strip(),
                   _box(keys.get("box", keys.get("bbox_2d"))) if present else None)


def _box(value: Any) -> Box | None:
    """A box as Qwen2.5-VL gives it; anything malformed is no box (never an error)."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list | dict):
        value = value[0]  # [[x1, y1, x2, y2]], or [{"bbox_2d": [...]}]
    if isinstance(value, dict):
        value = value.get("bbox_2d", value.get("box"))
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and v == v for v in value):
        return None
    x1, y1, x2, y2 = (float(v) for v in value)
    if x2 <= x1 or y2 <= y1 or min(x1, y1) < -1:
        return None
    return (x1, y1, x2, y2)


def _from_lines(text: str) -> Verdict:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            fields.setdefault(m.group(1).strip().lower(), m.group(2))
    if "answer" not in fields or "confidence" not in fields:
        raise AnswerError("answer has neither JSON nor 'Answer:' and 'Confidence:' lines")
    return Verdict(_present(fields["answer"]), _confidence(fields["confidence"]),
                   fields.get("description", "")[:MAX_DESCRIPTION].strip())


def parse_answers(text: str | None, n_targets: int) -> list[Verdict]:
    """A verdict per target, in order; AnswerError unless there is exactly one for each."""
    if n_targets == 1:
        return [parse_answer(text)]
    if not text or not text.strip():
        raise AnswerError("empty answer")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        start = min((i for i in (candidate.find("{"), candidate.find("[")) if i != -1), default=-1)
        end = max(candidate.rfind("}"), candidate.rfind("]"))
        if start == -1 or end <= start:
            continue
        try:
            obj = json.loads(candidate[start:end + 1])
        except json.JSONDecodeError:
            continue
        answers = obj.get("answers") if isinstance(obj, dict) else obj
        if not isinstance(answers, list) or len(answers) != n_targets:
            raise AnswerError(f"expected {n_targets} answers, one per target")
        return [_from_json(a) for a in answers]
    raise AnswerError("answer holds no JSON list of verdicts")


def parse_answer(text: str | None) -> Verdict:
    """The model's reply as a verdict; AnswerError when it is not one."""
    if not text or not text.strip():
        raise AnswerError("empty answer")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        start, end = candidate.find("{"), candidate.rfind("}")
        if start != -1 and end > start:
            try:
                obj = json.loads(candidate[start:end + 1])
            except json.JSONDecodeError:
                continue
            return _from_json(obj)
    return _from_lines(text)
