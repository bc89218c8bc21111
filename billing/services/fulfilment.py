"""What a subscription's life changes do to balances, and what a paid invoice
does: activate a subscription, switch plans, grant top-ups, change a quantity.

Every function joins the caller's transaction; the payment that triggers
them is recorded in the same one, so an invoice is never paid without its
effect, nor the effect applied without the payment.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from billing.locks import lock_balance, lock_subscription
from billing.models import (
    BalanceBucket,
    Coupon,
    Customer,
    Invoice,
    Product,
    ProductVersion,
    Subscription,
)
from billing.periods import add_interval
from billing.services.balances import balance_recompute, bucket_add, overage_keep
from billing.services.events import event_emit
from billing.services.grants import subscription_slot, version_grant


class ActivationRefused(Exception):
    """A paid invoice's subscription cannot start (its slot is taken)."""

    def __init__(self, sub: Subscription):
        super().__init__(sub.pk)
        self.subscription = sub


def subscription_event_data(sub: Subscription) -> dict:
    return {
        "subscriptionId": sub.pk, "customerId": sub.customer.external_id, "product": sub.product.slug,
        "status": sub.status, "quantity": sub.quantity,
        "currentPeriodEnd": sub.current_period_end.isoformat() if sub.current_period_end else None,
    }


def subscription_new(*, customer: Customer, product: Product, version: ProductVersion, quantity: int,
                     status: str, now: datetime, coupon=None, coupon_cycles_left=None) -> Subscription:
    """A subscription row priced from the version's recurring price; ``incomplete``
    ones take their slot only when activated."""
    price = version.prices.filter(type="recurring").order_by("position").first()
    return Subscription.objects.create(
        customer=customer, product=product, version=version, status=status, quantity=quantity,
        slot=subscription_slot(product), unit_amount=price.amount if price else 0,
        currency=price.currency if price else "usd", billing_interval=price.billing_interval if price else "",
        coupon=coupon, coupon_cycles_left=coupon_cycles_left, created_at=now, updated_at=now,
    )


def subscription_activate(*, sub: Subscription, now: datetime, period_start: datetime | None = None,
                          trial_days: int | None = None) -> Subscription:
    """Start a subscription's first period (or its trial) and give its
    allowances. Raises IntegrityError (as Conflict at the edge) if the slot is
    taken by now."""
    start = period_start or now
    if trial_days:
        sub.status = Subscription.Status.TRIALING
        sub.trial_end = start + timedelta(days=trial_days)
        sub.current_period_end = sub.trial_end
    else:
        sub.status = Subscription.Status.ACTIVE
        sub.current_period_end = add_interval(start, sub.billing_interval) if sub.billing_interval else None
    sub.current_period_start = start
    sub.updated_at = now
    sub.save()
    version_grant(customer=sub.customer, product=sub.product, version=sub.version, subscription=sub,
                  quantity=sub.quantity, now=now)
    event_emit(type="subscription.activated", customer_id=sub.customer_id, data=subscription_event_data(sub), now=now)
    return sub


def subscription_end(*, sub: Subscription, status: str, now: datetime, keep_usage_on: set[int] | None = None) -> None:
    """End a subscription now: its plan buckets stop counting. Usage they held
    leaves the balance, except on balances in ``keep_usage_on`` (carried over
    to a new plan)."""
    sub.status = status
    sub.ended_at = now
    sub.canceled_at = sub.canceled_at or now
    sub.updated_at = now
    sub.save(update_fields=["status", "ended_at", "canceled_at", "updated_at"])
    buckets_deactivate(sub=sub, now=now, keep_usage_on=keep_usage_on or set())
    kind = "subscription.expired" if status == Subscription.Status.EXPIRED else "subscription.canceled"
    event_emit(type=kind, customer_id=sub.customer_id, data=subscription_event_data(sub), now=now)


def buckets_deactivate(*, sub: Subscription, now: datetime, keep_usage_on: set[int] = frozenset()) -> dict[int, int]:
    """Switch off the subscription's plan buckets; returns {balance id: unused units}."""
    unused: dict[int, int] = {}
    balance_ids = sorted(set(BalanceBucket.objects.filter(subscription=sub, active=True).values_list("balance_id", flat=True)))
    for balance_id in balance_ids:
        balance = lock_balance(pk=balance_id)
        for bucket in BalanceBucket.objects.filter(subscription=sub, active=True, balance_id=balance_id):
            BalanceBucket.objects.filter(pk=bucket.pk).update(active=False)
            if not bucket.unlimited:
                unused[balance_id] = unused.get(balance_id, 0) + bucket.granted - bucket.consumed
            if balance_id not in keep_usage_on:
                balance.usage -= bucket.consumed
        if balance_id not in keep_usage_on and balance.overage:
            # The period's overage is billed from its record, not carried to the next plan.
            overage_keep(balance=balance, period_start=sub.current_period_start, period_end=now, now=now)
            balance.usage -= balance.overage
        balance_recompute(balance=balance, now=now)
    return unused


def buckets_reactivate(*, sub: Subscription, now: datetime) -> None:
    """Give a resumed subscription its plan buckets back (empty, for a new period)."""
    for balance_id in sorted(set(BalanceBucket.objects.filter(subscription=sub).values_list("balance_id", flat=True))):
        balance = lock_balance(pk=balance_id)
        BalanceBucket.objects.filter(subscription=sub, balance_id=balance_id).update(active=True, consumed=0)
        balance_recompute(balance=balance, now=now)


