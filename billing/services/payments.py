"""Collecting money: saved cards, charging an invoice through the gateway,
hosted checkout sessions, 3-D Secure, refunds.

A gateway call is a network call, so it never runs inside a transaction:
an attempt is claimed first (a conditional UPDATE of ``invoice.attempts``
that only one caller wins), the gateway is called with an idempotency key
derived from the invoice id and attempt number, and the outcome is recorded,
with its ledger entry and its effect, in one durable transaction. Callers
hold ``customer_billing_lock`` around the whole sequence.

Refunds are durable: the change that makes one due records it (a pending
refund with its idempotency key) in its own transaction; ``refund_send``
calls the gateway after the commit and records the outcome. A call that
fails leaves the refund pending, and the billing cycle (``refunds_retry_due``)
sends it again with the same key, so the gateway refunds once: after a growing
wait (REFUND_RETRY_DELAYS_SECONDS), and after REFUND_MAX_ATTEMPTS failed calls
no more until staff say so (refund.failed; the admin's "Retry now").
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from billing.errors import Conflict, NotFound, ValidationFailed
from billing.gateways import ChargeResult, GatewayError, gateway_get
from billing.locks import customer_billing_lock, lock_customer, lock_invoice
from billing.models import CheckoutSession, Customer, Invoice, Payment, PaymentMethod, Subscription
from billing.services.audit import audit_record
from billing.services.events import event_emit
from billing.services.fulfilment import ActivationRefused, invoice_paid_apply, subscription_activate
from billing.services.invoices import (
    payment_record,
    payment_settle,
    refund_intent_record,
    refund_settle,
    unapplied_charge_record,
)

logger = logging.getLogger(__name__)


@dataclass
class Collection:
    """The outcome of one attempt to collect an invoice."""

    status: str  # succeeded | failed | requires_action | no_payment_method | not_due
    payment: Payment | None = None
    subscription: Subscription | None = None
    failure_code: str = ""
    refund: Payment | None = None  # a refund recorded pending: the caller sends it after commit (refund_send)


def customer_gateway_ref(customer: Customer) -> str:
    return customer.gateway_ref


def payment_method_default(customer: Customer) -> PaymentMethod | None:
    return PaymentMethod.objects.filter(customer=customer, is_default=True).first()


def payment_method_attach(*, customer: Customer, payment_method: str, now: datetime) -> PaymentMethod:
    """Save a card at the gateway and make it the customer's default.
    Raises ValidationFailed (unknown card), GatewayError."""
    gateway = gateway_get()
    ref = gateway_customer_ensure(customer=customer, now=now)
    # One key per card saved (cards are never deleted): a retry replays, a later save of the same card does not.
    # The card is part of the key: an attempt the gateway refused (a declined or unknown card) saves
    # nothing, so the next card would get the same count, and the gateway would refuse a key it has
    # seen with other parameters for a day. (Stripe's ids are short; a long one is hashed to keep
    # the key within Stripe's 255 characters.)
    card_key = payment_method if len(payment_method) <= 64 else hashlib.sha256(payment_method.encode()).hexdigest()
    key = f"{customer.pk}:pm:{PaymentMethod.objects.filter(customer=customer).count() + 1}:{card_key}"
    card = gateway.payment_method_attach(customer_ref=ref, payment_method=payment_method, idempotency_key=key)
    with transaction.atomic():
        lock_customer(pk=customer.pk)
        PaymentMethod.objects.filter(customer=customer, is_default=True).update(is_default=False)
        return PaymentMethod.objects.create(
            customer=customer, gateway=gateway.name, gateway_id=card.gateway_id, brand=card.brand, last4=card.last4,
            is_default=True, created_at=now,
        )


def gateway_customer_ensure(*, customer: Customer, now: datetime) -> str:
    """The gateway's id for the customer, made once (a gateway without customers answers "")."""
    gateway = gateway_get()
    ensure = getattr(gateway, "customer_ensure", None)
    if ensure is None:
        return ""
    ref = customer_gateway_ref(customer)
    if ref:
        return ref
    ref = ensure(customer_id=customer.pk, email=customer.email, name=customer.name)
    Customer.objects.filter(pk=customer.pk, gateway_ref="").update(gateway_ref=ref)
    customer.refresh_from_db(fields=["gateway_ref"])
    return customer.gateway_ref


