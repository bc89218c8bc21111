"""track/batch: up to 1,000 track events in one transaction, applied set-based.

The result is what the same events sent one by one to ``track`` (in input order)
would give: the same balances, buckets, usage-event rows, balance.low /
entitlement.exhausted outbox rows and replays of repeated idempotency keys;
each event answers its own event id and balance, or its own error.

On PostgreSQL the common case, a positive amount on a customer-level balance
that exists, takes a handful of statements for the whole batch, however many
events it holds:

  1. resolve the (customer, feature) pairs to customer, feature and balance ids;
  2. lock every balance the batch may touch, FOR UPDATE in primary-key order
     (``billing.locks.lock_balances``): the lock every writer of a balance takes,
     so nothing else changes them until the batch commits;
  3. take event ids from the sequence, then insert the usage events with
     ``ON CONFLICT DO NOTHING`` (rows sorted by customer and key, so two batches
     wait for each other's keys in one order): an event whose key another
     request has committed is not inserted and replays that request's event;
  4. walk the events in input order in Python over the locked rows: running
     usage, overage and remaining per balance, each event's answer, and the
     crossings (``emit_crossings``, the one of single ``track``; a crossing is
     at most two outbox rows per balance);
  5. one UPDATE of all balance rows, and one UPDATE that puts each balance's
     new units into its buckets in deduction order (a window over the buckets'
     room: filling buckets with a, then b, is filling them with a + b).

Rare rows go the general path of single ``track``
(``usage_track_in_transaction``), one event at a time in input order, in the
same transaction, each in a savepoint so its error refuses only itself: every
event of a customer that has a negative amount, an entityId, or a
(customer, feature) without a balance row yet in the batch. Taking all of such
a customer's events keeps the order of its events (give-backs clamp at zero
usage, so order matters); customers' balances are disjoint, so the two groups
commute. Their balance rows (entity balances included) are locked with the
others in step 2, so the general path re-locks rows the batch already holds and
lock order stays primary-key order. On SQLite every event takes the general path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Q

from billing.errors import BillingError, NotFound
from billing.locks import lock_balances
from billing.models import Balance, UsageEvent
from billing.services.balances import DEDUCTION_ORDER_SQL, bucket_share, emit_crossings
from billing.services.entitlements import usage_track_in_transaction

MAX_BATCH = 1000


@dataclass(frozen=True)
class TrackEvent:
    """One validated event of a batch (the fields of a track body)."""

    customer: str
    feature: str
    amount: int = 1
    entity_id: str | None = None
    idempotency_key: str | None = None
    properties: dict | None = None
    timestamp: datetime | None = None


@dataclass(frozen=True)
class TrackOutcome:
    """An applied (or replayed) event: its id and the balance right after it."""

    event_id: int
    remaining: int
    usage: int
    replayed: bool = False


_RESOLVE_SQL = """
SELECT p.customer, p.feature, c.id, f.id, b.id
  FROM unnest(%(customers)s::text[], %(features)s::text[]) AS p(customer, feature)
  LEFT JOIN billing_customer c ON c.external_id = p.customer AND c.deleted_at IS NULL
  LEFT JOIN billing_feature f ON f.slug = p.feature
  LEFT JOIN billing_balance b ON b.customer_id = c.id AND b.feature_id = f.id AND b.entity_id IS NULL
"""

_NEXT_IDS_SQL = "SELECT nextval(pg_get_serial_sequence('billing_usageevent', 'id')) FROM generate_series(1, %s)"

_INSERT_EVENTS_SQL = """
INSERT INTO billing_usageevent
       (id, customer_id, feature_id, entity_id, amount, idempotency_key, properties, timestamp, created_at)
SELECT e.id, e.customer_id, e.feature_id, NULL, e.amount, e.idempotency_key, e.properties::jsonb, e.ts, %(now)s
  FROM unnest(%(ids)s::bigint[], %(customer_ids)s::bigint[], %(feature_ids)s::bigint[], %(amounts)s::bigint[],
              %(keys)s::text[], %(properties)s::text[], %(timestamps)s::timestamptz[])
       AS e(id, customer_id, feature_id, amount, idempotency_key, properties, ts)
 ORDER BY e.customer_id, e.idempotency_key
ON CONFLICT DO NOTHING
RETURNING id
"""

_UPDATE_BALANCES_SQL = """
UPDATE billing_balance b
   SET usage = v.usage, overage = v.overage, low_notified = v.low_notified, updated_at = %(now)s
  FROM unnest(%(ids)s::bigint[], %(usages)s::bigint[], %(overages)s::bigint[], %(lows)s::boolean[])
       AS v(id, usage, overage, low_notified)
 WHERE b.id = v.id
