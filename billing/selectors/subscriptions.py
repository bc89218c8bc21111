"""Reads of subscriptions and invoices."""

from __future__ import annotations

from django.db.models import Q

from billing.errors import NotFound
from billing.models import Customer, Invoice, Subscription


def before_filter(qs, position):
    """Rows after ``position`` = (created_at, id) in (created_at, id) descending order."""
    if position is None:
        return qs
    when, last_id = position
    return qs.filter(Q(created_at__lt=when) | Q(created_at=when, pk__lt=last_id))


def subscription_list(*, status: str | None, customer: Customer | None, before, limit: int) -> list[Subscription]:
    qs = Subscription.objects.select_related("product", "version").order_by("-created_at", "-id")
    if status:
        qs = qs.filter(status=status)
    if customer is not None:
        qs = qs.filter(customer=customer)
    return list(before_filter(qs, before)[:limit])


def invoice_list(*, status: str | None, customer: Customer | None, before, limit: int) -> list[Invoice]:
    qs = Invoice.objects.select_related("customer").prefetch_related("lines").order_by("-created_at", "-id")
    if status:
        qs = qs.filter(status=status)
    if customer is not None:
        qs = qs.filter(customer=customer)
    return list(before_filter(qs, before)[:limit])


def invoice_get(*, invoice_id: str) -> Invoice:
    invoice = Invoice.objects.select_related("customer").prefetch_related("lines").filter(pk=invoice_id).first()
    if invoice is None:
        raise NotFound("invoice", invoice_id)
    return invoice
