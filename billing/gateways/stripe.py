"""The Stripe gateway, with the ``stripe`` library.

Stripe only moves money: our service owns subscriptions and invoices. Stripe
holds a customer per customer of ours, the cards attached to it, and one
PaymentIntent per charge attempt (off-session, confirmed at once). Every
mutating call carries an idempotency key derived from our own ids (the key
the service passes in, or one built here from Stripe ids that are themselves
derived from ours), so a retried call cannot charge, refund or create twice.

Outcomes of a charge:

    succeeded                                  -> ChargeResult("succeeded")
    requires_action, or a CardError with code  -> ChargeResult("requires_action");
      authentication_required (3-D Secure)        the customer finishes on-session,
                                                  and the payment_intent.* webhook
                                                  (or ``confirm``) settles it
    CardError (declined)                       -> ChargeResult("failed", decline code)
    any other Stripe or network error          -> GatewayError (502)

Settings: STRIPE_API_KEY, STRIPE_API_BASE (another server, such as localstripe
in the tests), STRIPE_WEBHOOK_SECRET (verifies inbound webhooks).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

import stripe
from django.conf import settings

from billing.errors import BillingError, ValidationFailed
from billing.gateways.base import ChargeResult, GatewayError, SavedCard

# A PaymentIntent still waiting for the customer (or for Stripe) is, to us, one
# that requires action; the webhook or ``confirm`` settles it later.
_WAITING = {"requires_action", "requires_confirmation", "processing", "requires_capture"}


@dataclass(frozen=True)
class PaymentIntentSecret:
    """What Stripe.js's ``confirmCardPayment`` needs to finish a PaymentIntent on-session.
    ``client_secret`` goes to the customer's browser only: never store or log it (it is
    left out of the repr). ``payment_method`` is the card to confirm with when Stripe
    detached it (an off-session ``authentication_required`` leaves the PaymentIntent in
    ``requires_payment_method``), else ""."""

    client_secret: str = field(repr=False)
    payment_method: str = ""


class WebhookSignatureInvalid(BillingError):
    status = 400
    code = "INVALID_SIGNATURE"


@functools.lru_cache(maxsize=8)
def _client(api_key: str, api_base: str) -> stripe.StripeClient:
    base = {"api": api_base.rstrip("/")} if api_base else None
    # Network retries reuse the request's idempotency key, so they are safe.
    return stripe.StripeClient(api_key, base_addresses=base, max_network_retries=2)


def _plain(obj) -> dict:
    """A Stripe object (or error object) as a plain dict; {} for None."""
    if obj is None:
        return {}
    return obj.to_dict() if isinstance(obj, stripe.StripeObject) else dict(obj)


def _gateway_error(exc: stripe.StripeError) -> GatewayError:
    return GatewayError(
        "The payment gateway did not complete the request.",
        details={"gateway": "stripe", "error": exc.__class__.__name__, "code": getattr(exc, "code", None),
                 "status": exc.http_status},
    )


def _failure_code(error) -> str:
    """The most specific reason Stripe gives: the issuer's decline code, else the error code."""
    if not error:
        return "card_declined"
    return error.get("decline_code") or error.get("code") or "card_declined"


def payment_intent_result(pi) -> ChargeResult:
    """Our view of a PaymentIntent's status."""
    pi = _plain(pi)
    status = pi["status"]
    if status == "succeeded":
        return ChargeResult(status="succeeded", ref=pi["id"])
    if status in _WAITING:
        return ChargeResult(status="requires_action", ref=pi["id"])
    error = pi.get("last_payment_error")
    if status == "requires_payment_method" and (error or {}).get("code") == "authentication_required":
        # Stripe's answer to an off-session charge that needs 3-D Secure: the customer
        # confirms it on-session with Stripe.js, so it still waits.
        return ChargeResult(status="requires_action", ref=pi["id"])
    # requires_payment_method (declined or failed authentication) or canceled
    code = _failure_code(error) if error else ("canceled" if status == "canceled" else "payment_failed")
    return ChargeResult(status="failed", ref=pi["id"], failure_code=code)


