"""Hostile review: the gateway's subject binding against payload models that read the subject field
under another name. A real gateway process, real Redis, no worker needed: a refusal queues nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from meetingtasks.core.priority import PRIORITY_ORDER, queue_name
from meetingtasks.services import SERVICES
from tests.gateway.conftest import Client, GatewayProcess
from tests.support.dispatcher_tasks import INCLUDE

pytestmark = pytest.mark.usefixtures("platform")

REVIEW_INCLUDE = f"{INCLUDE},tests.support.review_tasks"


def queued(r: redis.Redis) -> list[bytes]:
    return [item for svc in SERVICES for prio in PRIORITY_ORDER for item in r.lrange(queue_name(svc, prio), 0, -1)]


@pytest.mark.parametrize(("task_type", "payload"), [
    ("t_owned_aliased", {"uid": "bob", "tag": "theft"}),          # pydantic reads the alias, the check the name
    ("t_owned_legacy", {"owner": "bob", "tag": "theft"}),         # a "before" validator moves another key in
    ("t_owned_legacy", {"owner": "bob", "user_id": "ann"}),       # ... even over the subject's own id
])
def test_a_payload_naming_another_user_under_another_key_is_refused(
    start_gateway: Callable[..., GatewayProcess], r: redis.Redis, task_type: str, payload: dict[str, object],
) -> None:
    gateway = start_gateway(MEETINGTASKS_INCLUDE=REVIEW_INCLUDE)
    ann = Client(gateway, "ann")
    ann.send({"op": "submit", "ref": 1, "type": task_type, "payload": payload})
    reply = ann.recv_until(lambda f: f.get("ref") == 1)
    assert reply["op"] == "error", f"queued as {queued(r)}"
    assert "names 'bob', but this connection acts for 'ann'" in str(reply["error"]), reply
    assert queued(r) == []
    ann.close()


def test_the_subjects_own_id_under_the_alias_is_accepted(
    start_gateway: Callable[..., GatewayProcess], r: redis.Redis,
) -> None:
    gateway = start_gateway(MEETINGTASKS_INCLUDE=REVIEW_INCLUDE)
    ann = Client(gateway, "ann")
    assert ann.submit("t_owned_aliased", {"uid": "ann", "tag": "mine"}, ref=1)
    assert ann.submit("t_owned_legacy", {"owner": "ann"}, ref=2)
    assert ann.submit("t_owned_legacy", {"tag": "nobody named"}, ref=3)
    assert len(queued(r)) == 3
    ann.close()


def test_frames_the_gateway_cannot_read_spend_the_rate_budget_too(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    # The budget is in frames: invalid JSON and unknown ops cost the gateway a parse and an error frame each, so
    # a client flooding them must run out of budget like one flooding submits.
    gateway = start_gateway(MEETINGTASKS_GATEWAY_CLIENT_RATE_PER_S="0.1", MEETINGTASKS_GATEWAY_CLIENT_BURST="3")
    ann = Client(gateway, "ann")
    for n in range(3):  # the whole burst, in frames the gateway cannot act on
        ann.send("{not json" if n % 2 else {"op": "nonsense", "ref": n})
        assert "rate limit" not in str(ann.recv()["error"])
    ann.send({"op": "subscribe", "id": "t9", "ref": 9})
    assert ann.recv_until(lambda f: f.get("ref") == 9)["error"] == (
        "rate limit: at most 0.1 frames/s (burst 3); slow down")
    ann.send("{still not json")
    assert str(ann.recv()["error"]).startswith("rate limit"), "a refused frame over budget gets the rate-limit line"
    ann.send(b"binary")
    assert str(ann.recv()["error"]).startswith("rate limit")
    assert gateway.stats()["rate_limited_total"] == 3
    ann.close()
