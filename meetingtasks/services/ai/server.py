"""An inference service speaking the ZeroMQ protocol of :mod:`meetingtasks.services.ai.backends`.

It serves any backend (by default the local, offline one), so a GPU box or an edge node can run the models
for many ai workers configured with ``ai_backend=zmq``::

    python -m meetingtasks.services.ai.server --endpoint tcp://0.0.0.0:5557

:class:`InferenceServer` is a small start/stop component (safe to stop twice); requests are answered one
at a time on its thread.
"""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any

import orjson

from meetingtasks.core.errors import PermanentError
from meetingtasks.core.loop import BackgroundThread
from meetingtasks.services.ai.backends import OPS, AIBackend, LocalBackend
from meetingtasks.services.settings import MeetingSettings

log = logging.getLogger(__name__)
POLL_MS = 100


class InferenceServer:
    def __init__(self, backend: AIBackend, endpoint: str) -> None:
        self.backend = backend
        self.endpoint = endpoint
        self.requests = 0
        self._runner = BackgroundThread("inference-server", self._serve, join_timeout_s=10)
        self._stop = self._runner.stopping
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> InferenceServer:
        if not self._runner.start():
            return self
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        self._runner.stop()

    def handle(self, header: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
        """One request; the reply header and payload."""
        op, args = header.get("op"), header.get("args") or {}
        try:
            if op == "transcribe":
                return {"ok": True, "result": self.backend.transcribe(payload, str(args.get("language", "en-US")))}, b""
            if op == "detect_emotion":
                return {"ok": True, "result": self.backend.detect_emotion(str(args.get("text", "")))}, b""
            if op == "denoise":
                data, figures = self.backend.denoise(payload)
                return {"ok": True, "result": figures}, data
            if op == "enhance_video":
                data, figures = self.backend.enhance_video(payload)
                return {"ok": True, "result": figures}, data
            return {"ok": False, "permanent": True, "error": f"unknown op {op!r}; ops: {', '.join(OPS)}"}, b""
        except PermanentError as exc:
            return {"ok": False, "permanent": True, "error": str(exc)}, b""
        except Exception as exc:
            log.exception("inference server: %s failed", op)
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}, b""

    def _serve(self) -> None:
        import zmq

        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = context.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            self._error = exc
            self._ready.set()
            sock.close()
            return
        self._ready.set()
        log.info("inference server: %s serving on %s", getattr(self.backend, "name", "?"), self.endpoint)
        try:
            while not self._stop.is_set():
                if not sock.poll(POLL_MS):
                    continue
                frames = sock.recv_multipart()
                try:
                    header = orjson.loads(frames[0])
                    if not isinstance(header, dict):
                        raise ValueError("header is not an object")
                except ValueError as exc:
                    sock.send_multipart([orjson.dumps({"ok": False, "permanent": True,
                                                       "error": f"bad request header: {exc}"}), b""])
                    continue
                reply, data = self.handle(header, frames[1] if len(frames) > 1 else b"")
                self.requests += 1
                sock.send_multipart([orjson.dumps(reply), data])
        finally:
            sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the offline AI models over ZeroMQ.")
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5557")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = InferenceServer(LocalBackend(MeetingSettings.load()), args.endpoint).start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
