from __future__ import annotations

from django.db.models import Prefetch

from billing.errors import NotFound
from billing.models import Customer, Subscription


def _with_subscriptions(qs):
    """Prefetch what the wire form shows: subscriptions (not expired), newest first."""
    subs = (
        Subscription.objects.exclude(status=Subscription.Status.EXPIRED)
        .select_related("product", "version")
        .order_by("-created_at")
    )
    return qs.prefetch_related(Prefetch("subscriptions", queryset=subs, to_attr="shown_subscriptions"))


def customer_get(*, external_id: str) -> Customer:
    """The live customer with this id, subscriptions prefetched. Raises NotFound."""
    customer = _with_subscriptions(Customer.objects.filter(external_id=external_id, deleted_at__isnull=True)).first()
    if customer is None:
        raise NotFound("customer", external_id)
    return customer


def customer_list(*, before_id: int | None, limit: int) -> list[Customer]:
    """Newest first; fetches ``limit`` rows (callers ask one more to see if a page follows)."""
    qs = Customer.objects.filter(deleted_at__isnull=True).order_by("-id")
    if before_id is not None:
        qs = qs.filter(id__lt=before_id)
    return list(_with_subscriptions(qs)[:limit])


def customer_subscriptions(*, customer: Customer) -> list[Subscription]:
    shown = getattr(customer, "shown_subscriptions", None)
    if shown is None:
        return _with_subscriptions(Customer.objects.filter(pk=customer.pk)).get().shown_subscriptions
    return shown
