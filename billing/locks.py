"""Every row lock and advisory-lock key of the service lives here.

Rules: lock rows in primary-key order, parent before child, then re-check
state on the locked row. On the hot path prefer one conditional UPDATE.
"""

from __future__ import annotations

from contextlib import contextmanager

from django.db import connection

from billing.models import (
    Balance, BalanceLock, Coupon, Customer, Invoice, Product, Subscription, WebhookDelivery, WebhookEndpoint,
)


def lock_customer(*, pk: int) -> Customer:
    """The live customer row, locked FOR UPDATE (raises Customer.DoesNotExist)."""
    return Customer.objects.select_for_update().get(pk=pk, deleted_at__isnull=True)


def lock_product(*, pk: str) -> Product:
    """The product row, locked FOR UPDATE. Writers of a product's versions and
    anything that subscribes to its current version take this lock, so a
    version cannot change under a new subscriber."""
    return Product.objects.select_for_update().get(pk=pk)


def lock_balance(*, pk: int | None = None, **lookup) -> Balance:
    """One balance row FOR UPDATE, by pk or by (customer, feature, entity).

    Every writer of a balance that is not a single conditional UPDATE takes
    this lock first; the hot path's conditional UPDATE takes the same row
    lock implicitly, so the two serialise."""
    qs = Balance.objects.select_for_update()
    return qs.get(pk=pk) if pk is not None else qs.get(**lookup)


def lock_balances(*, pks: list[int]) -> list[Balance]:
    """Several balance rows FOR UPDATE in primary-key order (no deadlocks)."""
    return list(Balance.objects.select_for_update().filter(pk__in=pks).order_by("pk"))


def lock_balance_lock(*, lock_id: str) -> BalanceLock | None:
    return BalanceLock.objects.select_for_update().filter(pk=lock_id).first()


# Advisory-lock namespace of per-customer billing work ("BILL").
CUSTOMER_BILLING_LOCK_CLASS = 0x42494C4C


@contextmanager
def customer_billing_lock(*, customer_id: int):
    """Serialise every billing operation of one customer (subscribe, change,
    cancel, renew, refund, top-up, dunning retry) across processes.

    A PostgreSQL session-level advisory lock, held across the gateway call
    that happens between the operation's transactions, so two operations on
    one customer can never both charge. Re-entrant within one connection. A
    no-op on SQLite, whose writers are serialised by the database file lock.
    """
    if connection.vendor != "postgresql":
        yield
        return
    key = (CUSTOMER_BILLING_LOCK_CLASS, customer_id % 2**31)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", key)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", key)


def lock_subscription(*, pk: str) -> Subscription:
    return Subscription.objects.select_for_update().get(pk=pk)


def lock_invoice(*, pk: str) -> Invoice:
    return Invoice.objects.select_for_update().get(pk=pk)


def lock_coupon(*, pk: str) -> Coupon:
    return Coupon.objects.select_for_update().get(pk=pk)


def lock_credit_entry(*, pk: str):
    """A debit of the credits API (credits.CreditEntry) FOR UPDATE: refunds of one
    debit take it, then the balance row (``lock_balance``), so they add up one
    after the other and never past the debit."""
    from credits.models import CreditEntry  # the credits app builds on billing, not the reverse

    return CreditEntry.objects.select_for_update().get(pk=pk)


def lock_referral_code(*, pk: str):
    """A referral code (rewards.ReferralCode) FOR UPDATE: redemptions of one code
    take it, so its program's per-referrer maximum holds under concurrency."""
    from rewards.models import ReferralCode  # the rewards app builds on billing, not the reverse

    return ReferralCode.objects.select_for_update().get(pk=pk)


def lock_referral_redemption(*, pk: str):
    """A referral redemption FOR UPDATE: whoever gives its rewards takes it and
    re-reads its status, so they are given once."""
    from rewards.models import ReferralRedemption

    return ReferralRedemption.objects.select_for_update().get(pk=pk)


# Webhooks: an endpoint's row lock is always taken BEFORE any lock on its deliveries
# (a SELECT … FOR UPDATE or an UPDATE of a delivery row). Re-enabling and deleting
# lock the endpoint then update its deliveries; recording an attempt and redelivering
# lock the endpoint first too. Taking them the other way round in one path lets
# PostgreSQL deadlock it against another (tests/billing/test_webhooks.py TestLockOrder).
# The claim of an attempt is one UPDATE of the delivery alone (autocommit): it locks
# no endpoint row.


def lock_webhook_endpoint(*, pk: str) -> WebhookEndpoint | None:
    """One webhook endpoint FOR UPDATE (deleted ones too), or None. Take it before
    touching that endpoint's deliveries in the same transaction."""
    return WebhookEndpoint.objects.select_for_update().filter(pk=pk).first()


def lock_webhook_delivery(*, pk: str) -> tuple[WebhookEndpoint, WebhookDelivery] | None:
    """A delivery and its endpoint, the endpoint first (FOR UPDATE), then the
    delivery (FOR NO KEY UPDATE, as an UPDATE of it takes); None when there is no
    such delivery."""
    endpoint_id = WebhookDelivery.objects.filter(pk=pk).values_list("endpoint_id", flat=True).first()
    if endpoint_id is None:
        return None
    endpoint = lock_webhook_endpoint(pk=endpoint_id)  # a delivery never changes endpoint
    return endpoint, WebhookDelivery.objects.select_for_update(no_key=True).get(pk=pk)


def lock_webhook_endpoints_active() -> list[WebhookEndpoint]:
    """Every active, live webhook endpoint FOR UPDATE in primary-key order. The
    fan-out takes these before it claims events, so each endpoint's sequence
    numbers are handed out by one fan-out at a time, in order. The hot path
    never takes them: an event is a plain INSERT."""
    return list(
        WebhookEndpoint.objects.select_for_update()
        .filter(status=WebhookEndpoint.Status.ACTIVE, deleted_at__isnull=True).order_by("pk")
    )