def plan_quantity_set(*, sub: Subscription, quantity: int, now: datetime) -> None:
    """Scale the subscription's plan allowances to a new quantity."""
    old = sub.quantity
    sub.quantity = quantity
    sub.updated_at = now
    sub.save(update_fields=["quantity", "updated_at"])
    for balance_id in sorted(set(BalanceBucket.objects.filter(subscription=sub, active=True).values_list("balance_id", flat=True))):
        balance = lock_balance(pk=balance_id)
        for bucket in BalanceBucket.objects.filter(subscription=sub, active=True, balance_id=balance_id, unlimited=False):
            per_unit = bucket.granted // old if old else 0
            # Shrinking below what is consumed moves the excess to overage (recompute does it).
            BalanceBucket.objects.filter(pk=bucket.pk).update(granted=per_unit * quantity, consumed=0)
        balance_recompute(balance=balance, now=now)
    event_emit(type="subscription.updated", customer_id=sub.customer_id, data=subscription_event_data(sub), now=now)


def plan_switch(*, old: Subscription, product: Product, version: ProductVersion, quantity: int, now: datetime,
                carry_balances: bool = False, carry_usages: bool = False, carry_features: list[str] | None = None,
                period_start: datetime | None = None, coupon=None, coupon_cycles_left=None) -> Subscription:
    """Replace ``old`` by a subscription to ``product`` that starts a new period now
    (an upgrade) or at ``period_start`` (a downgrade at the period end).

    carryOverUsages: the usage of the old plan's features (all, or the slugs in
    ``carry_features``) stays and counts against the new allowances; without
    it the new plan starts at zero usage. carryOverBalances: what was left of
    the old allowances is added as a grant that expires at the new period end.
    """
    keep: set[int] = set()
    if carry_usages:
        qs = BalanceBucket.objects.filter(subscription=old, active=True)
        if carry_features:
            qs = qs.filter(balance__feature__slug__in=carry_features)
        keep = set(qs.values_list("balance_id", flat=True))
    unused = buckets_deactivate(sub=old, now=now, keep_usage_on=keep)
    old.status = Subscription.Status.CANCELED
    old.ended_at = now
    old.canceled_at = now
    old.scheduled_product = None
    old.updated_at = now
    old.save(update_fields=["status", "ended_at", "canceled_at", "scheduled_product", "updated_at"])
    new = subscription_new(customer=old.customer, product=product, version=version, quantity=quantity,
                           status=Subscription.Status.INCOMPLETE, now=now, coupon=coupon, coupon_cycles_left=coupon_cycles_left)
    subscription_activate(sub=new, now=now, period_start=period_start)
    if carry_balances:
        for balance_id, units in unused.items():
            if units > 0:
                balance = lock_balance(pk=balance_id)
                bucket_add(balance=balance, kind=BalanceBucket.Kind.GRANT, granted=units,
                           expires_at=new.current_period_end, now=now)
    event_emit(type="subscription.updated", customer_id=new.customer_id,
               data={**subscription_event_data(new), "previousSubscriptionId": old.pk, "previousProduct": old.product.slug}, now=now)
    return new


def invoice_paid_apply(*, invoice: Invoice, now: datetime) -> Subscription | None:
    """Do what the paid invoice was for (``invoice.pending_action``). Returns the
    subscription it activated or changed, if any."""
    action = invoice.pending_action or {}
    kind = action.get("type")
    if kind == "activate":
        sub = lock_subscription(pk=action["subscription"])
        if sub.status != Subscription.Status.INCOMPLETE:
            return sub
        taken = Subscription.objects.filter(customer_id=sub.customer_id, slot=sub.slot,
                                            status__in=Subscription.LIVE_STATUSES).exists()
        if taken:
            # Paid, but the customer took another plan of this slot meanwhile:
            # nothing starts, and the caller refunds the invoice.
            sub.status = Subscription.Status.EXPIRED
            sub.ended_at = now
            sub.save(update_fields=["status", "ended_at"])
            raise ActivationRefused(sub)
        return subscription_activate(sub=sub, now=now)
    if kind == "switch":
        old = lock_subscription(pk=action["from"])
        if old.status not in Subscription.LIVE_STATUSES:
            return old
        product = Product.objects.get(pk=action["product"])
        version = ProductVersion.objects.get(pk=action["version"])
        coupon = Coupon.objects.filter(pk=action["coupon"]).first() if action.get("coupon") else None
        new = plan_switch(old=old, product=product, version=version, quantity=action.get("quantity", 1), now=now,
                          carry_balances=action.get("carryOverBalances", False), carry_usages=action.get("carryOverUsages", False),
                          carry_features=action.get("featureIds"), coupon=coupon,
                          coupon_cycles_left=action.get("couponCyclesLeft") if coupon else None)
        Invoice.objects.filter(pk=invoice.pk).update(subscription=new)
        return new
    if kind == "topup":
        product = Product.objects.get(pk=action["product"])
        version = ProductVersion.objects.get(pk=action["version"])
        version_grant(customer=invoice.customer, product=product, version=version, subscription=None,
                      quantity=action.get("quantity", 1), now=now)
        return None
    if kind == "quantity":
        sub = lock_subscription(pk=action["subscription"])
        if sub.status in Subscription.LIVE_STATUSES:
            plan_quantity_set(sub=sub, quantity=action["quantity"], now=now)
        return sub
    if kind == "renewal":
        sub = lock_subscription(pk=action["subscription"])
        if sub.status == Subscription.Status.PAST_DUE:
            Subscription.objects.filter(pk=sub.pk).update(status=Subscription.Status.ACTIVE, updated_at=now)
            sub.status = Subscription.Status.ACTIVE
        return sub
    return None

