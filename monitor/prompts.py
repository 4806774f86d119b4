"""Every word the model reads, in one place. Pure functions.

A target's own text (its description, else its name) comes from the config;
what is built around it is here: the instruction that asks for a JSON verdict
per target, the stricter question of a second look, and a target's earlier
false alarms. The false alarms are people's words (a lesson typed in the
console) or the model's own (a description, and so the scene's): they are
folded to one short quoted line each, never free text.
"""

from __future__ import annotations

from collections.abc import Sequence

LESSONS_MAX = 3  # earlier false alarms told to the model per target
LESSON_CHARS = 120  # each, cut
LESSONS_CHARS = 360  # all of them: ~90 tokens at most

# The fixed instruction comes first and the target last, so vLLM's prefix cache
# can reuse the instruction's token blocks across requests.
_ONE = (
    "You are watching a security camera frame. Decide whether the target described "
    "below is visible in the image. Reply with a JSON object with the keys "
    '"present" (true or false), "confidence" (an integer from 1 to 10: how sure you '
    'are of your answer), "description" (one short sentence: if present, what it '
    "looks like and where it is in the frame; if not, what the frame shows instead) and, "
    'only if present, "box" ([x1, y1, x2, y2]: its bounding box in pixels of this image).'
)

_MANY = (
    "You are watching a security camera frame. For each target listed below, decide whether "
    'it is visible in the image. Reply with a JSON object {"answers": [...]} holding one '
    "object per target, in the order listed, each with the keys "
    '"present" (true or false), "confidence" (an integer from 1 to 10: how sure you are of '
    'that answer), "description" (one short sentence: if present, what it looks like and '
    "where it is in the frame; if not, what is there instead) and, only if present, "
    '"box" ([x1, y1, x2, y2]: its bounding box in pixels of this image).'
)


def build_prompt(targets: Sequence[str]) -> str:
    """One image, one question per target: the image's tokens are paid for once."""
    if len(targets) == 1:
        return f"{_ONE}\n\nTarget: {targets[0]}"
    listed = "\n".join(f"{i}. {t}" for i, t in enumerate(targets, 1))
    return f"{_MANY}\n\nTargets:\n{listed}"


def strict(target: str) -> str:
    """The second look's question: the same target, asked to be certain of it."""
    return (f"{target}. Look closely: answer present only if you are certain that this "
            f"is really it, and not a picture, a poster, a screen, a reflection or something alike")


def counter_examples(descriptions: Sequence[str]) -> str:
    """``(earlier false alarms, not this target: "a red poster on the wall"; "a red car")``:
    newest first, bounded in count and length, on one line."""
    kept: list[str] = []
    total = 0
    for d in descriptions:
        text = " ".join(d.split()).replace('"', "'")
        if not text or text in kept:
            continue
        text = text[:LESSON_CHARS]
        if len(kept) >= LESSONS_MAX or total + len(text) > LESSONS_CHARS:
            break
        kept.append(text)
        total += len(text)
    if not kept:
        return ""
    return "(earlier false alarms, not this target: " + "; ".join(f'"{k}"' for k in kept) + ")"


def with_lessons(target: str, descriptions: Sequence[str]) -> str:
    """The target as the model reads it, with a few of its earlier false alarms, if any."""
    lessons = counter_examples(descriptions)
    return f"{target} {lessons}" if lessons else target
