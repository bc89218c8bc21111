"""Inbound gateway webhooks: each event is stored once and applied once.

The view verifies the signature; this module records the event and applies
what it reports. The record and its effect commit together, so an event
whose processing failed is not stored, and the gateway's retry processes it.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import datetime

from django.db import IntegrityError, transaction

from billing.gateways import gateway_get
from billing.locks import customer_billing_lock
from billing.models import GatewayEvent, Payment
from billing.services.payments import payment_settle_external, refund_send


def gateway_event_receive(*, gateway: str, event: dict, now: datetime) -> bool:
    """Store the (verified) event ``event`` of ``gateway`` and apply it: a final
    outcome of a charge that waited for the customer (3-D Secure) settles that
    payment. Returns False for an event id seen before (nothing is done).

    A refund that the outcome makes due (the subscription could not start,
    or the invoice is no longer open) is recorded pending with the event and
    sent after the commit; if the gateway fails then, the billing cycle sends
    it again (``refunds_retry_due``), so the event is still answered as taken."""
    event_id, event_type = str(event["id"]), str(event["type"])
    if GatewayEvent.objects.filter(gateway=gateway, event_id=event_id).exists():
        return False
    interpret = getattr(gateway_get(gateway), "event_charge_outcome", None)
    outcome = interpret(event) if interpret is not None else None
    customer_id = None
    if outcome is not None and outcome.ref:
        customer_id = (Payment.objects.filter(gateway=gateway, gateway_ref=outcome.ref, kind=Payment.Kind.CHARGE)
                       .values_list("customer_id", flat=True).first())
    lock = customer_billing_lock(customer_id=customer_id) if customer_id is not None else nullcontext()
    with lock:
        with transaction.atomic(durable=True):
            try:
                with transaction.atomic():
                    GatewayEvent.objects.create(gateway=gateway, event_id=event_id, type=event_type, payload=event,
                                                received_at=now)
            except IntegrityError:
                return False  # a concurrent delivery of the same event won
            result = None
            if outcome is not None and customer_id is not None:
                result = payment_settle_external(gateway=gateway, ref=outcome.ref, status=outcome.status,
                                                 failure_code=outcome.failure_code, now=now)
        if result is not None and result.refund is not None:
            refund_send(refund=result.refund, now=now)
    return True
