"""The billing service's payloads."""

from __future__ import annotations

from pydantic import BaseModel, Field


class InvoiceCharge(BaseModel):
    invoice_id: str = Field(min_length=1, max_length=64)
    customer: str = Field(min_length=3, max_length=254, description="The e-mail address receipts go to")
    amount_cents: int = Field(gt=0, le=100_000_000)
    #: A payment token; ``tok_declined`` is declined, ``tok_unreachable`` finds the card network down.
    card: str = Field(min_length=1, max_length=64)


class Invoice(BaseModel):
    invoice_id: str = Field(min_length=1, max_length=64)
    customer: str = Field(min_length=3, max_length=254)
    amount_cents: int = Field(gt=0)
