"""Audio as the AI models want it: mono float samples at a known rate, read from WAV (or, through ffmpeg,
from anything ffmpeg decodes) and written back as 16-bit PCM WAV."""

from __future__ import annotations

import io
import math
import wave
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

from meetingtasks.core.errors import PermanentError
from meetingtasks.services.ffmpeg import Ffmpeg, UndecodableMedia
from meetingtasks.services.settings import MeetingSettings

SPEECH_RATE_HZ = 16_000


class UndecodableAudio(PermanentError):
    """The audio is neither a PCM WAV file nor anything ffmpeg can decode."""


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32 in [-1, 1], mono
    rate_hz: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate_hz if self.rate_hz else 0.0

    def resampled(self, rate_hz: int) -> Audio:
        if rate_hz == self.rate_hz:
            return self
        g = math.gcd(rate_hz, self.rate_hz)
        out = resample_poly(self.samples, rate_hz // g, self.rate_hz // g).astype(np.float32)
        return Audio(np.clip(out, -1.0, 1.0), rate_hz)

    def pcm16(self) -> bytes:
        pcm: bytes = (np.clip(self.samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        return pcm

    def wav(self) -> bytes:
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.rate_hz)
            w.writeframes(self.pcm16())
        return out.getvalue()


def _read_wav(data: bytes) -> Audio:
    with wave.open(io.BytesIO(data), "rb") as w:
        channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        frames = w.readframes(n)
    if width == 1:
        samples = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        samples = np.frombuffer(frames, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise UndecodableAudio(f"WAV with {8 * width}-bit samples is not supported (use 8, 16 or 32-bit PCM)")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return Audio(samples.astype(np.float32), rate)


def decode_audio(data: bytes, settings: MeetingSettings | None = None, *, what: str = "audio") -> Audio:
    """PCM WAV is read directly; anything else goes through ffmpeg (:mod:`meetingtasks.services.ffmpeg`)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        try:
            return _read_wav(data)
        except (wave.Error, EOFError, ValueError):
            pass  # e.g. a float or compressed WAV: let ffmpeg read it
    if settings is None:
        raise UndecodableAudio(f"{what} is not a PCM WAV file")
    try:
        wav = Ffmpeg(settings).to_wav(data, rate_hz=SPEECH_RATE_HZ, what=what)
    except UndecodableMedia as exc:
        raise UndecodableAudio(str(exc)) from None
    return _read_wav(wav)
