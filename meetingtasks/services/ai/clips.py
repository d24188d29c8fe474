"""The spoken clips shipped with the ai service (``data/``): for the demo and for measuring speech
recognition (word error rate against the text that was spoken)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Clip:
    name: str
    text: str
    voice: str

    def read(self) -> bytes:
        return resources.files("meetingtasks.services.ai").joinpath("data", self.name).read_bytes()


def clips() -> list[Clip]:
    manifest = json.loads(resources.files("meetingtasks.services.ai").joinpath("data", "clips.json").read_text())
    return [Clip(c["file"], c["text"], c["voice"]) for c in manifest["clips"]]


def clip(name: str) -> Clip:
    for item in clips():
        if item.name == name:
            return item
    raise KeyError(f"no shipped clip {name!r}; clips: {', '.join(c.name for c in clips())}")


def word_errors(reference: str, hypothesis: str) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    ref, hyp = reference.lower().split(), hypothesis.lower().split()
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        diagonal, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            current = min(row[j] + 1, row[j - 1] + 1, diagonal + (ref[i - 1] != hyp[j - 1]))
            diagonal, row[j] = row[j], current
    return row[len(hyp)]


def word_error_rate(reference: str, hypothesis: str) -> float:
    return word_errors(reference, hypothesis) / max(1, len(reference.split()))
