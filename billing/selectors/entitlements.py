"""Reads of the entitlement engine: the hot-path lookup, balances, aggregates."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Sum
from django.db.models.functions import TruncDay, TruncMonth, TruncWeek

from billing.errors import NotFound
from billing.models import Balance, Customer, Entity, Feature, UsageEvent
from billing.prepared import PreparedStatement


def entity_lookup(*, customer: Customer, entity_id: str) -> Entity:
    entity = Entity.objects.filter(customer=customer, external_id=entity_id, deleted_at__isnull=True).first()
    if entity is None:
        raise NotFound("entity", entity_id)
    return entity


# Balance columns in the model's field order, so a row becomes a Balance with ``Balance.from_db``.
BALANCE_FIELDS = [f.attname for f in Balance._meta.concrete_fields]
BALANCE_COLUMNS = ", ".join(f"b.{f.column}" for f in Balance._meta.concrete_fields)

# The check/track lookup in one statement: one row per live customer with that id
# (none: unknown customer), with its customer-level balance of the feature when it
# has one (NULL columns otherwise). PostgreSQL only; SQLite keeps the ORM queries,
# whose converters it needs for booleans and times.
BALANCE_LOOKUP_SQL = f"""
SELECT c.id AS customer_pk, b.*
  FROM billing_customer c
  LEFT JOIN LATERAL (
       SELECT {BALANCE_COLUMNS} FROM billing_balance b
        WHERE b.customer_id = c.id AND b.entity_id IS NULL
          AND b.feature_id = (SELECT id FROM billing_feature WHERE slug = %(feature)s)
        LIMIT 1  -- keeps the subquery apart, so both index columns are known
  ) b ON true
 WHERE c.external_id = %(customer)s AND c.deleted_at IS NULL
"""

_LOOKUP = PreparedStatement("billing_hot_lookup", BALANCE_LOOKUP_SQL, {"customer": "text", "feature": "text"})


def balance_from_row(values) -> Balance | None:
    """A Balance from the BALANCE_COLUMNS part of a row; None when the columns are NULL."""
    if values[0] is None:
        return None
    return Balance.from_db(connection.alias, BALANCE_FIELDS, values)


def balance_lookup(*, customer_id: str, feature_slug: str, entity_id: str | None = None) -> Balance | None:
    """The balance a check or track acts on, in one query on the common path.

    With an entity: the entity's own balance of a per-entity feature, else the
    customer's. None when the customer has no balance of the feature. Raises
    NotFound for an unknown customer or entity.
    """
    if entity_id is None and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            _LOOKUP.execute(cursor, {"customer": customer_id, "feature": feature_slug})
            row = cursor.fetchone()
        if row is None:
            raise NotFound("customer", customer_id)
        return balance_from_row(row[1:])
    qs = Balance.objects.filter(customer__external_id=customer_id, customer__deleted_at__isnull=True, feature__slug=feature_slug)
    if entity_id is not None:
        own = qs.filter(entity__external_id=entity_id, entity__deleted_at__isnull=True).first()
        if own is not None:
            return own
    balance = qs.filter(entity__isnull=True).first()
    if balance is None or entity_id is not None:
        customer = Customer.objects.filter(external_id=customer_id, deleted_at__isnull=True).first()
        if customer is None:
            raise NotFound("customer", customer_id)
        if entity_id is not None:
            entity_lookup(customer=customer, entity_id=entity_id)
    return balance


def customer_balances(*, customer: Customer, entity: Entity | None = None) -> tuple[dict, dict]:
    """(balances, flags) for the wire form of a customer: metered and seat
    features by slug with {granted, usage, remaining, unlimited, nextResetAt};
    boolean features as flags."""
    balances, flags = {}, {}
    rows = (
        Balance.objects.filter(customer=customer, entity=entity, included=True)
        .select_related("feature")
        .prefetch_related("buckets")
        .order_by("feature__slug")
    )
    for balance in rows:
        if balance.feature.type == Feature.Type.BOOLEAN:
            flags[balance.feature.slug] = True
            continue
        resets = [b.next_reset_at for b in balance.buckets.all() if b.active and b.next_reset_at]
        balances[balance.feature.slug] = {
            "granted": balance.granted,
            "usage": balance.usage,
            "remaining": balance.remaining,
            "unlimited": balance.unlimited,
            "nextResetAt": min(resets) if resets else None,
        }
    return balances, flags


_TRUNC = {"day": TruncDay, "week": TruncWeek, "month": TruncMonth}


def usage_aggregate(*, customer: Customer, feature: Feature, since: datetime, until: datetime, group_by: str) -> tuple[list[dict], int]:
    """Usage per day/week/month over [since, until), empty periods included as 0."""
    rows = (
        UsageEvent.objects.filter(customer=customer, feature=feature, timestamp__gte=since, timestamp__lt=until)
        .annotate(period=_TRUNC[group_by]("timestamp"))
        .values("period")
        .annotate(value=Sum("amount"))
        .order_by("period")
    )
    by_period = {row["period"].date(): row["value"] for row in rows}
    data, cursor = [], _period_start(since, group_by)
    while cursor < until:
        day = cursor.date()
        data.append({"period": day.isoformat(), "value": by_period.get(day, 0)})
        cursor = _period_next(cursor, group_by)
    return data, sum(d["value"] for d in data)


def _period_start(moment: datetime, group_by: str) -> datetime:
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if group_by == "week":
        start -= timedelta(days=start.weekday())
    elif group_by == "month":
        start = start.replace(day=1)
    return start


def _period_next(moment: datetime, group_by: str) -> datetime:
    if group_by == "day":
        return moment + timedelta(days=1)
    if group_by == "week":
        return moment + timedelta(weeks=1)
    return (moment.replace(day=28) + timedelta(days=4)).replace(day=1)
