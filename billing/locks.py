"""Every row lock and advisory-lock key of the service lives here.

Rules: lock rows in primary-key order, parent before child, then re-check
state on the locked row. On the hot path prefer one conditional UPDATE.
"""

from __future__ import annotations

from billing.models import Balance, BalanceLock, Customer, Product


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
