"""The WebSocket gateway end to end: a real gateway process, real workers, real Redis, real WebSockets."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from meetingtasks.store.platform import Platform
from tests.gateway.conftest import Client, GatewayProcess, token_for
from tests.support.dispatcher_tasks import WORKER_ENV
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.usefixtures("platform")


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker("ai", "--pool", "threads", "--concurrency", "4", env_overrides=WORKER_ENV)


def refused(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as info:
        connect(url, open_timeout=10, **kwargs)  # type: ignore[arg-type]
    return info.value.response.status_code


# --- authentication -----------------------------------------------------------------------------------------
def test_connections_without_a_valid_token_are_refused_before_the_session_opens(gateway: GatewayProcess) -> None:
    assert refused(gateway.ws_url) == 403
    assert refused(f"{gateway.ws_url}?token=not-a-jwt") == 403
    assert refused(f"{gateway.ws_url}?token={token_for('ann', secret='another-secret-0123456789')}") == 403
    expired = token_for("ann", ttl_s=60, now_s=time.time() - 3600)
    assert refused(f"{gateway.ws_url}?token={expired}") == 403
    assert refused(gateway.ws_url, additional_headers={"Authorization": "Bearer x.y.z"}) == 403
    stats = gateway.stats()
    assert (stats["auth_refused_total"], stats["sessions_opened_total"]) == (5, 0)
    assert "bad token signature" in gateway.log() and "token expired" in gateway.log()


@pytest.mark.slow
def test_a_bearer_header_is_accepted_as_well(gateway: GatewayProcess) -> None:
    with connect(gateway.ws_url, additional_headers={"Authorization": f"Bearer {token_for('ann')}"}) as conn:
        conn.send('{"op": "subscribe", "id": "nope"}')
        assert "no task 'nope' for client 'ann'" in conn.recv(timeout=10)


# --- submit and pushes ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_submit_is_accepted_and_every_transition_is_pushed_up_to_succeeded(
    gateway: GatewayProcess, worker: WorkerProcess, clients: Callable[..., Client]
) -> None:
    ann = clients("ann")
    ann.send({"op": "submit", "ref": "r1", "type": "t_echo", "payload": {"tag": "hello"}})
    accepted = ann.recv()
    assert accepted["op"] == "accepted" and accepted["ref"] == "r1"
    task_id = accepted["id"]
    done = ann.recv_until(lambda f: f.get("status") == "SUCCEEDED")
    assert done == {"op": "status", "id": task_id, "status": "SUCCEEDED", "time": done["time"],
                    "result": {"tag": "hello"}}
    assert ann.statuses(task_id) == ["QUEUED", "STARTED", "SUCCEEDED"]
    assert done["time"] >= ann.frames[1]["time"]
    wait_for(lambda: gateway.stats()["tasks_followed"] == 0, 10, message="the route to be dropped")


@pytest.mark.slow
def test_progress_is_pushed(gateway: GatewayProcess, worker: WorkerProcess, clients: Callable[..., Client],
                            r: redis.Redis) -> None:
    ann = clients("ann")
    task_id = ann.submit("t_progress", {"tag": "gw"})
    halfway = ann.recv_until(lambda f: f.get("progress") == 50.0)
    assert (halfway["status"], halfway["progress_message"]) == ("STARTED", "halfway through gw")
    r.set("test:release:gw", 1)
    ann.recv_until(lambda f: f.get("status") == "SUCCEEDED")
    assert ann.statuses(task_id)[-2:] == ["STARTED", "SUCCEEDED"]


@pytest.mark.slow
def test_a_failing_task_pushes_its_error(gateway: GatewayProcess, worker: WorkerProcess,
                                         clients: Callable[..., Client]) -> None:
    ann = clients("ann")
    ann.submit("t_permanent", {"tag": "no"})
    failed = ann.recv_until(lambda f: f.get("op") == "status" and f["status"] == "FAILED")
    assert failed["error"] == "refused: no"


def test_cancel_of_a_queued_task_pushes_cancelled(gateway: GatewayProcess, clients: Callable[..., Client]) -> None:
    ann = clients("ann")  # no worker: the task stays QUEUED
    task_id = ann.submit("t_echo", {"tag": "stop-me"})
    ann.recv_until(lambda f: f.get("status") == "QUEUED")
    ann.send({"op": "cancel", "id": task_id})
    assert ann.recv_until(lambda f: f.get("op") == "status")["status"] == "CANCELLED"
    ann.send({"op": "cancel", "id": task_id, "ref": 7})
    assert ann.recv() == {"op": "error", "ref": 7,
                          "error": f"task {task_id} already finished (CANCELLED); nothing to cancel"}


# --- malformed input --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("frame", "error"), [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "a frame must be a JSON object, not list"),
    ('{"op": "launch", "ref": 3}', "unknown op 'launch': use submit, cancel or subscribe"),
    ('{"ref": 4}', "frame has no op"),
    ('{"op": "submit", "ref": 5, "payload": {}}', "submit needs a task type"),
    ('{"op": "submit", "ref": 6, "type": "t_echo", "payload": []}', "submit payload must be a JSON object"),
    ('{"op": "submit", "ref": 7, "type": "t_echo", "payload": {}}', "t_echo: payload.tag: Field required"),
    ('{"op": "submit", "ref": 8, "type": "t_ech", "payload": {}}',
     "task type 't_ech' is not open to gateway clients (did you mean 't_echo'?)"),
    ('{"op": "submit", "ref": 9, "type": "t_echo", "payload": {"tag": "x"}, "priority": "urgent"}',
     "unknown priority 'urgent'"),
    ('{"op": "cancel"}', "cancel needs the task id"),
    (b"\x00\x01binary", "binary frames are not supported"),
])
def test_malformed_frames_get_an_error_frame_and_the_connection_stays_open(
    gateway: GatewayProcess, clients: Callable[..., Client], frame: str | bytes, error: str
) -> None:
    ann = clients("ann")
    ann.send(frame)
    reply = ann.recv()
    assert reply["op"] == "error" and error in reply["error"], reply
    # still open and working
    task_id = ann.submit("t_echo", {"tag": "after"}, ref="next")
    assert task_id


def test_oversized_frames_are_refused(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(MEETINGTASKS_GATEWAY_MAX_FRAME_BYTES="1024")
    ann = Client(gateway, "ann")
    ann.send({"op": "submit", "ref": 1, "type": "t_echo", "payload": {"tag": "x" * 2000}})
    error = ann.recv()["error"]
    assert error.startswith("frame of 2") and error.endswith("bytes is over the limit of 1024 bytes")
    assert ann.submit("t_echo", {"tag": "small"}, ref=2)
    ann.send("x" * 1024 * 17)  # far over: the server cuts the connection (1009 message too big)
    with pytest.raises(ConnectionClosed) as info:
        ann.recv_until(lambda frame: False, 10)  # the task's QUEUED push may still come first
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    ann.close()


# --- limits ----------------------------------------------------------------------------------------------------
def test_per_client_rate_limit(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(MEETINGTASKS_GATEWAY_CLIENT_RATE_PER_S="2", MEETINGTASKS_GATEWAY_CLIENT_BURST="3")
    ann, bob = Client(gateway, "ann"), Client(gateway, "bob")
    for n in range(6):
        ann.send({"op": "subscribe", "id": f"t{n}", "ref": n})
    replies = [ann.recv() for _ in range(6)]
    limited = [f for f in replies if "rate limit" in f["error"]]
    assert len(limited) >= 2, replies
    assert limited[0]["error"] == "rate limit: at most 2 frames/s (burst 3); slow down"
    # another client has its own budget, and ann's refills
    bob.send({"op": "subscribe", "id": "x"})
    assert "no task" in bob.recv()["error"]
    time.sleep(0.6)  # the budget refills with time: this waits for one token (2/s)
    ann.send({"op": "subscribe", "id": "y"})
    assert "no task" in ann.recv()["error"]
    assert gateway.stats()["rate_limited_total"] >= 2


def test_unfinished_tasks_are_capped_per_client(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(MEETINGTASKS_GATEWAY_MAX_INFLIGHT="2")
    ann = Client(gateway, "ann")
    ann.submit("t_echo", {"tag": "1"}, ref=1)
    ann.submit("t_echo", {"tag": "2"}, ref=2)
    ann.send({"op": "submit", "ref": 3, "type": "t_echo", "payload": {"tag": "3"}})
    assert ann.recv_until(lambda f: f.get("ref") == 3) == {
        "op": "error", "ref": 3, "error": "too many unfinished tasks (2): wait for some to finish"}
    # a second session of the same client shares the cap; another client does not
    assert Client(gateway, "bob").submit("t_echo", {"tag": "b"}) is not None
    ann.close()


@pytest.mark.slow
def test_idle_sessions_are_closed(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(MEETINGTASKS_GATEWAY_IDLE_TIMEOUT_S="1")
    ann = Client(gateway, "ann")
    with pytest.raises(ConnectionClosed) as info:
        ann.recv(15)
    assert info.value.rcvd is not None and (info.value.rcvd.code, info.value.rcvd.reason) == (1000, "idle for 1s")
    wait_for(lambda: gateway.stats()["sessions_open"] == 0, 10, message="the session to be cleaned up")
    assert gateway.stats()["idle_closed_total"] == 1


# --- isolation -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_clients_never_see_each_others_tasks(gateway: GatewayProcess, worker: WorkerProcess,
                                                 clients: Callable[..., Client]) -> None:
    ann, bob = clients("ann"), clients("bob")
    ann_task = ann.submit("t_echo", {"tag": "ann's"})
    bob_task = bob.submit("t_echo", {"tag": "bob's"}, ref="b")
    ann.recv_until(lambda f: f.get("id") == ann_task and f.get("status") == "SUCCEEDED")
    bob.recv_until(lambda f: f.get("id") == bob_task and f.get("status") == "SUCCEEDED")
    # bob may neither follow nor cancel ann's task, and learns nothing about it
    bob.send({"op": "subscribe", "id": ann_task, "ref": 1})
    bob.send({"op": "cancel", "id": ann_task, "ref": 2})
    assert [bob.recv()["error"] for _ in range(2)] == [f"no task {ann_task!r} for client 'bob'"] * 2
    assert all(f.get("id") != ann_task for f in bob.frames)
    assert all(f.get("id") != bob_task for f in ann.frames)


@pytest.mark.slow
def test_disconnect_mid_task_cleans_the_session_and_the_task_still_completes(
    gateway: GatewayProcess, worker: WorkerProcess, clients: Callable[..., Client], r: redis.Redis,
    platform: Platform,
) -> None:
    ann = clients("ann")
    task_id = ann.submit("t_sleep", {"tag": "long", "seconds": 1.0})
    ann.recv_until(lambda f: f.get("status") == "STARTED")
    ann.close()
    wait_for(lambda: gateway.stats()["sessions_open"] == 0, 10, message="the session to be closed")
    assert gateway.stats()["tasks_followed"] == 0
    wait_for(lambda: r.hget(platform.keys.status(task_id), "status") == b"SUCCEEDED", 20,
             message="the task to complete without its client")
    # back again: the client asks for its task and gets the outcome
    again = clients("ann")
    again.send({"op": "subscribe", "id": task_id})
    snapshot = again.recv()
    assert (snapshot["op"], snapshot["id"], snapshot["status"], snapshot["result"]) == (
        "status", task_id, "SUCCEEDED", "long")
    stats = gateway.stats()
    assert (stats["sessions_open"], stats["sessions_opened_total"], stats["sessions_closed_total"]) == (1, 2, 1)


@pytest.mark.slow
def test_subscribe_to_an_own_running_task_from_a_second_session(
    gateway: GatewayProcess, worker: WorkerProcess, clients: Callable[..., Client]
) -> None:
    first, second = clients("ann"), clients("ann")
    task_id = first.submit("t_sleep", {"tag": "shared", "seconds": 0.5})
    second.send({"op": "subscribe", "id": task_id})
    assert second.recv()["id"] == task_id
    second.recv_until(lambda f: f.get("status") == "SUCCEEDED")
    first.recv_until(lambda f: f.get("status") == "SUCCEEDED")
    assert second.statuses(task_id).count("SUCCEEDED") == 1


# --- health and counters -----------------------------------------------------------------------------------------
def test_healthz_and_counters(gateway: GatewayProcess, clients: Callable[..., Client], r: redis.Redis) -> None:
    assert gateway.get("/healthz") == (200, {"ok": True, "status_feed": "connected", "sessions": 0})
    clients("ann").submit("t_echo", {"tag": "count"})
    stats = gateway.stats()
    assert (stats["sessions_open"], stats["submits_total"], stats["frames_in_total"]) == (1, 1, 1)
    assert stats["frames_out_total"] >= 1
    # the counters are also written to Redis for the exporter
    key = wait_for(lambda: next(iter(r.scan_iter("mt:gateway:*")), None), 15, message="the counters in Redis")
    assert int(r.hget(key, "submits_total")) == 1  # type: ignore[arg-type]
    assert "token=***" in gateway.log() and token_for("ann")[:20] not in gateway.log(), "tokens stay out of logs"
    status, types = gateway.get("/types")
    assert status == 200 and {"t_echo", "speech_recognition"} <= {t["type"] for t in types}
