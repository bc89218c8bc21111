"""Merchant-facing events, written as outbox rows in the caller's transaction.

``EVENT_TYPES`` is the one list of event types: webhook endpoints subscribe to
these (or ``"*"``), the API refuses others, and a test checks that every
``event_emit(type=...)`` in the code names one of them.
"""

from __future__ import annotations

from datetime import datetime

from billing.models import OutboxEvent

EVENT_TYPES: tuple[str, ...] = (
    "customer.created",
    "customer.deleted",
    "subscription.activated",
    "subscription.updated",
    "subscription.renewed",
    "subscription.canceled",  # ended by a cancellation (now or at period end)
    "subscription.expired",  # ended without a cancellation: a trial without a card, or unpaid renewals
    "invoice.created",
    "invoice.paid",
    "invoice.voided",
    "invoice.uncollectible",
    "payment.succeeded",
    "payment.failed",
    "payment.refunded",
    "refund.failed",  # a refund's retries ran out: still pending (owed), retried only when staff say so
    "entitlement.exhausted",
    "balance.low",
    "lock.expired",
    "referral.rewarded",  # a referral's rewards were given (rewards app)
)


def event_emit(*, type: str, customer_id: int | None, data: dict, now: datetime) -> OutboxEvent:
    """One plain INSERT in the caller's transaction. After that transaction
    commits, a webhook fan-out is enqueued (at most once per transaction, and
    only while some endpoint is active); the beat sweeper catches anything the
    broker missed."""
    from billing.services.webhooks import webhook_dispatch_after_commit

    event = OutboxEvent.objects.create(type=type, customer_id=customer_id, data=data, created_at=now)
    webhook_dispatch_after_commit()
    return event
