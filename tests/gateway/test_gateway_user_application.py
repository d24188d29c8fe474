"""The gateway serves a service of your own (examples/billing) given to it with MEETINGTASKS_INCLUDE: clients
submit its client=True types and get their status pushed, with no edit to the core."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.gateway.conftest import Client, GatewayProcess
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow  # a worker and a gateway subprocess


def test_a_client_submits_a_task_of_your_own_service_and_gets_its_result(
        start_gateway: Callable[..., GatewayProcess], start_worker: Callable[..., WorkerProcess],
        clients: Callable[..., Client]) -> None:
    # given a billing worker and a gateway that both include the billing application
    start_worker("billing", "--include", "examples.billing", "--pool", "threads", "--concurrency", "2")
    gateway = start_gateway(MEETINGTASKS_INCLUDE="tests.support.tasks,examples.billing")
    ann = clients("ann", on=gateway)

    # when ann submits the billing type declared client=True
    task_id = ann.submit("invoice_send", {"invoice_id": "inv-3", "customer": "ann@example.org", "amount_cents": 990})

    # then its statuses and result come back over the socket
    done = ann.recv_until(lambda f: f.get("id") == task_id and f.get("status") == "SUCCEEDED", timeout_s=30)
    assert done["result"]["text"] == "Invoice inv-3: 9.90 received, thank you."
    assert ann.statuses(task_id)[-2:] == ["STARTED", "SUCCEEDED"]

    # and a billing type not declared client=True stays refused (default deny holds for your types too)
    ann.send({"op": "submit", "ref": 2, "type": "invoice_charge",
              "payload": {"invoice_id": "inv-4", "customer": "ann@example.org", "amount_cents": 1, "card": "tok_ok"}})
    refused = ann.recv_until(lambda f: f.get("ref") == 2)
    assert refused["op"] == "error" and "invoice_charge" in refused["error"]
