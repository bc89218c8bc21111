"""The offline test gateway: no network, outcomes decided by the test card.

Payment methods (as Stripe names its test ones) and card numbers (entered on
our hosted checkout page):

    pm_card_visa                    4242 4242 4242 4242   succeeds
    pm_card_chargeDeclined          4000 0000 0000 0002   declined
    pm_card_authenticationRequired  4000 0027 6000 3184   needs 3-D Secure

References are derived from the idempotency key, so a retried call returns
the same reference, as a real gateway would.
"""

from __future__ import annotations

import hashlib

from billing.errors import ValidationFailed
from billing.gateways.base import ChargeResult, SavedCard

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
        return _ref("re", idempotency_key)
