"""Emotion from a transcript: VADER sentiment (lexicon and rules, ``vaderSentiment``) mapped to labels.

VADER measures valence, not discrete emotions, so the labels are valence bands of its ``compound`` score
(-1..1): ``happy`` >= 0.5, ``positive`` >= 0.05, ``neutral`` in between, ``negative`` <= -0.05, ``upset``
<= -0.5.
"""

from __future__ import annotations

import functools
from typing import Any

LABELS = ("happy", "positive", "neutral", "negative", "upset")


def label_for(compound: float) -> str:
    """The valence band of a VADER ``compound`` score."""
    if compound >= 0.5:
        return "happy"
    if compound >= 0.05:
        return "positive"
    if compound > -0.05:
        return "neutral"
    if compound > -0.5:
        return "negative"
    return "upset"


@functools.cache
def _analyzer() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def detect_emotion(text: str) -> dict[str, Any]:
    scores = _analyzer().polarity_scores(text)
    compound = float(scores["compound"])
    return {"label": label_for(compound), "compound": compound,
            "scores": {"positive": scores["pos"], "neutral": scores["neu"], "negative": scores["neg"]},
            "engine": "vader"}
