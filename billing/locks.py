"""Every row lock and advisory-lock key of the service lives here.

Rules: lock rows in primary-key order, parent before child, then re-check
state on the locked row. On the hot path prefer one conditional UPDATE.
"""

from __future__ import annotations

from billing.models import Customer, Product


def lock_customer(*, pk: int) -> Customer:
    """The live customer row, locked FOR UPDATE (raises Customer.DoesNotExist)."""
    return Customer.objects.select_for_update().get(pk=pk, deleted_at__isnull=True)


def lock_product(*, pk: str) -> Product:
    """The product row, locked FOR UPDATE. Writers of a product's versions and
    anything that subscribes to its current version take this lock, so a
    version cannot change under a new subscriber."""
    return Product.objects.select_for_update().get(pk=pk)
