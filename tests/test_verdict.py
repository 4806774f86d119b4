from __future__ import annotations

import pytest

from monitor.prompts import build_prompt
from monitor.verdict import AnswerError, Verdict, parse_answer, parse_answers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"present": true, "confidence": 9, "description": "a man in red"}', Verdict(True, 9, "a man in red")),
        ('{"present": false, "confidence": 8, "description": "empty"}', Verdict(False, 8, "empty")),
        ('```json\n{"present": true, "confidence": "7", "description": "x"}\n```', Verdict(True, 7, "x")),
        ('Sure! {"answer": "YES", "confidence": 8.0, "description": "y"} Hope it helps', Verdict(True, 8, "y")),
        ("Answer: YES\nDescription: a person in a red shirt by the door\nConfidence: 9",
         Verdict(True, 9, "a person in a red shirt by the door")),
        ("**Answer:** NO\n**Description:** a parked car\n**Confidence:** 6/10", Verdict(False, 6, "a parked car")),
        ("1. Answer: [YES]\n2. Confidence: 10\n", Verdict(True, 10, "")),
    ],
)
def test_parse_answer(text: str, expected: Verdict) -> None:
    assert parse_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        None, "", "   ", "I can only describe cats.",
        '{"present": true}',  # no confidence: the seed assumed 10; we refuse to guess
        '{"present": "maybe", "confidence": 5, "description": ""}',
        '{"present": true, "confidence": 11, "description": ""}',
        '{"present": true, "confidence": 0, "description": ""}',
        '{"present": true, "confidence": true, "description": ""}',
        "Answer: YES\nDescription: a person",
        "Answer: perhaps\nConfidence: 8",
        "[1, 2, 3]",
    ],
)
def test_parse_answer_refuses_what_was_not_asked_for(text: str | None) -> None:
    with pytest.raises(AnswerError):
        parse_answer(text)


def test_match_needs_presence_and_confidence() -> None:
    assert Verdict(True, 7, "").is_match(7)
    assert not Verdict(True, 6, "").is_match(7)
    assert not Verdict(False, 10, "").is_match(7)


def test_prompt_puts_the_fixed_instructions_first() -> None:
    a, b = build_prompt(["a red car"]), build_prompt(["a dog"])
    prefix = len(a) - len("a red car")
    assert a[:prefix] == b[:prefix] and a.endswith("Target: a red car")


def test_several_targets_answer_in_order() -> None:
    text = '{"answers": [{"present": true, "confidence": 9, "description": "red"}, ' \
           '{"present": false, "confidence": 8, "description": "no dog"}]}'
    assert parse_answers(text, 2) == [Verdict(True, 9, "red"), Verdict(False, 8, "no dog")]
    fenced = '```json\n[{"present": true, "confidence": 9, "description": "red"}, ' \
             '{"present": false, "confidence": 8, "description": "no dog"}]\n```'
    assert parse_answers(fenced, 2) == parse_answers(text, 2)
    prompt = build_prompt(["a red car", "a dog"])
    assert prompt.endswith("Targets:\n1. a red car\n2. a dog")


def test_several_targets_need_one_answer_each() -> None:
    one = '{"answers": [{"present": true, "confidence": 9, "description": "red"}]}'
    with pytest.raises(AnswerError, match="expected 2 answers"):
        parse_answers(one, 2)
    with pytest.raises(AnswerError):
        parse_answers("Answer: YES\nConfidence: 9", 2)
