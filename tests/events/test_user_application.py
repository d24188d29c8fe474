"""An application of your own (examples/billing, outside the package) runs on the platform with no edit to
the core: its worker, its channel through the bridge, and the tools that do not import its code.

This process never imports the application (an application's test module may declare the same names): it
drives it through the CLI and Redis, as an operator and an outside service would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest
import redis

from meetingtasks.core.priority import PRIORITY_ORDER, queue_name
from meetingtasks.events.subscriptions import Subscription
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status, StatusRecord
from tests.support.processes import ROOT
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow  # a worker and a bridge subprocess

BILLING = "examples.billing"
INVOICE = {"invoice_id": "inv-7", "customer": "ann@example.org", "amount_cents": 1250}
#: The bridge names a subscription ``module:function``; its triggered task ids derive from that name.
RECEIPTS = Subscription("examples.billing.events:on_paid", "billing_events", "invoice.paid", "invoice_send", None,
                        handler=lambda event: None)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetingtasks", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def finished(platform: Platform, r: redis.Redis, task_id: str) -> StatusRecord | None:
    record = platform.status.get(r, task_id)
    return record if record is not None and record.status in (Status.SUCCEEDED, Status.FAILED) else None


def test_a_service_of_your_own_runs_its_tasks_and_events_through_the_platform(
        platform: Platform, r: redis.Redis, env: dict[str, str], start_worker: Callable[..., WorkerProcess],
        start_bridge) -> None:
    # Given the billing application's worker and a bridge, both told about it with --include only
    start_worker("billing", "--include", BILLING, "--pool", "threads", "--concurrency", "2")
    start_bridge("--include", BILLING)
    with_billing = {**env, "MEETINGTASKS_INCLUDE": f"tests.support.tasks,{BILLING}"}

    # When an invoice is charged from the shell
    out = cli(with_billing, "dispatch", "invoice_charge", "--payload", json.dumps({**INVOICE, "card": "tok_ok"}),
              "--wait")
    assert out.returncode == 0, out.stderr
    charge_id, *lines = out.stdout.strip().splitlines()
    result = json.loads("\n".join(lines))

    # Then the charge ran on the billing worker from its own high queue, published invoice.paid on the
    # application's own channel, and the bridge turned that event into the receipt task
    assert result["paid"] is True
    assert platform.status.get(r, charge_id).fields["queue"] == "billing.high"  # type: ignore[union-attr]
    receipt = wait_for(lambda: finished(platform, r, RECEIPTS.task_id(result["event_id"])), 30,
                       message="the receipt triggered by invoice.paid")
    assert receipt.status is Status.SUCCEEDED, receipt.error
    assert receipt.result == {"invoice_id": "inv-7", "to": "ann@example.org",
                              "text": "Invoice inv-7: 12.50 received, thank you."}

    # And an event an outside service PUBLISHes on the channel's plain name takes the same path
    event_id = str(uuid.uuid4())
    r.publish("billing_events", json.dumps({"id": event_id, "type": "invoice.paid", "channel": "billing_events",
                                            "source": "shop", "time": time.time(),
                                            "payload": {**INVOICE, "invoice_id": "inv-8"}}))
    outside = wait_for(lambda: finished(platform, r, RECEIPTS.task_id(event_id)), 30, message="the second receipt")
    assert outside.result["invoice_id"] == "inv-8"

    # And a charge whose card network is down is retried, then dead-lettered under billing
    down = cli(with_billing, "dispatch", "invoice_charge", "--payload",
               json.dumps({**INVOICE, "invoice_id": "inv-9", "card": "tok_unreachable"}))
    assert down.returncode == 0, down.stderr
    down_id = down.stdout.strip()
    wait_for(lambda: platform.status.get(r, down_id).status is Status.DEAD_LETTERED,  # type: ignore[union-attr]
             30, message="the dead letter of the unreachable charge")

    # Then the tools, in processes that import none of the billing code, see the service: stats shows its
    # four queues, dlq lists and finds its letter
    plain = {**env, "MEETINGTASKS_INCLUDE": ""}
    stats = cli(plain, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    rows = [row for row in json.loads(stats.stdout) if row["service"] == "billing"]
    assert [row["priority"] for row in rows] == [p.value for p in PRIORITY_ORDER]
    assert sum(row["dead_lettered"] for row in rows) == 1
    letters = cli(plain, "dlq", "list", "--service", "billing", "--json")
    assert letters.returncode == 0, letters.stderr
    assert [(x["task_id"], x["task_type"]) for x in json.loads(letters.stdout)] == [(down_id, "invoice_charge")]
    assert all(r.llen(queue_name("billing", p)) == 0 for p in PRIORITY_ORDER)


def test_a_worker_for_a_service_nobody_registered_is_one_line_and_exit_1(env: dict[str, str]) -> None:
    unknown = cli(env, "worker", "billing")  # the module was not included
    assert unknown.returncode == 1
    (line,) = unknown.stderr.strip().splitlines()
    assert line.startswith("error: unknown service 'billing' (no task types registered for it); services: user, ")
    assert "--include" in line
    bad = cli(env, "worker", "Billing.Svc")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: service name 'Billing.Svc' is not allowed: use 1-40 lowercase letters, digits, '_' or '-', "
        "starting with a letter (it becomes part of queue names and Redis keys)"
    ]
