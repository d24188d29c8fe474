"""Pluggable AI backends: what the four ai task types call to do the actual inference.

``MeetingSettings.ai_backend`` picks one by name (``MEETINGTASKS_AI_BACKEND``):

=======  ============================================================================================
local    offline models in this process: PocketSphinx (speech, model inside its wheel), VADER (emotion),
         spectral gating in numpy/scipy (denoise), ffmpeg filters (video); ``meetingtasks[ai]``
zmq      forwards each request to an external inference service over ZeroMQ request/reply
         (``ai_zmq_endpoint``, e.g. ``tcp://edge-inference:5557``), waiting ``ai_zmq_timeout_s`` at most
=======  ============================================================================================

The ZeroMQ wire format (one multipart request, one multipart reply)::

    request:  [header JSON, payload bytes]    header: {"op": OP, "id": REQUEST_ID, "args": {...}}
    reply:    [header JSON, payload bytes]    header: {"ok": true, "result": {...}}
                                              or      {"ok": false, "error": "one line", "permanent": bool}

with ``OP`` one of ``transcribe`` (payload: audio file; args: ``language``), ``detect_emotion`` (args:
``text``), ``denoise`` (payload: audio file; reply payload: 16-bit WAV), ``enhance_video`` (payload: video;
reply payload: MP4). The payload frame is empty when an op has none. A reply with ``permanent: true`` is
a refusal (bad input: the task fails at once); anything else that goes wrong (no reply within the
timeout, ``ok: false`` without ``permanent``) raises :class:`InferenceUnavailable`, which the platform
retries and finally dead-letters. :class:`~meetingtasks.services.ai.server.InferenceServer` serves any
backend with this protocol.
"""

from __future__ import annotations

import difflib
import threading
from typing import Any, Protocol

import orjson

from meetingtasks.core.errors import ConfigurationError, MeetingTasksError, PermanentError
from meetingtasks.core.message import new_id
from meetingtasks.services.settings import MeetingSettings

OPS = ("transcribe", "detect_emotion", "denoise", "enhance_video")


class InferenceUnavailable(MeetingTasksError):
    """The inference service did not answer in time or failed on its side; the task is retried."""


class AIBackend(Protocol):
    name: str

    def transcribe(self, audio: bytes, language: str) -> dict[str, Any]:
        """``{"text", "words", "duration_s", "language", ...}`` of an audio file (WAV or anything ffmpeg reads)."""
        ...

    def detect_emotion(self, text: str) -> dict[str, Any]:
        """``{"label", "compound", "scores", ...}`` of a transcript."""
        ...

    def denoise(self, audio: bytes) -> tuple[bytes, dict[str, Any]]:
        """The cleaned audio as 16-bit WAV, and figures about it."""
        ...

    def enhance_video(self, video: bytes) -> tuple[bytes, dict[str, Any]]:
        """The enhanced video as MP4, and figures about it."""
        ...


class LocalBackend:
    """The offline models, in this process. Each method imports its model's module (numpy, scipy, the model
    weights) when first called: a worker using the zmq backend, and every process that only dispatches, never
    loads them."""

    name = "local"

    def __init__(self, settings: MeetingSettings) -> None:
        from meetingtasks.services.ai.speech import SpeechRecognizer

        self.settings = settings
        self.recognizer = SpeechRecognizer()

    def transcribe(self, audio: bytes, language: str) -> dict[str, Any]:
        from meetingtasks.services.ai.audio import decode_audio

        return self.recognizer.transcribe(decode_audio(audio, self.settings), language)

    def detect_emotion(self, text: str) -> dict[str, Any]:
        from meetingtasks.services.ai.emotion import detect_emotion

        return detect_emotion(text)

    def denoise(self, audio: bytes) -> tuple[bytes, dict[str, Any]]:
        from meetingtasks.services.ai.audio import decode_audio
        from meetingtasks.services.ai.denoise import spectral_gate

        cleaned, figures = spectral_gate(decode_audio(audio, self.settings))
        return cleaned.wav(), figures

    def enhance_video(self, video: bytes) -> tuple[bytes, dict[str, Any]]:
        from meetingtasks.services.ai.video import enhance_video

        return enhance_video(video, self.settings)


