"""The billing service's task types: charge an invoice, send its receipt."""

from __future__ import annotations

from typing import Any

from examples.billing.schemas import Invoice, InvoiceCharge
from meetingtasks import publish_event, task_type

SOURCE = "billing"


class CardNetworkDown(Exception):
    """The card network did not answer: retried with backoff, dead-lettered once the retries are spent."""


@task_type("billing", "invoice_charge", payload=InvoiceCharge, priority="high", max_retries=2)
def invoice_charge(p: InvoiceCharge) -> dict[str, Any]:
    """Charge the card (a stand-in for a payment gateway) and announce the outcome on ``billing_events``."""
    if p.card == "tok_unreachable":
        raise CardNetworkDown(f"card network unreachable charging {p.invoice_id}")
    paid = p.card != "tok_declined"
    event = publish_event("billing_events", "invoice.paid" if paid else "invoice.failed",
                          {"invoice_id": p.invoice_id, "customer": p.customer, "amount_cents": p.amount_cents},
                          source=SOURCE)
    return {"invoice_id": p.invoice_id, "paid": paid, "event_id": event.id}


@task_type("billing", "invoice_send", payload=Invoice, priority="high", client=True)
def invoice_send(p: Invoice) -> dict[str, Any]:
    """Render the receipt (a real service would mail it to ``p.customer``)."""
    return {"invoice_id": p.invoice_id, "to": p.customer,
            "text": f"Invoice {p.invoice_id}: {p.amount_cents / 100:.2f} received, thank you."}
