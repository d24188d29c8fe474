"""Billing: an application of your own on the platform, with no edit to the meetingtasks package.

It brings a service (``billing``), an event channel (``billing_events``), task types and a subscription,
registered with the public API only (``channel``, ``task_type``, ``on_event``). Run it from the repository
root::

    meetingtasks worker billing --include examples.billing     # its four queues, dead letters, heartbeat
    meetingtasks bridge --include examples.billing             # billing_events -> tasks
    MEETINGTASKS_INCLUDE=examples.billing meetingtasks dispatch invoice_charge \\
        --payload '{"invoice_id": "inv-1", "customer": "ann@example.org", "amount_cents": 1250, "card": "tok_ok"}'

``stats``, ``dlq``, the exporter and Flower list the service without importing this module (its workers record
it in Redis); a process that dispatches its types or publishes on its channel imports it
(``MEETINGTASKS_INCLUDE=examples.billing``), as the gateway does with ``--include``.
"""

from meetingtasks import channel

# Declared before the subscriptions (events.py) that listen to it.
BILLING_EVENTS = channel("billing_events", ["invoice.paid", "invoice.failed"], owner="billing")

from examples.billing import events, tasks  # noqa: E402 - registers the task types and subscriptions

__all__ = ["BILLING_EVENTS", "events", "tasks"]
