"""Balances and their buckets: grants, allocation of usage to buckets, resets and expiry.

Invariants kept by every function here (and checked by the tests):
  balance.granted = Σ active bucket.granted
  balance.usage   = Σ bucket.consumed + balance.overage
  balance.overage = max(0, usage - granted)  (0 when unlimited)
Usage fills buckets in deduction order: the bucket that resets or expires
soonest first, top-ups last; give-backs leave overage first, then buckets in
the reverse order.
Every writer of a balance's buckets holds the balance row lock (``lock_balance``,
or the hot path's UPDATE of the balance row) until it commits: the hot path's
one-round-trip deduction (services/entitlements.py) relies on it.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Count, F, IntegerField, Sum, Value, When
from django.db.models.functions import Coalesce

from billing.errors import BillingError
from billing.locks import lock_balance
from billing.models import Balance, BalanceBucket, BalanceLock, Customer, Entity, Feature, OverageRecord
from billing.periods import period_containing
from billing.services.events import event_emit

LOW_BALANCE_FRACTION = 0.1  # balance.low fires when remaining drops below 10 % of granted


def deduction_order(qs):
    """Buckets in the order usage fills them."""
    return qs.annotate(
        _topup=Case(When(kind=BalanceBucket.Kind.TOPUP, then=Value(1)), default=Value(0), output_field=IntegerField()),
        _due=Coalesce("next_reset_at", "expires_at"),
    ).order_by("_topup", F("_due").asc(nulls_last=True), "id")


# ``deduction_order`` in SQL, for statements on billing_balancebucket.
DEDUCTION_ORDER_SQL = (
    "CASE WHEN kind = 'topup' THEN 1 ELSE 0 END, COALESCE(next_reset_at, expires_at) ASC NULLS LAST, id"
)

# The first bucket in deduction order takes all ``n`` units if it has room: one
# statement for the common case.
_FILL_FIRST_SQL = f"""
UPDATE billing_balancebucket SET consumed = consumed + %s
 WHERE id = (SELECT id FROM billing_balancebucket
              WHERE balance_id = %s AND active AND consumed < granted
              ORDER BY {DEDUCTION_ORDER_SQL}
              LIMIT 1)
   AND granted - consumed >= %s
