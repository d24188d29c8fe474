"""Handlers on real workers: a message delivered again (its worker was killed mid-task, or the same message
came back) changes and publishes nothing twice; the ai service through a ZeroMQ inference service."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import orjson
import pytest
import redis
import zmq

from meetingtasks import PermanentError, dispatch
from meetingtasks.operations.embedded import free_port
from meetingtasks.services.ai.backends import InferenceUnavailable, LocalBackend, ZmqBackend
from meetingtasks.services.ai.clips import clip
from meetingtasks.services.ai.server import InferenceServer
from meetingtasks.services.blobs import BlobStore
from meetingtasks.services.settings import meeting_settings
from meetingtasks.store.platform import Platform, configure
from meetingtasks.store.status import Status
from tests.services.conftest import Published, Run
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: every test runs worker subprocesses through kills, redeliveries or timeouts.
pytestmark = pytest.mark.slow

ANN = {"username": "ann", "email": "ann@example.org", "password": "correct horse"}


def status_of(platform: Platform, r: redis.Redis, task_id: str) -> Status | None:
    record = platform.status.get(r, task_id)
    return None if record is None else record.status


def starts(platform: Platform, r: redis.Redis, task_id: str) -> int:
    record = platform.status.get(r, task_id)
    return 0 if record is None else sum(1 for s, _, _ in record.history if s is Status.STARTED)


def test_the_same_message_delivered_again_registers_once(platform: Platform, r: redis.Redis, published: Published,
                                                         start_worker: Callable[..., WorkerProcess]) -> None:
    # given a registration that a user worker ran to the end
    handle = dispatch("user_register", ANN)
    message = r.lindex("user.normal", 0)
    assert message is not None
    start_worker("user")
    first = handle.wait(30)

    # when the very same message comes back while its status still says STARTED (its worker died before
    # recording the end, as after a crash), and the worker runs it again
    platform.status.transition(r, handle.id, Status.STARTED, attempt=1, force=True)
    r.lpush("user.normal", message)
    wait_for(lambda: starts(platform, r, handle.id) == 3 and status_of(platform, r, handle.id) is Status.SUCCEEDED,
             30, message="the second run to finish")

    # then it succeeded with the same user, not "name taken", and registered and announced once
    assert handle.wait(5) == first
    assert len(r.keys(platform.keys.user("*"))) == 1
    assert len(published("user_events", "user.registered")) == 1


def test_a_worker_killed_mid_recognition_is_redelivered_and_publishes_once(
        platform: Platform, r: redis.Redis, published: Published, start_worker: Callable[..., WorkerProcess]) -> None:
    # given an ai worker transcribing a clip
    ref = BlobStore(platform).put(clip("results.wav").read(), content_type="audio/wav")
    doomed = start_worker("ai")
    handle = dispatch("speech_recognition", {"audio_ref": ref, "meeting_id": "m1"})
    wait_for(lambda: status_of(platform, r, handle.id) is Status.STARTED, 30, message="the recognition to start")

    # when that worker is killed mid-task and another one takes over
    doomed.kill()
    assert status_of(platform, r, handle.id) is Status.STARTED, "finished before the kill: nothing was tested"
    start_worker("ai")
    result = handle.wait(90)

    # then the task ran twice (redelivered after the visibility timeout) but announced its transcript once
    assert starts(platform, r, handle.id) >= 2
    assert "happy" in result["text"]
    assert [e["task_id"] for e in published.payloads("ai_events", "speech_recognition.completed")] == [handle.id]


# --- the ZeroMQ inference service ---------------------------------------------------------------------------
@pytest.fixture
def inference(platform: Platform) -> Iterator[InferenceServer]:
    """The offline models served over ZeroMQ on a free port by this test."""
    server = InferenceServer(LocalBackend(meeting_settings(platform)), f"tcp://127.0.0.1:{free_port()}").start()
    yield server
    server.stop()


class SilentServer:
    """A REP socket that takes requests and never answers (an overloaded inference box)."""

    def __init__(self) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.requests: list[dict[str, object]] = []
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        # ROUTER instead of REP: it can take many requests without answering any.
        sock = self.context.socket(zmq.ROUTER)
        sock.bind(self.endpoint)
        while not self.stop.is_set():
            if sock.poll(50):
                frames = sock.recv_multipart()
                self.requests.append(orjson.loads(frames[2]))
        sock.close(linger=0)


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    server.thread.start()
    yield server
    server.stop.set()
    server.thread.join(5)
    server.context.term()


def test_an_ai_worker_transcribes_through_the_inference_service(
        platform: Platform, r: redis.Redis, inference: InferenceServer, start_worker: Callable[..., WorkerProcess],
        published: Published) -> None:
    # given an ai worker configured for the zmq backend, pointed at the test's inference service
    start_worker("ai", env_overrides={"MEETINGTASKS_AI_BACKEND": "zmq",
                                      "MEETINGTASKS_AI_ZMQ_ENDPOINT": inference.endpoint})
    ref = BlobStore(platform).put(clip("greeting.wav").read(), content_type="audio/wav")

    # when a clip is submitted for recognition, then the service did the work and the task has its transcript
    result = dispatch("speech_recognition", {"audio_ref": ref}).wait(60)
    assert result["text"].startswith("good morning everyone") and result["engine"] == "pocketsphinx"
    assert inference.requests == 1
    emotion = dispatch("emotion_detection", {"text": result["text"]}).wait(60)
    assert emotion["label"] == "happy" and inference.requests == 2


def test_a_silent_inference_service_is_retried_then_dead_lettered(
        platform: Platform, r: redis.Redis, silent: SilentServer, start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker("ai", env_overrides={"MEETINGTASKS_AI_BACKEND": "zmq", "MEETINGTASKS_AI_ZMQ_ENDPOINT": silent.endpoint,
                                      "MEETINGTASKS_AI_ZMQ_TIMEOUT_S": "0.5", "MEETINGTASKS_MAX_RETRIES": "1"})

    handle = dispatch("emotion_detection", {"text": "hello"})
    wait_for(lambda: status_of(platform, r, handle.id) is Status.DEAD_LETTERED, 60, message="the dead letter")

    letter = platform.dead_letters.list(r, "ai")[0]
    assert letter.task_id == handle.id and letter.reason == "InferenceUnavailable" and letter.attempts == 2
    assert f"inference service {silent.endpoint} did not answer detect_emotion within 0.5s" in letter.error
    assert [q["op"] for q in silent.requests] == ["detect_emotion", "detect_emotion"]


def test_the_inference_service_refusals_and_timeouts(platform: Platform, inference: InferenceServer, run: Run,
                                                     silent: SilentServer) -> None:
    settings = meeting_settings(platform).model_copy(update={"ai_backend": "zmq",
                                                             "ai_zmq_endpoint": inference.endpoint})
    backend = ZmqBackend(settings)
    # bad input is refused by the service: a domain refusal, not an outage
    with pytest.raises(PermanentError, match=r"inference service refused transcribe: .*could not convert"):
        backend.transcribe(b"not audio at all", "en-US")
    # the handler goes through the configured backend
    configure(platform.settings).use_section(settings)
    ref = BlobStore(platform).put(clip("results.wav").read())
    assert run("emotion_detection", {"audio_ref": ref})["label"] == "happy"
    # no answer in time: InferenceUnavailable naming the endpoint and the wait
    quiet = ZmqBackend(settings.model_copy(update={"ai_zmq_endpoint": silent.endpoint, "ai_zmq_timeout_s": 0.3}))
    with pytest.raises(InferenceUnavailable, match=r"did not answer transcribe within 0.3s"):
        quiet.transcribe(b"x", "en-US")