def setup_intent_create(*, customer: Customer, now: datetime) -> str:
    """A SetupIntent for the customer to save a card with Stripe.js; returns its client secret.

    One per call, under a random idempotency key: a SetupIntent is one attempt to save a
    card and cannot be confirmed twice, so a key that repeats across page views (per
    customer, per link, per card saved) would hand a reloaded page an intent that was
    already confirmed, or canceled by a declined card, and its form could never succeed.
    The key still covers what it is for, the library's own retries of this one call. The
    cost is an unconfirmed SetupIntent per page view, which holds no card and moves no money.
    Raises Conflict (the gateway saves no cards this way), GatewayError."""
    gateway = gateway_get()
    create = getattr(gateway, "setup_intent_create", None)
    if create is None:
        raise Conflict(f"The {gateway.name} gateway does not save cards with a SetupIntent.")
    ref = gateway_customer_ensure(customer=customer, now=now)
    return create(customer_ref=ref, idempotency_key=f"{customer.pk}:seti:{secrets.token_hex(16)}")


def invoice_collect(*, invoice: Invoice, now: datetime, payment_method: PaymentMethod | None = None) -> Collection:
    """Charge an open invoice once with the customer's default card (or the one given).

    Raises nothing for a declined card: the outcome is in the result. Two
    concurrent callers cannot both charge: only one wins the attempt claim.
    """
    pm = payment_method or payment_method_default(invoice.customer)
    if pm is None:
        return Collection(status="no_payment_method")
    attempt = invoice.attempts + 1
    # An attempt claimed before but never recorded (the process died during the gateway
    # call, or the call raised) has an unknown outcome: repeat it with the same key, so
    # the gateway answers what it did then instead of charging a second time.
    previous = f"{invoice.pk}:charge:{invoice.attempts}"
    unsettled = invoice.attempts > 0 and not Payment.objects.filter(idempotency_key=previous).exists()
    claimed = Invoice.objects.filter(pk=invoice.pk, status=Invoice.Status.OPEN, attempts=invoice.attempts).update(attempts=attempt)
    if not claimed:
        return Collection(status="not_due")
    invoice.attempts = attempt
    key = previous if unsettled else f"{invoice.pk}:charge:{attempt}"
    gateway = gateway_get(pm.gateway)
    result: ChargeResult = gateway.charge(
        customer_ref=customer_gateway_ref(invoice.customer), payment_method=pm.gateway_id, amount=invoice.total,
        currency=invoice.currency, idempotency_key=key, description=f"Invoice {invoice.number}",
    )
    refused = refund = None
    with transaction.atomic(durable=True):
        locked = lock_invoice(pk=invoice.pk)
        if locked.status != Invoice.Status.OPEN:
            return Collection(status="not_due")
        payment = payment_record(invoice=locked, status=result.status, gateway=gateway.name, ref=result.ref,
                                 idempotency_key=key, failure_code=result.failure_code, now=now)
        sub = None
        if result.status == "succeeded":
            sub, refused = _apply_paid(locked, now)
            if refused is not None:
                refund = invoice_refund_due(invoice=locked, amount=locked.amount_paid, now=now, reason="activation_refused")
    invoice.refresh_from_db()
    if refused is not None:
        refund_send(refund=refund, now=now)
        return Collection(status="refunded", payment=payment, subscription=refused, failure_code="slot_taken", refund=refund)
    return Collection(status=result.status, payment=payment, subscription=sub, failure_code=result.failure_code)