class ZmqBackend:
    """Forwards every request to an inference service (ZeroMQ REQ; a fresh socket per request, so a
    timed-out request never leaves a socket stuck waiting for its reply)."""

    name = "zmq"

    def __init__(self, settings: MeetingSettings) -> None:
        if not settings.ai_zmq_endpoint:
            raise ConfigurationError("MEETINGTASKS_AI_ZMQ_ENDPOINT: the zmq AI backend needs the inference "
                                     "service's endpoint, e.g. tcp://127.0.0.1:5557")
        self.endpoint = settings.ai_zmq_endpoint
        self.timeout_s = settings.ai_zmq_timeout_s

    def call(self, op: str, args: dict[str, Any], payload: bytes = b"") -> tuple[dict[str, Any], bytes]:
        """One request/reply; the reply's result and payload."""
        import zmq

        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = context.socket(zmq.REQ)
        timeout_ms = int(self.timeout_s * 1000)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
        sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        try:
            sock.connect(self.endpoint)
            sock.send_multipart([orjson.dumps({"op": op, "id": new_id(), "args": args}), payload])
            frames = sock.recv_multipart()
        except zmq.Again:
            raise InferenceUnavailable(
                f"inference service {self.endpoint} did not answer {op} within {self.timeout_s:g}s "
                "(ai_zmq_timeout_s)") from None
        except zmq.ZMQError as exc:
            raise InferenceUnavailable(f"inference service {self.endpoint}: {exc}") from None
        finally:
            sock.close()
        try:
            header = orjson.loads(frames[0])
        except (orjson.JSONDecodeError, IndexError):
            raise InferenceUnavailable(f"inference service {self.endpoint} sent a reply that is not JSON") from None
        if not isinstance(header, dict):
            raise InferenceUnavailable(f"inference service {self.endpoint} sent a reply that is not an object")
        if not header.get("ok"):
            error = str(header.get("error") or "no error given")
            if header.get("permanent"):
                raise PermanentError(f"inference service refused {op}: {error}")
            raise InferenceUnavailable(f"inference service {self.endpoint} failed {op}: {error}")
        result = header.get("result")
        return (result if isinstance(result, dict) else {}), (frames[1] if len(frames) > 1 else b"")

    def transcribe(self, audio: bytes, language: str) -> dict[str, Any]:
        return self.call("transcribe", {"language": language}, audio)[0]

    def detect_emotion(self, text: str) -> dict[str, Any]:
        return self.call("detect_emotion", {"text": text})[0]

    def denoise(self, audio: bytes) -> tuple[bytes, dict[str, Any]]:
        result, data = self.call("denoise", {}, audio)
        return data, result

    def enhance_video(self, video: bytes) -> tuple[bytes, dict[str, Any]]:
        result, data = self.call("enhance_video", {}, video)
        return data, result


#: name -> backend class (a "did you mean" error for anything else).
BACKENDS: dict[str, type[LocalBackend] | type[ZmqBackend]] = {"local": LocalBackend, "zmq": ZmqBackend}
_lock = threading.Lock()
_instances: dict[tuple[str, str | None, float, str | None], AIBackend] = {}


def backend_for(settings: MeetingSettings) -> AIBackend:
    """The configured backend, built once per process and configuration (models load once)."""
    name = settings.ai_backend
    key = (name, settings.ai_zmq_endpoint, settings.ai_zmq_timeout_s, settings.ffmpeg_path)
    with _lock:
        backend = _instances.get(key)
        if backend is None:
            if name not in BACKENDS:
                close = difflib.get_close_matches(name, list(BACKENDS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigurationError(f"MEETINGTASKS_AI_BACKEND={name!r} is not a backend{hint}; "
                                         f"backends: {', '.join(BACKENDS)}")
            backend = _instances[key] = BACKENDS[name](settings)
        return backend