"""

# Each balance's new units into its active buckets with room, in deduction order:
# a bucket takes what is left of the units after the room of the buckets before it.
_FILL_BUCKETS_SQL = f"""
WITH units(balance_id, amount) AS (
  SELECT * FROM unnest(%(balance_ids)s::bigint[], %(amounts)s::bigint[])
), room AS (
  SELECT k.id, k.granted - k.consumed AS room, u.amount,
         SUM(k.granted - k.consumed) OVER (PARTITION BY k.balance_id ORDER BY {DEDUCTION_ORDER_SQL}
                                           ROWS UNBOUNDED PRECEDING) - (k.granted - k.consumed) AS before
    FROM billing_balancebucket k JOIN units u ON u.balance_id = k.balance_id
   WHERE k.active AND k.consumed < k.granted
)
UPDATE billing_balancebucket t
   SET consumed = t.consumed + LEAST(r.room, r.amount - r.before)
  FROM room r
 WHERE t.id = r.id AND r.amount > r.before
RETURNING LEAST(r.room, r.amount - r.before)
"""


def usage_track_batch(*, events: list[TrackEvent], now: datetime) -> list[TrackOutcome | BillingError]:
    """Apply ``events`` as ``usage_track`` would one by one, in one transaction;
    one outcome or error (NotFound: customer, feature, entity) per event, in order."""
    results: list[TrackOutcome | BillingError | None] = [None] * len(events)
    with transaction.atomic(durable=True):
        if connection.vendor == "postgresql":
            general = _apply_set_based(events=events, results=results, now=now)
        else:
            general = list(range(len(events)))
        for index in general:
            results[index] = _apply_general(events[index], now=now)
    return results  # type: ignore[return-value]


def _apply_general(event: TrackEvent, *, now: datetime) -> TrackOutcome | BillingError:
    try:
        with transaction.atomic():  # a savepoint: an error refuses this event alone
            result = usage_track_in_transaction(
                customer_id=event.customer, feature_slug=event.feature, amount=event.amount, now=now,
                entity_id=event.entity_id, idempotency_key=event.idempotency_key, properties=event.properties,
                timestamp=event.timestamp,
            )
    except BillingError as exc:
        return exc
    return TrackOutcome(event_id=result.event.pk, remaining=result.balance.remaining, usage=result.balance.usage,
                        replayed=result.replayed)


def _apply_set_based(*, events: list[TrackEvent], results: list, now: datetime) -> list[int]:
    """Apply the common events set-based (filling ``results``); return the indexes
    of the events left for the general path, in input order."""
    pairs = sorted({(e.customer, e.feature) for e in events})
    with connection.cursor() as cursor:
        cursor.execute(_RESOLVE_SQL, {"customers": [p[0] for p in pairs], "features": [p[1] for p in pairs]})
        resolved = {(c, f): (customer_pk, feature_pk, balance_pk) for c, f, customer_pk, feature_pk, balance_pk in cursor}
    customer_pks = {c: r[0] for (c, _), r in resolved.items()}

    general_customers = set()
    for e in events:
        if customer_pks[e.customer] is None:
            continue
        if e.amount < 0 or e.entity_id is not None or resolved[(e.customer, e.feature)][2] is None:
            general_customers.add(e.customer)

    fast: list[int] = []
    general: list[int] = []
    for index, e in enumerate(events):
        if customer_pks[e.customer] is None:
            results[index] = NotFound("customer", e.customer)
        elif e.customer in general_customers:
            general.append(index)
        else:
            fast.append(index)

    # Every balance the batch may write, locked at once in primary-key order.
    pks = {resolved[(events[i].customer, events[i].feature)][2] for i in fast}
    if general_customers:
        slugs = {events[i].feature for i in general}
        pks.update(Balance.objects.filter(customer_id__in=[customer_pks[c] for c in general_customers],
                                          feature__slug__in=slugs).values_list("pk", flat=True))
    balances = {b.pk: b for b in lock_balances(pks=sorted(pks))}
    if fast:
        _apply_locked(events=events, indexes=fast, resolved=resolved, balances=balances, results=results, now=now)
    return general


def _apply_locked(*, events, indexes: list[int], resolved: dict, balances: dict[int, Balance], results: list,
                  now: datetime) -> None:
    # Which event records each key: the first of the batch; the others replay it.
    first_of_key: dict[tuple[int, str], int] = {}
    inserting: list[int] = []
    for index in indexes:
        e = events[index]
        if e.idempotency_key is not None:
            key = (resolved[(e.customer, e.feature)][0], e.idempotency_key)
            if key in first_of_key:
                continue
            first_of_key[key] = index
        inserting.append(index)

    event_ids = dict(zip(inserting, _insert_events(events=events, indexes=inserting, resolved=resolved, now=now)))
    inserted = {i for i, event_id in event_ids.items() if event_id is not None}
    # Keys already recorded by another request (before the batch, or while it waited).
    priors = _prior_events(events=events, indexes=[i for i in inserting if i not in inserted], resolved=resolved)

    added: dict[int, int] = {}  # balance pk -> units put into buckets
    others: dict[tuple, Balance | None] = {}  # balances of prior events outside the batch
    for index in indexes:
        e = events[index]
        customer_pk, feature_pk, balance_pk = resolved[(e.customer, e.feature)]
        first = first_of_key.get((customer_pk, e.idempotency_key), index) if e.idempotency_key is not None else index
        if first in inserted:
            if first == index:
                balance = balances[balance_pk]
                before, share = balance.remaining, bucket_share(usage=balance.usage, granted=balance.granted,
                                                                unlimited=balance.unlimited)
                balance.usage += e.amount
                after_share = bucket_share(usage=balance.usage, granted=balance.granted, unlimited=balance.unlimited)
                balance.overage = balance.usage - after_share if not balance.unlimited else 0
                balance.updated_at = now
                added[balance.pk] = added.get(balance.pk, 0) + after_share - share
                emit_crossings(balance=balance, before=before, now=now)
                results[index] = TrackOutcome(event_id=event_ids[index], remaining=balance.remaining, usage=balance.usage)
            else:
                balance = balances[balance_pk]
                results[index] = TrackOutcome(event_id=event_ids[first], remaining=balance.remaining,
                                              usage=balance.usage, replayed=True)
            continue
        # A replay of an event recorded before: its balance as it stands now.
        prior = priors[(customer_pk, e.idempotency_key)]
        where = (prior.customer_id, prior.feature_id, prior.entity_id)
        balance = next((b for b in balances.values()
                        if (b.customer_id, b.feature_id, b.entity_id) == where), None)
        if balance is None:
            if where not in others:
                others[where] = Balance.objects.filter(customer_id=where[0], feature_id=where[1], entity_id=where[2]).first()
            balance = others[where] or balances[balance_pk]  # as single track's _replay
        results[index] = TrackOutcome(event_id=prior.pk, remaining=balance.remaining, usage=balance.usage, replayed=True)

    touched = [balances[pk] for pk in sorted({resolved[(events[i].customer, events[i].feature)][2] for i in inserted})]
    if not touched:
        return
    with connection.cursor() as cursor:
        cursor.execute(_UPDATE_BALANCES_SQL, {
            "now": now, "ids": [b.pk for b in touched], "usages": [b.usage for b in touched],
            "overages": [b.overage for b in touched], "lows": [b.low_notified for b in touched],
        })
        units = {pk: n for pk, n in added.items() if n}
        if units:
            cursor.execute(_FILL_BUCKETS_SQL, {"balance_ids": list(units), "amounts": list(units.values())})
            if sum(row[0] for row in cursor.fetchall()) != sum(units.values()):
                raise BillingError("bucket allocation ran out of room", code="INTERNAL_INVARIANT", status=500)


def _insert_events(*, events, indexes: list[int], resolved: dict, now: datetime) -> list[int | None]:
    """Insert the usage events of ``indexes``; their ids, None where another request
    already recorded the key."""
    if not indexes:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_IDS_SQL, [len(indexes)])
        ids = sorted(row[0] for row in cursor.fetchall())
        chosen = [events[i] for i in indexes]
        cursor.execute(_INSERT_EVENTS_SQL, {
            "now": now,
            "ids": ids,
            "customer_ids": [resolved[(e.customer, e.feature)][0] for e in chosen],
            "feature_ids": [resolved[(e.customer, e.feature)][1] for e in chosen],
            "amounts": [e.amount for e in chosen],
            "keys": [e.idempotency_key for e in chosen],
            "properties": [json.dumps(e.properties or {}) for e in chosen],
            "timestamps": [e.timestamp or now for e in chosen],
        })
        done = {row[0] for row in cursor.fetchall()}
    return [i if i in done else None for i in ids]


def _prior_events(*, events, indexes: list[int], resolved: dict) -> dict[tuple[int, str], UsageEvent]:
    if not indexes:
        return {}
    keys = {(resolved[(events[i].customer, events[i].feature)][0], events[i].idempotency_key) for i in indexes}
    match = Q()
    for customer_pk, key in keys:
        match |= Q(customer_id=customer_pk, idempotency_key=key)
    return {(p.customer_id, p.idempotency_key): p for p in UsageEvent.objects.filter(match)}