def _apply_paid(invoice: Invoice, now: datetime):
    """(subscription, None) after applying a paid invoice, or (None, the
    subscription that could not start) when its activation was refused."""
    from rewards.services import referral_invoice_paid  # the rewards app builds on billing, not the reverse

    try:
        with transaction.atomic():
            sub = invoice_paid_apply(invoice=invoice, now=now)
            # Only a payment that stands rewards a referral: after the activation, so a
            # paid checkout refunded because its slot was taken gives nothing, and a
            # coupon reward finds the subscription just paid for.
            invoice.refresh_from_db(fields=["amount_paid"])
            referral_invoice_paid(invoice=invoice, now=now)
            return sub, None
    except ActivationRefused as refused:
        Subscription.objects.filter(pk=refused.subscription.pk).update(
            status=Subscription.Status.EXPIRED, ended_at=now, updated_at=now)
        return None, refused.subscription


def checkout_create(*, customer: Customer, now: datetime, invoice: Invoice | None = None,
                    subscription: Subscription | None = None, payment: Payment | None = None,
                    success_url: str = "", cancel_url: str = "") -> CheckoutSession:
    """A hosted page to pay ``invoice`` (or, with no invoice, to save a card and
    start ``subscription``'s trial); with ``payment``, to complete its 3-D Secure."""
    return CheckoutSession.objects.create(
        customer=customer, invoice=invoice, subscription=subscription, payment=payment, success_url=success_url,
        cancel_url=cancel_url, expires_at=now + timedelta(seconds=settings.BILLING_CHECKOUT_TTL_SECONDS), created_at=now,
    )


def checkout_url(session: CheckoutSession) -> str:
    return f"{settings.PUBLIC_BASE_URL}/checkout/{session.pk}/"


def _open_session(session_id: str, now: datetime) -> CheckoutSession:
    session = CheckoutSession.objects.select_related("invoice", "customer", "subscription", "payment").filter(pk=session_id).first()
    if session is None:
        raise NotFound("checkout session", session_id)
    if session.status != CheckoutSession.Status.OPEN:
        raise Conflict("This checkout is finished.", details={"status": session.status})
    if session.expires_at <= now:
        raise Conflict("This checkout has expired.", details={"status": "expired"})
    return session


def checkout_pay(*, session_id: str, payment_method: str, now: datetime) -> Collection:
    """Pay a checkout with a card (its gateway payment-method id): save it as the
    default and charge the invoice, or, for a trial, start the trial.
    Raises NotFound, Conflict (finished or expired), ValidationFailed (card)."""
    session = _open_session(session_id, now)
    with customer_billing_lock(customer_id=session.customer_id):
        session = _open_session(session_id, now)
        pm = payment_method_attach(customer=session.customer, payment_method=payment_method, now=now)
        if session.invoice is None:
            with transaction.atomic(durable=True):
                sub = Subscription.objects.select_for_update().get(pk=session.subscription_id)
                if sub.status == Subscription.Status.INCOMPLETE:
                    subscription_activate(sub=sub, now=now, trial_days=sub.version.free_trial_days)
                _session_close(session, now)
            return Collection(status="succeeded", subscription=sub)
        result = invoice_collect(invoice=session.invoice, now=now, payment_method=pm)
        with transaction.atomic(durable=True):
            if result.status == "succeeded":
                _session_close(session, now)
            elif result.status == "requires_action":
                CheckoutSession.objects.filter(pk=session.pk).update(payment=result.payment)
        return result


def checkout_authentication(*, session_id: str, now: datetime):
    """What the customer's browser needs to finish the 3-D Secure of the checkout's waiting
    payment on-session (with Stripe: the PaymentIntent's client secret for Stripe.js's
    ``confirmCardPayment``, see StripeGateway.payment_intent_client_secret), asked of the
    payment's gateway by its reference each time: nothing is stored. The outcome is then
    settled by ``checkout_confirm``, which reads it from the gateway.
    Raises NotFound, Conflict (finished, expired, nothing waits, or the gateway has no such
    step), GatewayError."""
    session = _open_session(session_id, now)
    payment = session.payment
    if payment is None or payment.status != Payment.Status.REQUIRES_ACTION:
        raise Conflict("Nothing waits for 3-D Secure here.", details={"checkout": session_id})
    secret = getattr(gateway_get(payment.gateway), "payment_intent_client_secret", None)
    if secret is None:
        raise Conflict(f"The {payment.gateway} gateway does not authenticate payments in the browser.")
    return secret(ref=payment.gateway_ref)


