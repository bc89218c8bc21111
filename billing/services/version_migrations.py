"""Moving a product version's subscribers to the product's current version
(migrateCustomers).

Each subscription moves in a transaction of its own, under its customer's
billing lock and the product's row lock (so ``product_update`` cannot rewrite
the target version in place while it gains subscribers), and is re-read on
its locked row: a second call, or two at once, move nothing twice.

What moving does, for a live (trialing, active, past due) subscription:

- its plan buckets of the old version are switched off, and a bucket per
  feature of the new version is granted for the same period (``version_grant``);
- usage carries over: on every balance whose feature the new version still
  grants, the usage stays and counts against the new allowance; a feature the
  new version drops ends as it does on a cancel (its period's overage is kept
  for billing and the usage leaves the balance);
- the price snapshot (``unit_amount``, currency, interval) becomes the new
  version's recurring price. Nothing is charged or refunded now: renewals bill
  the subscription's version, so the new price applies from the next period.

Resume (``buckets_reactivate``) switches every bucket of a subscription back
on, so a subscription must hold only buckets of its own version: the old
version's buckets, switched off, are deleted (they count for nothing; usage
history lives in UsageEvent). A paused subscription, whose buckets are all
switched off, gets switched-off buckets of the new version for its resume.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from billing.errors import NotFound, ValidationFailed
from billing.locks import customer_billing_lock, lock_balances, lock_product, lock_subscription
from billing.models import BalanceBucket, Product, ProductVersion, Subscription
from billing.services.events import event_emit
from billing.services.fulfilment import buckets_deactivate, subscription_event_data
from billing.services.grants import version_grant


def version_subscribers_migrate(*, product: Product, from_version_id: str, now: datetime) -> int:
    """Move every live subscription on ``from_version_id`` to the product's
    current version; returns how many moved (0 when none is left).

    Raises NotFound (no such version), ValidationFailed on ``fromVersionId``
    (a version of another product, or the current version itself, or a
    current version that is one-off and so takes no subscriptions).
    """
    source = ProductVersion.objects.filter(pk=from_version_id).first()
    if source is None:
        raise NotFound("version", from_version_id)
    if source.product_id != product.pk:
        raise ValidationFailed("fromVersionId", f"is a version of another product, not of {product.slug!r}")
    if source.pk == product.current_version_id:
        raise ValidationFailed("fromVersionId", "is the product's current version; there is nothing newer to move to")
    if product.current_version.prices.filter(type="one_off").exists():
        raise ValidationFailed("fromVersionId", "the current version is a one-off purchase and takes no subscriptions")
    due = (
        Subscription.objects.filter(version=source, status__in=Subscription.LIVE_STATUSES)
        .order_by("customer_id", "id")
        .values_list("id", "customer_id")
    )
    migrated = 0
    for sub_id, customer_id in list(due):
        with customer_billing_lock(customer_id=customer_id):
            with transaction.atomic(durable=True):
                target = lock_product(pk=product.pk).current_version
                sub = lock_subscription(pk=sub_id)
                if sub.version_id != source.pk or sub.status not in Subscription.LIVE_STATUSES:
                    continue  # moved or ended meanwhile
                subscription_version_move(sub=sub, version=target, now=now)
                migrated += 1
    return migrated


def subscription_version_move(*, sub: Subscription, version: ProductVersion, now: datetime) -> Subscription:
    """Put one locked subscription on ``version`` of its product (see the module
    docstring). Joins the caller's transaction."""
    previous = sub.version
    old = list(BalanceBucket.objects.filter(subscription=sub).select_related("balance").order_by("pk"))
    lock_balances(pks=sorted({b.balance_id for b in old}))
    if sub.status == Subscription.Status.PAUSED:
        # Its buckets are all switched off already; the new ones are too, for resume.
        _grant(sub, version, now)
        buckets_deactivate(sub=sub, now=now, keep_usage_on=_active_balances(sub))
    else:
        granted_features = set(version.features.values_list("feature_id", flat=True))
        keep = {b.balance_id for b in old if b.active and b.balance.feature_id in granted_features}
        buckets_deactivate(sub=sub, now=now, keep_usage_on=keep)
        _grant(sub, version, now)
    # Resume switches on every bucket of a subscription: the old version's must go.
    # Switched off, they count for nothing (usage has moved to the new buckets).
    BalanceBucket.objects.filter(pk__in=[b.pk for b in old], active=False).delete()
    price = version.prices.filter(type="recurring").order_by("position").first()
    sub.version = version
    if price is not None:
        sub.unit_amount, sub.currency, sub.billing_interval = price.amount, price.currency, price.billing_interval
    else:  # a free version: periods keep rolling, renewals bill nothing
        sub.unit_amount = 0
    sub.updated_at = now
    sub.save(update_fields=["version", "unit_amount", "currency", "billing_interval", "updated_at"])
    event_emit(
        type="subscription.updated",
        customer_id=sub.customer_id,
        data={**subscription_event_data(sub), "versionId": version.pk, "version": version.version,
              "previousVersionId": previous.pk, "previousVersion": previous.version},
        now=now,
    )
    return sub


def _grant(sub: Subscription, version: ProductVersion, now: datetime) -> None:
    version_grant(customer=sub.customer, product=sub.product, version=version, subscription=sub,
                  quantity=sub.quantity, now=now)


def _active_balances(sub: Subscription) -> set[int]:
    return set(BalanceBucket.objects.filter(subscription=sub, active=True).values_list("balance_id", flat=True))
