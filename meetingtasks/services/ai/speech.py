"""Offline speech recognition with PocketSphinx 5 and the US English model that ships inside its wheel
(``pip install 'meetingtasks[ai]'``: no download at run time).

Accuracy is modest (a small continuous-density HMM model from 2015): on clean human speech expect a word
error rate of 10-30 %; on synthetic voices it varies a lot from voice to voice. The test suite measures it
on the shipped clips (``data/clips.json``) and reports the figure.
"""

from __future__ import annotations

import threading
from typing import Any

from meetingtasks.core.errors import PermanentError
from meetingtasks.services.ai.audio import SPEECH_RATE_HZ, Audio

#: Languages the bundled model understands.
LANGUAGES = ("en-US", "en")
_FILLERS = {"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]"}


class UnsupportedLanguage(PermanentError, ValueError):
    """No model for the requested language."""


class SpeechRecognizer:
    """One PocketSphinx decoder (about 0.3 s to load), shared by the threads of a process behind a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decoder: Any = None

    def _get(self) -> Any:
        if self._decoder is None:
            from pocketsphinx import Decoder

            self._decoder = Decoder(samprate=SPEECH_RATE_HZ, loglevel="FATAL")
        return self._decoder

    def transcribe(self, audio: Audio, language: str = "en-US") -> dict[str, Any]:
        if language not in LANGUAGES and language.split("-")[0] != "en":
            raise UnsupportedLanguage(f"no speech model for language {language!r}; available: {', '.join(LANGUAGES)}")
        pcm = audio.resampled(SPEECH_RATE_HZ).pcm16()
        with self._lock:
            decoder = self._get()
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
            frame_rate = decoder.config["frate"]
            words = [{"word": seg.word.split("(")[0], "start_s": seg.start_frame / frame_rate,
                      "end_s": (seg.end_frame + 1) / frame_rate}
                     for seg in decoder.seg() if seg.word not in _FILLERS]
        text = hyp.hypstr if hyp is not None else ""
        return {"text": text, "words": words, "duration_s": round(audio.duration_s, 3), "language": language,
                "engine": "pocketsphinx"}