class StripeGateway:
    name = "stripe"

    def __init__(self, *, api_key: str | None = None, api_base: str | None = None):
        self.api_key = settings.STRIPE_API_KEY if api_key is None else api_key
        self.api_base = settings.STRIPE_API_BASE if api_base is None else api_base

    @property
    def client(self) -> stripe.StripeClient:
        if not self.api_key:
            raise GatewayError("Stripe is not configured (STRIPE_API_KEY).", details={"gateway": "stripe"})
        return _client(self.api_key, self.api_base or "")

    # --- customers and cards ---------------------------------------------------

    def customer_ensure(self, *, customer_id: int, email: str, name: str) -> str:
        """The Stripe customer for our customer ``customer_id`` (one per id: the
        idempotency key makes a retried call return the same one)."""
        params = {"metadata": {"billing_customer_id": str(customer_id)}}
        if email:
            params["email"] = email
        if name:
            params["name"] = name
        try:
            customer = self.client.v1.customers.create(params, {"idempotency_key": f"cus:{customer_id}"})
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        return customer.id

    def payment_method_attach(self, *, customer_ref: str, payment_method: str, idempotency_key: str = "") -> SavedCard:
        """Attach a ``pm_…`` to the customer and make it the default for invoices.
        Raises ValidationFailed (unknown or declined card), GatewayError."""
        key = idempotency_key or f"{customer_ref}:{payment_method}"
        try:
            pm = self.client.v1.payment_methods.attach(
                payment_method, {"customer": customer_ref}, {"idempotency_key": f"{key}:attach"})
            self.client.v1.customers.update(
                customer_ref, {"invoice_settings": {"default_payment_method": pm.id}},
                {"idempotency_key": f"{key}:default"})
        except stripe.CardError as exc:
            code = _failure_code(_plain(exc.error))
            raise ValidationFailed("paymentMethod", f"the card was declined ({code})") from exc
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404 or exc.code == "resource_missing":
                raise ValidationFailed("paymentMethod", "no such payment method at Stripe") from exc
            raise _gateway_error(exc) from exc
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        card = _plain(pm).get("card") or {}
        return SavedCard(gateway_id=pm.id, brand=card.get("brand") or "", last4=card.get("last4") or "")

    def setup_intent_create(self, *, customer_ref: str, idempotency_key: str) -> str:
        """A SetupIntent for saving a card off-session with Stripe.js; returns its
        client secret. ``idempotency_key``: one per save-a-card flow of ours (for
        example the checkout session id), since a used SetupIntent cannot be reused."""
        try:
            intent = self.client.v1.setup_intents.create(
                {"customer": customer_ref, "usage": "off_session", "payment_method_types": ["card"]},
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        return intent.client_secret

    # --- money -----------------------------------------------------------------

    def charge(self, *, customer_ref: str, payment_method: str, amount: int, currency: str,
               idempotency_key: str, description: str) -> ChargeResult:
        params = {
            "amount": amount, "currency": currency.lower(), "customer": customer_ref, "payment_method": payment_method,
            "off_session": True, "confirm": True, "description": description,
            "metadata": {"billing_key": idempotency_key},
        }
        try:
            pi = self.client.v1.payment_intents.create(params, {"idempotency_key": idempotency_key})
        except stripe.CardError as exc:
            error = _plain(exc.error)
            pi = error.get("payment_intent")
            ref = pi["id"] if pi else self._charge_payment_intent(error.get("charge"))
            if error.get("code") == "authentication_required":
                # Off-session and the bank wants 3-D Secure: the customer must come back.
                return ChargeResult(status="requires_action", ref=ref)
            return ChargeResult(status="failed", ref=ref, failure_code=_failure_code(error))
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        return payment_intent_result(pi)

    def payment_intent_client_secret(self, *, ref: str) -> PaymentIntentSecret:
        """The client secret of the PaymentIntent ``ref`` (one of our charges waiting for
        3-D Secure), read from Stripe each time so that we never store it, and the card
        to confirm it with if Stripe needs one again. Raises GatewayError."""
        try:
            pi = _plain(self.client.v1.payment_intents.retrieve(ref))
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        payment_method = ""
        if pi.get("status") == "requires_payment_method":
            failed_with = (pi.get("last_payment_error") or {}).get("payment_method") or ""
            payment_method = failed_with.get("id", "") if isinstance(failed_with, dict) else failed_with
        if not pi.get("client_secret"):
            raise GatewayError("The payment gateway did not complete the request.",
                               details={"gateway": "stripe", "error": "no client secret"})
        return PaymentIntentSecret(client_secret=pi["client_secret"], payment_method=payment_method)

    def _charge_payment_intent(self, charge_id: str | None) -> str:
        """The PaymentIntent of a declined charge, when the error did not carry it."""
        if not charge_id:
            return ""
        try:
            return _plain(self.client.v1.charges.retrieve(charge_id)).get("payment_intent") or ""
        except stripe.StripeError:
            return ""

    def confirm(self, *, ref: str, succeed: bool) -> ChargeResult:
        """Where a charge that required action stands now. The customer
        authenticates on-session with Stripe.js; Stripe's state decides, so money
        that moved is never reported as failed. ``succeed=False`` (the customer
        gave up) cancels a PaymentIntent that still waits."""
        try:
            pi = self.client.v1.payment_intents.retrieve(ref)
            if pi.status == "requires_confirmation" and succeed:
                pi = self.client.v1.payment_intents.confirm(ref, {}, {"idempotency_key": f"{ref}:confirm"})
            elif pi.status in ("requires_action", "requires_confirmation", "requires_payment_method") and not succeed:
                self.client.v1.payment_intents.cancel(ref, {}, {"idempotency_key": f"{ref}:cancel"})
                return ChargeResult(status="failed", ref=ref, failure_code="authentication_failed")
        except stripe.CardError as exc:
            return ChargeResult(status="failed", ref=ref, failure_code=_failure_code(_plain(exc.error)))
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        return payment_intent_result(pi)

    def refund(self, *, ref: str, amount: int, idempotency_key: str) -> str:
        """Refund ``amount`` of the PaymentIntent ``ref``, once per key. Stripe forgets an
        idempotency key after 24 hours, and a pending refund of ours may be sent again
        later than that, so a refund already made under the key (its metadata says it)
        is looked up first and answered instead of making a second one."""
        try:
            for made in self.client.v1.refunds.list({"payment_intent": ref, "limit": 100}).auto_paging_iter():
                if (_plain(made).get("metadata") or {}).get("billing_key") == idempotency_key:
                    return made.id
            refund = self.client.v1.refunds.create(
                {"payment_intent": ref, "amount": amount, "metadata": {"billing_key": idempotency_key}},
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _gateway_error(exc) from exc
        return refund.id

    # --- webhooks --------------------------------------------------------------

    def webhook_event(self, *, payload: bytes, signature: str, secret: str | None = None) -> dict:
        """The verified event of an inbound webhook, as a dict.
        Raises WebhookSignatureInvalid (bad, stale or missing signature; not JSON)."""
        secret = settings.STRIPE_WEBHOOK_SECRET if secret is None else secret
        if not secret:
            raise BillingError("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET).",
                               code="NOT_CONFIGURED", status=503)
        try:
            stripe.Webhook.construct_event(payload, signature, secret)
            event = json.loads(payload)
        except stripe.SignatureVerificationError as exc:
            raise WebhookSignatureInvalid("The Stripe-Signature header does not match the payload.") from exc
        except ValueError as exc:
            raise WebhookSignatureInvalid("The payload is not a Stripe event.") from exc
        if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
            raise WebhookSignatureInvalid("The payload is not a Stripe event.")
        return event

    @staticmethod
    def event_charge_outcome(event: dict) -> ChargeResult | None:
        """The final outcome of a charge that an event reports, or None.

        ``payment_intent.payment_failed`` with ``authentication_required`` is not
        final: it is how Stripe reports an off-session charge that needs the
        customer for 3-D Secure, which we already hold as requires_action."""
        obj = (event.get("data") or {}).get("object") or {}
        if obj.get("object") != "payment_intent" or not obj.get("id"):
            return None
        if event["type"] == "payment_intent.succeeded":
            return ChargeResult(status="succeeded", ref=obj["id"])
        if event["type"] == "payment_intent.payment_failed":
            error = obj.get("last_payment_error") or {}
            if error.get("code") == "authentication_required":
                return None
            return ChargeResult(status="failed", ref=obj["id"], failure_code=_failure_code(error))
        return None
