"""The offline test gateway: no network, outcomes decided by the test card.

Payment methods (as Stripe names its test ones) and card numbers (entered on
our hosted checkout page):

    pm_card_visa                    4242 4242 4242 4242   succeeds
    pm_card_chargeDeclined          4000 0000 0000 0002   declined
    pm_card_authenticationRequired  4000 0027 6000 3184   needs 3-D Secure

References are derived from the idempotency key, so a retried call returns
the same reference, as a real gateway would: a refund retried with its key is
made once (``refunds_made`` counts the refunds made per key).

``refunds_fail_next(n)`` makes the next ``n`` refund calls fail as a network
error would (GatewayError, nothing refunded): how the durable refunds are
exercised offline. ``event_charge_outcome`` reads Stripe-shaped
payment_intent events, so a webhook's flow can be run on this gateway too.
"""

from __future__ import annotations

import hashlib

from billing.errors import ValidationFailed
from billing.gateways.base import ChargeResult, GatewayError, SavedCard

CARDS = {
    "pm_card_visa": ("visa", "4242", "succeeded"),
    "pm_card_chargeDeclined": ("visa", "0002", "failed"),
    "pm_card_authenticationRequired": ("visa", "3184", "requires_action"),
}
CARD_NUMBERS = {
    "4242424242424242": "pm_card_visa",
    "4000000000000002": "pm_card_chargeDeclined",
    "4000002760003184": "pm_card_authenticationRequired",
}


# Per process: the switch of refunds_fail_next, and key -> times the refund was asked once it succeeded.
_refund_failures = {"left": 0}
refunds_made: dict[str, int] = {}


def refunds_fail_next(n: int = 1) -> None:
    """The next ``n`` refund calls fail (0 turns the switch off)."""
    _refund_failures["left"] = n


def card_number_to_payment_method(number: str) -> str | None:
    return CARD_NUMBERS.get("".join(ch for ch in number if ch.isdigit()))


def _ref(prefix: str, key: str) -> str:
    return f"{prefix}_test_{hashlib.sha256(key.encode()).hexdigest()[:20]}"


class TestGateway:
    __test__ = False  # not a pytest class
    name = "test"

    def payment_method_attach(self, *, customer_ref: str, payment_method: str, idempotency_key: str = "") -> SavedCard:
        if payment_method not in CARDS:
            raise ValidationFailed("paymentMethod", f"unknown test payment method; use one of {', '.join(CARDS)}")
        brand, last4, _ = CARDS[payment_method]
        return SavedCard(gateway_id=payment_method, brand=brand, last4=last4)

    def charge(self, *, customer_ref: str, payment_method: str, amount: int, currency: str,
               idempotency_key: str, description: str) -> ChargeResult:
        outcome = CARDS.get(payment_method, (None, None, "failed"))[2]
        ref = _ref("pi", idempotency_key)
        if outcome == "failed":
            return ChargeResult(status="failed", ref=ref, failure_code="card_declined")
        return ChargeResult(status=outcome, ref=ref)

    def confirm(self, *, ref: str, succeed: bool) -> ChargeResult:
        if succeed:
            return ChargeResult(status="succeeded", ref=ref)
        return ChargeResult(status="failed", ref=ref, failure_code="authentication_failed")

    def refund(self, *, ref: str, amount: int, idempotency_key: str) -> str:
        if _refund_failures["left"] > 0:
            _refund_failures["left"] -= 1
            raise GatewayError("The test gateway did not answer (refunds_fail_next).",
                               details={"gateway": "test", "error": "APIConnectionError"})
        refunds_made[idempotency_key] = refunds_made.get(idempotency_key, 0) + 1
        return _ref("re", idempotency_key)

    @staticmethod
    def event_charge_outcome(event: dict) -> ChargeResult | None:
        """The final outcome of a charge that a (Stripe-shaped) event reports, or None."""
        obj = (event.get("data") or {}).get("object") or {}
        if obj.get("object") != "payment_intent" or not obj.get("id"):
            return None
        if event.get("type") == "payment_intent.succeeded":
            return ChargeResult(status="succeeded", ref=obj["id"])
        if event.get("type") == "payment_intent.payment_failed":
            return ChargeResult(status="failed", ref=obj["id"], failure_code="card_declined")
        return None