def checkout_confirm(*, session_id: str, succeed: bool, now: datetime) -> Collection:
    """Complete (or fail) the 3-D Secure step of a checkout's waiting payment."""
    session = _open_session(session_id, now)
    if session.payment is None or session.payment.status != Payment.Status.REQUIRES_ACTION:
        raise Conflict("Nothing waits for 3-D Secure here.", details={"checkout": session_id})
    with customer_billing_lock(customer_id=session.customer_id):
        payment = session.payment
        result = gateway_get(payment.gateway).confirm(ref=payment.gateway_ref, succeed=succeed)
        if result.status == "requires_action":  # a real gateway: the customer has not finished yet
            raise Conflict("The payment still waits for authentication.", details={"payment": payment.pk})
        with transaction.atomic(durable=True):
            invoice = lock_invoice(pk=payment.invoice_id)
            fresh = Payment.objects.select_for_update().get(pk=payment.pk)
            if fresh.status != Payment.Status.REQUIRES_ACTION or invoice.status != Invoice.Status.OPEN:
                raise Conflict("This payment is settled.", details={"payment": payment.pk})
            payment_settle(payment=fresh, status=result.status, failure_code=result.failure_code, now=now)
            sub = refused = refund = None
            if result.status == "succeeded":
                sub, refused = _apply_paid(invoice, now)
                _session_close(session, now)
                if refused is not None:
                    refund = invoice_refund_due(invoice=invoice, amount=invoice.amount_paid, now=now,
                                                reason="activation_refused")
            else:
                CheckoutSession.objects.filter(pk=session.pk).update(payment=None)
        if refused is not None:
            refund_send(refund=refund, now=now)
            return Collection(status="refunded", payment=fresh, subscription=refused, failure_code="slot_taken",
                              refund=refund)
        return Collection(status=result.status, payment=fresh, subscription=sub, failure_code=result.failure_code)


def payment_settle_external(*, gateway: str, ref: str, status: str, failure_code: str = "",
                            now: datetime) -> Collection | None:
    """Settle the charge that waited for the customer (3-D Secure) when the
    gateway reports its final outcome (a webhook): post the payment, do what
    the invoice was for, and close (or reopen) the checkout that waited on it.

    Joins the caller's transaction; the caller holds the customer's billing
    lock. Returns None when no charge waits under ``ref`` (settled already,
    by ``checkout_confirm`` or an earlier event, or not ours).

    The status is "refund_due", with a pending refund in ``refund`` that the
    caller sends after commit (``refund_send``), when the paid invoice's
    subscription cannot start (the customer took another plan of its slot
    meanwhile), and when the invoice is no longer open (its checkout expired
    and voided it, or it was paid another way): the money the gateway took is
    then recorded as an unapplied charge (DR 1000 / CR 2100) and all of it is
    refunded, so it is never lost. A failure for such an invoice just fails
    the waiting charge."""
    if status not in (Payment.Status.SUCCEEDED, Payment.Status.FAILED) or not ref:
        return None
    waiting = Payment.objects.filter(gateway=gateway, gateway_ref=ref, kind=Payment.Kind.CHARGE,
                                     status=Payment.Status.REQUIRES_ACTION).first()
    if waiting is None:
        return None
    invoice = lock_invoice(pk=waiting.invoice_id)
    payment = Payment.objects.select_for_update().get(pk=waiting.pk)
    if payment.status != Payment.Status.REQUIRES_ACTION:
        return None
    payment.invoice = invoice
    if invoice.status != Invoice.Status.OPEN:
        CheckoutSession.objects.filter(payment=payment, status=CheckoutSession.Status.OPEN).update(payment=None)
        if status != Payment.Status.SUCCEEDED:
            payment_settle(payment=payment, status=status, failure_code=failure_code, now=now)
            return Collection(status=status, payment=payment, failure_code=failure_code)
        unapplied_charge_record(payment=payment, now=now)
        refund = refund_intent_record(invoice=invoice, charge=payment, amount=payment.amount,
                                      reason=f"invoice_{invoice.status}", now=now)
        return Collection(status="refund_due", payment=payment, failure_code=f"invoice_{invoice.status}", refund=refund)
    payment_settle(payment=payment, status=status, failure_code=failure_code, now=now)
    sessions = CheckoutSession.objects.filter(payment=payment, status=CheckoutSession.Status.OPEN)
    if status != Payment.Status.SUCCEEDED:
        sessions.update(payment=None)
        return Collection(status=status, payment=payment, failure_code=failure_code)
    sub, refused = _apply_paid(invoice, now)
    sessions.update(status=CheckoutSession.Status.COMPLETE)
    if refused is not None:
        refund = invoice_refund_due(invoice=invoice, amount=invoice.amount_paid, now=now, reason="activation_refused")
        return Collection(status="refund_due", payment=payment, subscription=refused, failure_code="slot_taken",
                          refund=refund)
    return Collection(status=status, payment=payment, subscription=sub)


