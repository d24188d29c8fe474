"""Hostile review of issue 19: the gateway's subject binding against payload models that read the subject field
under another name. A real gateway process, real Redis, no worker needed: a refusal queues nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from meetingtasks.priority import PRIORITY_ORDER, queue_name
from meetingtasks.registry import SERVICES
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
