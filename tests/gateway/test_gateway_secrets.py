"""Secret results through the gateway: the submitting client gets the real session token; the status channel
the gateway listens to carries it only sealed (shown as ``***``)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from meetingtasks.core.secret_fields import MASK
from meetingtasks.services.user.store import UserStore
from meetingtasks.store.platform import Platform
from tests.gateway.conftest import Client, GatewayProcess
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

# Slow tier: every test runs worker subprocesses through kills, redeliveries or timeouts.
pytestmark = [pytest.mark.usefixtures("platform"), pytest.mark.slow]
PASSWORD = "Gateway-Secret-Pw-42"


def test_the_submitting_client_gets_the_real_token_and_the_status_channel_only_stars(
    gateway: GatewayProcess, start_worker: Callable[..., WorkerProcess], clients: Callable[..., Client],
    platform: Platform, r: redis.Redis,
) -> None:
    # Given a user worker, the gateway, and a listener on the status channel the gateway forwards from
    start_worker("user")
    published: list[dict[str, Any]] = []
    pubsub = r.pubsub()
    pubsub.subscribe(platform.keys.status_channel)
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "message":
                published.append(json.loads(message["data"]))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()

    # When a client registers and logs in through the gateway
    ann = clients("ann")
    ann.submit("user_register", {"username": "gw_ann", "email": "gw@example.org", "password": PASSWORD}, ref=1)
    ann.recv_until(lambda f: f.get("status") == "SUCCEEDED")
    login_id = ann.submit("user_login", {"username": "gw_ann", "password": PASSWORD}, ref=2)
    done = ann.recv_until(lambda f: f.get("id") == login_id and f.get("status") == "SUCCEEDED")

    # Then its SUCCEEDED frame holds the real token, which opens a login session ...
    token = done["result"]["token"]
    assert token != MASK and UserStore(platform).login(token, now=time.time()) is not None
    # ... and a later subscribe (a snapshot from the stored record) gives it too
    ann.send({"op": "subscribe", "ref": 3, "id": login_id})
    snapshot = ann.recv_until(lambda f: f.get("id") == login_id and f.get("op") == "status" and f is not done)
    assert snapshot["result"]["token"] == token

    # while the status channel showed the token only as *** (and sealed)
    wait_for(lambda: any(e.get("id") == login_id and e.get("status") == "SUCCEEDED" for e in published), 10,
             message="the login's SUCCEEDED event")
    stop.set()
    thread.join(5)
    pubsub.close()
    ours = [e for e in published if e.get("id") == login_id and "result" in e]
    assert ours and all(e["result"]["token"] == MASK for e in ours)
    assert token not in json.dumps(published) and PASSWORD not in json.dumps(published)
