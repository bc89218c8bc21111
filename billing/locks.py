"""Every row lock and advisory-lock key of the service lives here.

Rules: lock rows in primary-key order, parent before child, then re-check
state on the locked row. On the hot path prefer one conditional UPDATE.
"""

from __future__ import annotations

from contextlib import contextmanager

from django.db import connection

from billing.models import Balance, BalanceLock, Coupon, Customer, Invoice, Product, Subscription


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