def _session_close(session: CheckoutSession, now: datetime) -> None:
    CheckoutSession.objects.filter(pk=session.pk).update(status=CheckoutSession.Status.COMPLETE)
    session.status = CheckoutSession.Status.COMPLETE


def invoice_refund_due(*, invoice: Invoice, amount: int, now: datetime, reason: str) -> Payment | None:
    """Record, in the caller's transaction, a refund of ``amount`` of a paid
    invoice to the card it was paid with: a pending refund, sent after the
    commit with ``refund_send``. None for nothing to refund. Raises Conflict
    (no payment, or more than is left to refund)."""
    if amount <= 0:
        return None
    locked = lock_invoice(pk=invoice.pk)
    charge = locked.payments.filter(kind=Payment.Kind.CHARGE, status=Payment.Status.SUCCEEDED, unapplied=False).first()
    if charge is None:
        raise Conflict("The invoice has no payment to refund.", details={"invoice": invoice.pk})
    return refund_intent_record(invoice=locked, charge=charge, amount=amount, reason=reason, now=now)


def refund_retry_delay(attempts: int) -> timedelta:
    """The wait after failed attempt ``attempts`` (1, 2, …) of a refund; the last
    of REFUND_RETRY_DELAYS_SECONDS repeats."""
    delays = settings.REFUND_RETRY_DELAYS_SECONDS
    return timedelta(seconds=delays[min(attempts, len(delays)) - 1])


def refund_send(*, refund: Payment, now: datetime) -> Payment:
    """Ask the gateway to make a pending refund that is due, with the refund's
    own key, and record the outcome (its ledger entry, payment.refunded). Joins
    no transaction: call it after the refund's commit; callers hold
    ``customer_billing_lock``.

    The attempt is claimed first (a conditional UPDATE that counts it and moves
    ``next_attempt_at`` on by the backoff), so a crash during the call cannot
    make the cycle hammer the gateway, and two senders cannot both call. A
    gateway error leaves the refund pending with the reason in ``failure_code``;
    after REFUND_MAX_ATTEMPTS failed calls it is no longer due (``next_attempt_at``
    null), and refund.failed and an audit entry tell staff (the admin's "Retry
    now" makes it due again). A refund not due, or recorded meanwhile by another
    sender, is returned as it is, unsent."""
    attempt = refund.attempts + 1
    claimed = Payment.objects.filter(
        pk=refund.pk, kind=Payment.Kind.REFUND, status=Payment.Status.PENDING, attempts=refund.attempts,
        next_attempt_at__lte=now,
    ).update(attempts=attempt, next_attempt_at=now + refund_retry_delay(attempt))
    if not claimed:
        return refund
    refund.attempts, refund.next_attempt_at = attempt, now + refund_retry_delay(attempt)
    charge = Payment.objects.get(pk=refund.refund_of_id)
    gateway = gateway_get(refund.gateway)
    try:
        ref = gateway.refund(ref=charge.gateway_ref, amount=refund.amount, idempotency_key=refund.idempotency_key)
    except GatewayError as exc:
        details = exc.details if isinstance(exc.details, dict) else {}
        code = str(details.get("error") or exc.code)[:64]
        logger.warning("refund %s (%s) attempt %d failed at the gateway, left pending: %s",
                       refund.pk, refund.idempotency_key, attempt, exc)
        return _refund_attempt_failed(refund=refund, code=code, now=now)
    with transaction.atomic(durable=True):
        invoice = lock_invoice(pk=refund.invoice_id)
        fresh = Payment.objects.select_for_update().get(pk=refund.pk)
        if fresh.status != Payment.Status.PENDING:
            return fresh
        return refund_settle(refund=fresh, invoice=invoice, ref=ref, now=now)


