"""Customers: get-or-create, update, soft delete."""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Q

from billing.errors import Conflict, NotFound
from billing.locks import lock_customer
from billing.models import Customer, Subscription
from billing.services.events import event_emit
from billing.services.grants import auto_enable_products


def customer_event_data(customer: Customer) -> dict:
    return {"customerId": customer.external_id, "name": customer.name, "email": customer.email,
            "metadata": customer.metadata}


def customer_get_or_create(
    *, external_id: str, name: str = "", email: str = "", metadata: dict | None = None, now: datetime
) -> tuple[Customer, bool]:
    """The live customer with this id, or a new one. Returns (customer, created).

    An existing customer is returned unchanged (PATCH changes it). Two racing
    creates of one id make one customer: the loser of the unique index reads
    the winner's row.
    """
    with transaction.atomic(durable=True):
        existing = Customer.objects.filter(external_id=external_id, deleted_at__isnull=True).first()
        if existing is not None:
            return existing, False
        try:
            with transaction.atomic():
                customer = Customer.objects.create(
                    external_id=external_id,
                    name=name,
                    email=email,
                    metadata=metadata or {},
                    created_at=now,
                    updated_at=now,
                )
        except IntegrityError:
            return Customer.objects.get(external_id=external_id, deleted_at__isnull=True), False
        auto_enable_products(customer=customer, now=now)
        event_emit(type="customer.created", customer_id=customer.pk, data=customer_event_data(customer), now=now)
        return customer, True


_UNSET = object()


def customer_update(
    *, customer: Customer, name=_UNSET, email=_UNSET, metadata=_UNSET, now: datetime
) -> Customer:
    """Set the given fields; ``metadata`` replaces the whole object. Raises NotFound."""
    with transaction.atomic(durable=True):
        try:
            locked = lock_customer(pk=customer.pk)
        except Customer.DoesNotExist:
            raise NotFound("customer", customer.external_id) from None
        changed = ["updated_at"]
        for field, value in (("name", name), ("email", email), ("metadata", metadata)):
            if value is not _UNSET:
                setattr(locked, field, value)
                changed.append(field)
        locked.updated_at = now
        locked.save(update_fields=changed)
    return locked


def customer_delete(*, customer: Customer, now: datetime) -> None:
    """Soft-delete: history keeps its subject and the id may be used again.

    Free subscriptions end with the customer; a live paid subscription makes
    it a Conflict (cancel it first). Raises NotFound if already gone.
    """
    with transaction.atomic(durable=True):
        try:
            locked = lock_customer(pk=customer.pk)
        except Customer.DoesNotExist:
            raise NotFound("customer", customer.external_id) from None
        live = Subscription.objects.filter(customer=locked, status__in=Subscription.LIVE_STATUSES)
        paid = live.filter(Q(version__prices__amount__gt=0) | Q(version__prices__tiers__isnull=False)).distinct()
        if paid.exists():
            raise Conflict(
                "The customer has live paid subscriptions; cancel them before deleting the customer.",
                details={"subscriptions": list(paid.values_list("id", flat=True))},
            )
        Subscription.objects.filter(customer=locked, status__in=Subscription.LIVE_STATUSES).update(
            status=Subscription.Status.CANCELED, canceled_at=now
        )
        locked.deleted_at = now
        locked.updated_at = now
        locked.save(update_fields=["deleted_at", "updated_at"])
        event_emit(type="customer.deleted", customer_id=locked.pk, data=customer_event_data(locked), now=now)