"""


def buckets_consume(*, balance_id: int, amount: int) -> None:
    """Move ``amount`` units into buckets (positive: fill in deduction order;
    negative: give back in reverse order). The caller holds the balance row."""
    if amount == 0:
        return
    qs = BalanceBucket.objects.filter(balance_id=balance_id, active=True)
    if amount > 0:
        with connection.cursor() as cursor:
            cursor.execute(_FILL_FIRST_SQL, [amount, balance_id, amount])
            if cursor.rowcount == 1:
                return
        left = amount
        for bucket in deduction_order(qs.filter(consumed__lt=F("granted"))):
            take = min(left, bucket.granted - bucket.consumed)
            BalanceBucket.objects.filter(pk=bucket.pk).update(consumed=F("consumed") + take)
            left -= take
            if left == 0:
                return
        raise BillingError("bucket allocation ran out of room", code="INTERNAL_INVARIANT", status=500)
    left = -amount
    for bucket in reversed(list(deduction_order(qs.filter(consumed__gt=0)))):
        give = min(left, bucket.consumed)
        BalanceBucket.objects.filter(pk=bucket.pk).update(consumed=F("consumed") - give)
        left -= give
        if left == 0:
            return
    raise BillingError("bucket give-back ran out of usage", code="INTERNAL_INVARIANT", status=500)


def bucket_share(*, usage: int, granted: int, unlimited: bool) -> int:
    """How much of ``usage`` sits in buckets (the rest is overage)."""
    return 0 if unlimited else min(usage, granted)


def balance_recompute(*, balance: Balance, now: datetime) -> Balance:
    """Rebuild granted, unlimited and overage from the active buckets and
    ``balance.usage``, moving usage into or out of buckets so that
    Σ consumed = min(usage, granted). Used after a grant, reset or expiry;
    the caller holds the balance row lock."""
    totals = BalanceBucket.objects.filter(balance_id=balance.pk, active=True).aggregate(
        granted=Coalesce(Sum("granted"), 0),
        consumed=Coalesce(Sum("consumed"), 0),
        unlimited=Coalesce(Sum(Case(When(unlimited=True, then=1), default=0)), 0),
        buckets=Count("id"),
    )
    balance.included = totals["buckets"] > 0
    balance.unlimited = totals["unlimited"] > 0
    balance.granted = totals["granted"]
    target = bucket_share(usage=balance.usage, granted=balance.granted, unlimited=balance.unlimited)
    buckets_consume(balance_id=balance.pk, amount=target - totals["consumed"])
    balance.overage = 0 if balance.unlimited else balance.usage - target
    balance.updated_at = now
    if balance.remaining > low_threshold(balance):
        balance.low_notified = False
    balance.save(update_fields=["included", "unlimited", "granted", "usage", "overage", "updated_at", "low_notified"])
    return balance


def low_threshold(balance: Balance) -> int:
    return int(balance.granted * LOW_BALANCE_FRACTION)


def balance_get_or_create(*, customer: Customer, feature: Feature, entity: Entity | None, now: datetime) -> Balance:
    """The balance row (created empty if missing), locked FOR UPDATE."""
    lookup = {"customer": customer, "feature": feature, "entity": entity}
    balance = Balance.objects.filter(**lookup).first()
    if balance is None:
        try:
            with transaction.atomic():
                Balance.objects.create(**lookup, currency=settings.BILLING_DEFAULT_CURRENCY, updated_at=now)
        except IntegrityError:
            pass  # created concurrently
    return lock_balance(**lookup)


def bucket_add(
    *,
    balance: Balance,
    kind: str,
    granted: int,
    now: datetime,
    unlimited: bool = False,
    subscription=None,
    reset_interval: str = "none",
    period_anchor: datetime | None = None,
    period: tuple[datetime, datetime | None] | None = None,
    expires_at: datetime | None = None,
) -> BalanceBucket:
    """Add a bucket to a locked balance and rebuild its totals. A resetting
    bucket takes ``period`` (start, next reset) as given, or the calendar
    period of ``reset_interval`` counted from ``period_anchor`` that holds now."""
    period_start = next_reset_at = None
    if period is not None:
        period_start, next_reset_at = period
    elif reset_interval not in ("none", "") and period_anchor is not None:
        period_start, next_reset_at = period_containing(period_anchor, reset_interval, now)
    bucket = BalanceBucket.objects.create(
        balance=balance,
        kind=kind,
        granted=granted,
        unlimited=unlimited,
        subscription=subscription,
        reset_interval=reset_interval or "none",
        period_start=period_start,
        next_reset_at=next_reset_at,
        expires_at=expires_at,
        created_at=now,
    )
    balance_recompute(balance=balance, now=now)
    return bucket


def emit_crossings(*, balance: Balance, before: int, now: datetime) -> None:
    """entitlement.exhausted when remaining reaches 0, balance.low when it drops
    below the threshold; each once per crossing (in the caller's transaction)."""
    if balance.unlimited:
        return
    after = balance.remaining
    data = {"customerId": None, "feature": None, "remaining": after, "granted": balance.granted, "usage": balance.usage}
    if before > 0 >= after:
        event_emit(type="entitlement.exhausted", customer_id=balance.customer_id, data=_event_data(balance, data), now=now)
    threshold = low_threshold(balance)
    if before > threshold >= after and after > 0 and not balance.low_notified:
        event_emit(type="balance.low", customer_id=balance.customer_id, data=_event_data(balance, data), now=now)
        Balance.objects.filter(pk=balance.pk).update(low_notified=True)
        balance.low_notified = True


def _event_data(balance: Balance, data: dict) -> dict:
    customer_id, feature_slug, entity_id = (
        Balance.objects.filter(pk=balance.pk).values_list("customer__external_id", "feature__slug", "entity__external_id").get()
    )
    return {**data, "customerId": customer_id, "feature": feature_slug, "entityId": entity_id}


# --- the scheduled work --------------------------------------------------------


def buckets_reset_due(*, now: datetime) -> int:
    """Reset every plan bucket whose period ended by ``now``. Idempotent: a reset
    bucket's next_reset_at moves past ``now``. Overage of the closed period is
    kept as an OverageRecord for billing. Returns the number of buckets reset."""
    done = 0
    due = BalanceBucket.objects.filter(active=True, next_reset_at__lte=now).values_list("balance_id", flat=True).distinct()
    for balance_id in list(due):
        with transaction.atomic(durable=True):
            balance = lock_balance(pk=balance_id)
            buckets = list(BalanceBucket.objects.filter(balance_id=balance_id, active=True, next_reset_at__lte=now))
            if not buckets:
                continue
            closing = min(b.next_reset_at for b in buckets)
            overage_keep(balance=balance, period_start=min((b.period_start for b in buckets if b.period_start), default=None),
                         period_end=closing, now=now)
            balance.usage -= sum(b.consumed for b in buckets) + balance.overage
            balance.overage = 0
            for bucket in buckets:
                start, end = bucket_next_period(bucket, now)
                BalanceBucket.objects.filter(pk=bucket.pk).update(consumed=0, period_start=start, next_reset_at=end)
                done += 1
            balance_recompute(balance=balance, now=now)
    return done


def overage_keep(*, balance: Balance, period_start: datetime | None, period_end: datetime, now: datetime) -> None:
    """Keep a closing period's overage (units beyond the allowance at the
    overage price) as an OverageRecord for the period-end invoice; once per
    balance and period end. The caller holds the balance row."""
    if balance.overage and balance.overage_price is not None and balance.overage_allowed:
        OverageRecord.objects.get_or_create(
            balance=balance,
            period_end=period_end,
            defaults={
                "period_start": period_start,
                "units": balance.overage,
                "unit_price": balance.overage_price,
                "amount": balance.overage * balance.overage_price,
                "currency": balance.currency,
                "created_at": now,
            },
        )


def bucket_next_period(bucket: BalanceBucket, now: datetime) -> tuple[datetime, datetime | None]:
    """The period a reset bucket enters. Calendar intervals count from the
    bucket's first period; billing-period buckets follow their subscription."""
    if bucket.reset_interval == "billing_period":
        sub = bucket.subscription
        if sub is not None and sub.current_period_end and sub.current_period_end > now:
            return sub.current_period_start, sub.current_period_end
        return bucket.next_reset_at, None  # the subscriptions issue renews the period
    anchor = bucket.period_start or bucket.next_reset_at
    return period_containing(anchor, bucket.reset_interval, now)


def grants_expire_due(*, now: datetime) -> int:
    """Deactivate grant buckets past their expiry; their unused units are gone."""
    done = 0
    due = BalanceBucket.objects.filter(active=True, expires_at__lte=now).values_list("balance_id", flat=True).distinct()
    for balance_id in list(due):
        with transaction.atomic(durable=True):
            balance = lock_balance(pk=balance_id)
            for bucket in BalanceBucket.objects.filter(balance_id=balance_id, active=True, expires_at__lte=now):
                BalanceBucket.objects.filter(pk=bucket.pk).update(active=False)
                balance.usage -= bucket.consumed
                done += 1
            balance_recompute(balance=balance, now=now)
    return done


def locks_expire_due(*, now: datetime) -> int:
    """Release every open lock past its expiry and report lock.expired."""
    done = 0
    for lock_id in list(BalanceLock.objects.filter(status=BalanceLock.Status.OPEN, expires_at__lte=now).values_list("id", flat=True)):
        with transaction.atomic(durable=True):
            claimed = BalanceLock.objects.filter(pk=lock_id, status=BalanceLock.Status.OPEN).update(
                status=BalanceLock.Status.EXPIRED, finalized_at=now
            )
            if not claimed:
                continue  # finalized meanwhile
            lock = BalanceLock.objects.select_related("balance").get(pk=lock_id)
            Balance.objects.filter(pk=lock.balance_id).update(reserved=F("reserved") - lock.amount, updated_at=now)
            BalanceLock.objects.filter(pk=lock_id).update(released=lock.amount)
            event_emit(
                type="lock.expired",
                customer_id=lock.balance.customer_id,
                data=_event_data(lock.balance, {"lockId": lock.pk, "released": lock.amount}),
                now=now,
            )
            done += 1
    return done