def _refund_attempt_failed(*, refund: Payment, code: str, now: datetime) -> Payment:
    """Record why the claimed attempt failed; after the last allowed one, stop
    retrying: the refund stays pending (the money is still owed; nothing is
    posted until the gateway makes it) and is flagged for staff."""
    gave_up = refund.attempts >= settings.REFUND_MAX_ATTEMPTS
    changes = {"failure_code": code, **({"next_attempt_at": None} if gave_up else {})}
    with transaction.atomic(durable=True):
        mine = Payment.objects.filter(pk=refund.pk, status=Payment.Status.PENDING, attempts=refund.attempts)
        if not mine.update(**changes):
            return refund  # made or claimed again meanwhile
        refund.failure_code = code
        if gave_up:
            refund.next_attempt_at = None
            data = {"invoiceId": refund.invoice_id, "paymentId": refund.pk, "chargeId": refund.refund_of_id,
                    "amount": refund.amount, "currency": refund.currency, "reason": refund.reason,
                    "attempts": refund.attempts, "failureCode": code}
            event_emit(type="refund.failed", customer_id=refund.customer_id, data=data, now=now)
            audit_record(actor_type="system", actor_id="refunds", action="refund.retries_exhausted",
                         target_type="payment", target_id=refund.pk, data=data, now=now)
            logger.error("refund %s failed %d times; no longer retried, needs staff attention",
                         refund.pk, refund.attempts)
    return refund


def refund_retry_now(*, refund_id: str, now: datetime) -> Payment:
    """Make a pending refund due at once (staff's "Retry now", typically after
    its retries ran out): the next cycle run sends it. Its attempts keep
    counting, so if that call fails too it is flagged again at once.
    Raises NotFound, Conflict (not a pending refund)."""
    refund = Payment.objects.filter(pk=refund_id, kind=Payment.Kind.REFUND).first()
    if refund is None:
        raise NotFound("refund", refund_id)
    if not Payment.objects.filter(pk=refund_id, status=Payment.Status.PENDING).update(next_attempt_at=now):
        raise Conflict("Only a pending refund can be retried.", details={"refund": refund_id, "status": refund.status})
    refund.refresh_from_db()
    return refund


def invoice_refund(*, invoice: Invoice, amount: int, now: datetime, reason: str) -> Payment | None:
    """Refund ``amount`` of a paid invoice now: record it pending, then send it
    (``invoice_refund_due`` + ``refund_send``). Joins no transaction. The
    result may still be pending (the gateway failed; the billing cycle retries)."""
    with transaction.atomic(durable=True):
        refund = invoice_refund_due(invoice=invoice, amount=amount, now=now, reason=reason)
    return refund_send(refund=refund, now=now) if refund is not None else None


def card_number_payment_method(number: str) -> str:
    """The test gateway's payment method for a test card number typed on the checkout page."""
    from billing.gateways.test import card_number_to_payment_method

    pm = card_number_to_payment_method(number)
    if pm is None:
        raise ValidationFailed("cardNumber", "use a test card: 4242 4242 4242 4242, 4000 0000 0000 0002 or 4000 0027 6000 3184")
    return pm

