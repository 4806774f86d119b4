"""Names as other systems take them: MQTT topic levels, Home Assistant object ids. Pure.

Both are lossy (case, punctuation, letters outside ASCII), so two names can come
out the same: ``collisions`` finds such pairs, and the config refuses them where
they would share a topic or an entity.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Sequence


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def topic_part(name: str) -> str:
    """A name as one topic level: lowercase, no '/', '+', '#' or spaces. A name that is
    mostly not ASCII gets a digest (every Cyrillic name was "_")."""
    out = re.sub(r"[^a-z0-9_.-]+", "_", name.lower()).strip("_")
    if len(out.replace("_", "")) < max(1, len(name) // 3):
        out = (out + "_" if out else "") + _digest(name)
    return out


def object_id(name: str) -> str:
    """A name as a Home Assistant object id: ASCII letters, digits, '_'. Accents are dropped
    (Café → cafe); a name with no Latin letters gets a digest, so it stays unique and stable."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    out = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    if len(out) < max(1, len(name) // 3):  # most of the name was not Latin
        out = (out + "_" if out else "") + _digest(name)
    return out


def collisions(names: Sequence[str], *forms: Callable[[str], str]) -> tuple[str, str] | None:
    """The first two different names that some form turns into the same text, or None."""
    for form in forms:
        seen: dict[str, str] = {}
        for name in names:
            other = seen.setdefault(form(name), name)
            if other != name:
                return other, name
    return None
