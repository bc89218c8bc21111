"""The interface every payment gateway implements.

Our service owns customers' subscriptions and invoices; a gateway only saves
cards and moves money. Every call that moves money takes an idempotency key
derived from our own ids, so a retried call cannot charge twice. Calls are
made outside database transactions (they are network calls), and their
results are recorded afterwards by the services.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from billing.errors import BillingError


class GatewayError(BillingError):
    """The gateway refused the request itself (not a declined card)."""

    status = 502
    code = "GATEWAY_ERROR"


@dataclass(frozen=True)
class SavedCard:
    gateway_id: str
    brand: str
    last4: str


@dataclass(frozen=True)
class ChargeResult:
    status: Literal["succeeded", "failed", "requires_action"]
    ref: str = ""
    failure_code: str = ""


class Gateway(Protocol):
    name: str

    def payment_method_attach(self, *, customer_ref: str, payment_method: str, idempotency_key: str = "") -> SavedCard:
        """Save a card for the customer. Raises ValidationFailed for an unknown card."""

    def charge(self, *, customer_ref: str, payment_method: str, amount: int, currency: str,
               idempotency_key: str, description: str) -> ChargeResult:
        """Charge a saved card now (off-session). Declines and 3-D Secure come back
        as a result, not an exception."""

    def confirm(self, *, ref: str, succeed: bool) -> ChargeResult:
        """Finish a charge that required action (3-D Secure)."""

    def refund(self, *, ref: str, amount: int, idempotency_key: str) -> str:
        """Refund part or all of a succeeded charge; returns the refund's reference."""
