"""The billing service's subscriptions: a paid invoice gets its receipt."""

from __future__ import annotations

from typing import Any

from meetingtasks import Event, on_event


@on_event("billing_events", "invoice.paid", dispatch="invoice_send")
def on_paid(event: Event) -> dict[str, Any]:
    p = event.payload
    return {"invoice_id": p["invoice_id"], "customer": p["customer"], "amount_cents": p["amount_cents"]}
