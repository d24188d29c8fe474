"""Who may do what through the gateway: default deny, the acting user from the token, per-client limits that a
reconnect does not reset, and hostile tokens and frames. A real gateway process, real Redis, real workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from meetingtasks.core.priority import PRIORITY_ORDER, queue_name
from meetingtasks.services import SERVICES
from tests.gateway.conftest import Client, GatewayProcess, token_for
from tests.support.dispatcher_tasks import WORKER_ENV
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.usefixtures("platform")


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker("ai", "--pool", "threads", "--concurrency", "2", env_overrides=WORKER_ENV)


def reply_to(client: Client, ref: object) -> dict[str, object]:
    return client.recv_until(lambda f: f.get("ref") == ref)


def queued_anywhere(r: redis.Redis) -> int:
    return sum(int(r.llen(queue_name(svc, prio))) for svc in SERVICES for prio in PRIORITY_ORDER)


# --- default deny -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_only_types_declared_client_can_be_submitted_and_the_refusal_does_not_reveal_which_exist(
    gateway: GatewayProcess, worker: WorkerProcess, clients: Callable[..., Client], r: redis.Redis,
) -> None:
    ann = clients("ann")
    # given internal and maintenance types that exist, a test type not declared client, and one that does not exist
    denied = ["maintenance_trim_streams", "user_sessions_expire", "meeting_ai_result", "media_recording_start",
              "t_record", "no_such_type"]
    for ref, task_type in enumerate(denied):
        ann.send({"op": "submit", "ref": ref, "type": task_type, "payload": {}})
    # then each is refused with the same one line (only the name differs), and nothing is queued or recorded
    errors = [reply_to(ann, ref) for ref in range(len(denied))]
    assert [e["op"] for e in errors] == ["error"] * len(denied), errors
    # (the hint in brackets depends on the name and the client types only, never on what else exists)
    shapes = {str(e["error"]).replace(repr(t), "T").partition(" (")[0] for e, t in zip(errors, denied, strict=True)}
    assert shapes == {"task type T is not open to gateway clients"}, shapes
    assert queued_anywhere(r) == 0 and not list(r.scan_iter("mt:status:*"))
    # and a type declared client runs
    task_id = ann.submit("t_echo", {"tag": "allowed"}, ref="ok")
    assert ann.recv_until(lambda f: f.get("id") == task_id and f.get("status") == "SUCCEEDED")["result"] == {
        "tag": "allowed"}
    # and /types lists exactly the client types, none of the denied ones
    listed = {t["type"] for t in gateway.get("/types")[1]}
    assert {"t_echo", "user_register", "meeting_user_join", "signaling_webrtc_offer"} <= listed
    assert not listed & set(denied)
    assert gateway.stats()["submits_denied_total"] == len(denied)


def test_a_close_name_gets_a_hint_among_client_types_only(gateway: GatewayProcess,
                                                         clients: Callable[..., Client]) -> None:
    ann = clients("ann")
    ann.send({"op": "submit", "ref": 1, "type": "t_ech", "payload": {}})
    assert reply_to(ann, 1)["error"] == "task type 't_ech' is not open to gateway clients (did you mean 't_echo'?)"
    ann.send({"op": "submit", "ref": 2, "type": "user_sessions_expir", "payload": {}})
    assert "did you mean" not in str(reply_to(ann, 2)["error"]), "internal names are never suggested"


def test_an_operator_list_narrows_the_client_types_and_cannot_open_an_internal_one(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = start_gateway(MEETINGTASKS_GATEWAY_TASK_TYPES="t_echo,user_sessions_expire")
    ann = Client(gateway, "ann")
    ann.send({"op": "submit", "ref": 1, "type": "user_sessions_expire", "payload": {}})
    ann.send({"op": "submit", "ref": 2, "type": "t_sleep", "payload": {"tag": "x"}})
    assert "is not open to gateway clients" in str(reply_to(ann, 1)["error"])
    assert "is not open to gateway clients" in str(reply_to(ann, 2)["error"])
    assert ann.submit("t_echo", {"tag": "x"}, ref=3)
    assert {t["type"] for t in gateway.get("/types")[1]} == {"t_echo"}
    assert "MEETINGTASKS_GATEWAY_TASK_TYPES names user_sessions_expire, not declared" in gateway.log()
    ann.close()


# --- the acting user comes from the token ------------------------------------------------------------------------
@pytest.mark.slow
def test_the_acting_user_is_the_tokens_subject(
    gateway: GatewayProcess, worker: WorkerProcess, clients: Callable[..., Client], r: redis.Redis,
) -> None:
    ann = clients("ann")
    # a payload naming another user is refused, and nothing is queued
    ann.send({"op": "submit", "ref": 1, "type": "t_owned", "payload": {"user_id": "bob", "tag": "theft"}})
    assert reply_to(ann, 1) == {"op": "error", "ref": 1, "error": (
        "payload field user_id names 'bob', but this connection acts for 'ann' (the token's subject): "
        "leave it out or give your own id")}
    # the same for a built-in type (the host of a new meeting), without any worker of its service
    ann.send({"op": "submit", "ref": 2, "type": "meeting_create", "payload": {"host_id": "bob", "title": "x"}})
    assert "payload field host_id names 'bob'" in str(reply_to(ann, 2)["error"])
    assert queued_anywhere(r) == 0 and gateway.stats()["submits_denied_total"] == 2
    # a payload naming nobody runs as the token's subject; one naming the subject itself runs too
    nobody = ann.submit("t_owned", {"tag": "mine"}, ref=3)
    itself = ann.submit("t_owned", {"user_id": "ann", "tag": "mine too"}, ref=4)
    for task_id, tag in ((nobody, "mine"), (itself, "mine too")):
        # Either may finish first (two pool threads): a frame read while waiting for the other one counts too.
        def succeeded(f: dict[str, Any], t: str = task_id) -> bool:
            return f.get("id") == t and f.get("status") == "SUCCEEDED"
        done = next((f for f in ann.frames if succeeded(f)), None) or ann.recv_until(succeeded)
        assert done["result"] == {"user_id": "ann", "tag": tag}
    # an explicit null is "nobody" too, never a way around the binding
    null = ann.submit("t_owned", {"user_id": None, "tag": "null"}, ref=5)
    done = ann.recv_until(lambda f: f.get("id") == null and f.get("status") == "SUCCEEDED")
    assert done["result"] == {"user_id": "ann", "tag": "null"}


# --- limits per client, not per connection ------------------------------------------------------------------------
def test_reconnecting_does_not_refill_the_rate_budget(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(MEETINGTASKS_GATEWAY_CLIENT_RATE_PER_S="0.1", MEETINGTASKS_GATEWAY_CLIENT_BURST="3")
    ann = Client(gateway, "ann")
    for n in range(3):  # the whole burst
        ann.send({"op": "subscribe", "id": f"t{n}", "ref": n})
        assert "no task" in str(reply_to(ann, n)["error"])
    ann.close()
    wait_for(lambda: gateway.stats()["sessions_open"] == 0, 10, message="the session to be closed")
    # when ann comes back at once (a token every 10 s), the budget is still spent
    again = Client(gateway, "ann")
    again.send({"op": "subscribe", "id": "t9", "ref": 9})
    assert reply_to(again, 9)["error"] == "rate limit: at most 0.1 frames/s (burst 3); slow down"
    again.close()


def test_connections_per_client_are_capped(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(MEETINGTASKS_GATEWAY_MAX_CONNECTIONS_PER_CLIENT="2")
    first, second = Client(gateway, "ann"), Client(gateway, "ann")
    # the third connection of ann is closed at once with a reason that says why
    with pytest.raises(ConnectionClosed) as info:
        Client(gateway, "ann").recv(10)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (
        1008, "too many connections for client 'ann' (limit 2): close one first")
    assert gateway.stats()["connections_refused_total"] == 1
    # another client is not affected, and ann may connect again once one of hers is closed
    assert Client(gateway, "bob").submit("t_echo", {"tag": "b"})
    first.close()
    wait_for(lambda: gateway.stats()["sessions_open"] == 2, 10, message="ann's first session to be closed")
    assert Client(gateway, "ann").submit("t_echo", {"tag": "a"})
    second.close()


# --- hostile tokens and frames -------------------------------------------------------------------------------------
def test_a_token_with_a_non_ascii_signature_is_refused_and_counted(gateway: GatewayProcess) -> None:
    header, claims, _ = token_for("ann").split(".")
    with pytest.raises(InvalidStatus) as info:
        connect(f"{gateway.ws_url}?token={header}.{claims}.%C3%A9t%C3%A9", open_timeout=10)
    assert info.value.response.status_code == 403
    assert gateway.stats()["auth_refused_total"] == 1
    assert "malformed token" in gateway.log()
    assert gateway.get("/healthz")[0] == 200


def test_frame_limits_count_bytes_not_characters(start_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = start_gateway(MEETINGTASKS_GATEWAY_MAX_FRAME_BYTES="1024")
    ann = Client(gateway, "ann")
    frame = '{"op": "submit", "ref": 1, "type": "t_echo", "payload": {"tag": "' + "é" * 600 + '"}}'
    assert len(frame) < 1024 < len(frame.encode())
    ann.send(frame)
    assert reply_to(ann, None)["error"] == f"frame of {len(frame.encode())} bytes is over the limit of 1024 bytes"
    assert gateway.stats()["oversize_frames_total"] == 1
    assert ann.submit("t_echo", {"tag": "é" * 100}, ref=2)
    ann.close()
