"""The hot path: check (optionally deduct or reserve), track, and lock finalize.

A deduction that fits is one conditional UPDATE of the balance row
(``… WHERE unlimited OR granted - usage - reserved >= n RETURNING …``) plus the
bucket bookkeeping and the usage-event insert, in one transaction. On
PostgreSQL the common case (see ``_FAST_DEDUCT_SQL``) is one round trip to the
database. Only when it does not fit (overage, spend caps) is the row locked and
the rules run in Python. Nothing here sums usage events.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DataError, IntegrityError, connection, transaction

from billing.errors import BillingError, Conflict, NotFound, ValidationFailed
from billing.locks import lock_balance, lock_balance_lock
from billing.models import Balance, BalanceLock, Customer, Feature, UsageEvent
from billing.prepared import PreparedStatement
from billing.selectors.entitlements import (
    BALANCE_FIELDS,
    BALANCE_LOOKUP_SQL,
    balance_from_row,
    balance_lookup,
    entity_lookup,
)
from billing.services.balances import (
    DEDUCTION_ORDER_SQL,
    LOW_BALANCE_FRACTION,
    balance_get_or_create,
    bucket_share,
    buckets_consume,
    emit_crossings,
)

MAX_LOCK_SECONDS = 7 * 24 * 3600
DEFAULT_LOCK_SECONDS = 300

OK = "ok"
INSUFFICIENT = "insufficient_balance"
NOT_INCLUDED = "feature_not_included"
CAP_REACHED = "spend_cap_reached"


class InsufficientBalance(BillingError):
    status = 402
    code = "INSUFFICIENT_BALANCE"


@dataclass(frozen=True)
class CheckResult:
    allowed: bool
    code: str
    balance: Balance | None
    lock_id: str | None = None


def decide(balance: Balance | None, required: int) -> str:
    """May ``required`` units be used now? Pure: reads the row, changes nothing."""
    if balance is None or not balance.included:
        return NOT_INCLUDED
    if balance.unlimited or balance.remaining >= required:
        return OK
    if not balance.overage_allowed:
        return INSUFFICIENT
    if balance.spend_cap is not None and balance.overage_price:
        projected = max(0, balance.usage + balance.reserved + required - balance.granted)
        if projected * balance.overage_price > balance.spend_cap:
            return CAP_REACHED
    return OK


_DEDUCT_SQL = """
UPDATE billing_balance
   SET usage = usage + %(n)s, updated_at = %(now)s
 WHERE id = %(id)s AND included AND (unlimited OR granted - usage - reserved >= %(n)s)
RETURNING granted, usage, reserved, overage, unlimited, low_notified
"""

# track: always records; overage = max(0, usage - granted), 0 when unlimited.
# (In SET, ``usage`` is the old value on both PostgreSQL and SQLite.)
_TRACK_SQL = """
UPDATE billing_balance
   SET usage = usage + %(n)s,
       overage = CASE WHEN unlimited THEN 0 WHEN usage + %(n)s > granted THEN usage + %(n)s - granted ELSE 0 END,
       updated_at = %(now)s
 WHERE id = %(id)s
RETURNING granted, usage, reserved, overage, unlimited, low_notified
"""

_RESERVE_SQL = """
UPDATE billing_balance
   SET reserved = reserved + %(n)s, updated_at = %(now)s
 WHERE id = %(id)s AND included AND (unlimited OR granted - usage - reserved >= %(n)s)
RETURNING granted, usage, reserved, overage, unlimited, low_notified
"""


# --- PostgreSQL: the common deduction in one round trip ----------------------
#
# Two statements sent as one query (simple query protocol: one implicit
# transaction, each statement with a snapshot of its own), prepared once per
# database session (billing/prepared.py):
#  1. look the balance up and deduct ``n`` with a conditional UPDATE, only when
#     neither balance.low nor entitlement.exhausted can be due (emit_crossings): the
#     units leave the balance above the balance.low threshold, or above zero once
#     balance.low has fired, or the balance is unlimited. The units fit, so
#     overage and spend caps never apply. The UPDATE takes the balance row lock
#     and, after waiting for it, re-checks its WHERE on the newest row version.
#     It leaves the id of the balance it changed in a transaction-local setting
#     for statement 2.
#  2. with a fresh snapshot, taken while this transaction holds the balance row
#     lock (every writer of buckets holds it until it commits: balances.py), put
#     the units into the first bucket in deduction order, when it has room for
#     all of them, and insert the usage event. When it has not (the units span
#     buckets) or the insert is refused (a repeated idempotency key), the
#     statement fails on purpose, the whole transaction rolls back, and the
#     caller takes the general path. So every commit keeps the invariants of
#     balances.py. Row 1 is the balance as found (unchanged when nothing was
#     deducted), then the RETURNING of the UPDATE; row 2 is the event id.
_FAST_MISS = "entitlements fast path: no single bucket took the units of balance "

_FAST_DEDUCT_SQL = f"""
WITH b AS ({BALANCE_LOOKUP_SQL}),
deducted AS (
  UPDATE billing_balance
     SET usage = usage + %(n)s, updated_at = %(now)s
   WHERE id = (SELECT id FROM b) AND included
     AND (unlimited OR granted - usage - reserved - %(n)s > trunc(granted * %(low_fraction)s::float8)::bigint
          OR low_notified AND granted - usage - reserved - %(n)s > 0)
  RETURNING id, granted, usage, reserved, overage, unlimited, low_notified
)
SELECT b.*, d.granted, d.usage, d.reserved, d.overage, d.unlimited, d.low_notified,
       set_config('billing.deducted_balance', COALESCE(d.id::text, ''), true)
  FROM (SELECT 1) AS one LEFT JOIN b ON true LEFT JOIN deducted d ON true;

WITH mine AS (
  SELECT id, customer_id, feature_id, entity_id, unlimited FROM billing_balance
   WHERE id = NULLIF(current_setting('billing.deducted_balance', true), '')::bigint
), fill AS (
  UPDATE billing_balancebucket SET consumed = consumed + %(n)s
   WHERE id = (SELECT id FROM billing_balancebucket
                WHERE balance_id = (SELECT id FROM mine WHERE NOT unlimited) AND active AND consumed < granted
                ORDER BY {DEDUCTION_ORDER_SQL}
                LIMIT 1)
     AND active AND granted - consumed >= %(n)s
  RETURNING id
), event AS (
  INSERT INTO billing_usageevent
         (customer_id, feature_id, entity_id, amount, idempotency_key, properties, timestamp, created_at)
  SELECT customer_id, feature_id, entity_id, %(n)s, %(idempotency_key)s, %(properties)s::jsonb, %(timestamp)s, %(now)s
    FROM mine WHERE unlimited OR EXISTS (SELECT 1 FROM fill)
  RETURNING id
)
SELECT event.id, CASE WHEN event.id IS NULL THEN ('{_FAST_MISS}' || mine.id)::bigint END
  FROM mine LEFT JOIN event ON true
"""

_FAST_DEDUCT = PreparedStatement("billing_hot_deduct", _FAST_DEDUCT_SQL, {
    "customer": "text", "feature": "text", "n": "bigint", "now": "timestamptz", "low_fraction": "float8",
    "idempotency_key": "text", "properties": "text", "timestamp": "timestamptz",
})


@dataclass(frozen=True)
class _Fast:
    balance: Balance | None  # deducted when event_id is set, else as found (None: no balance)
    event_id: int | None = None


def _deduct_fast(*, customer_id: str, feature_slug: str, amount: int, now: datetime, timestamp: datetime | None = None,
                 idempotency_key: str | None = None, properties: dict | None = None) -> _Fast | None:
    """Deduct ``amount`` > 0 from the customer's own balance and record the usage
    event in one round trip (PostgreSQL). None when the statement rolled back:
    take the general path. Raises NotFound (customer)."""
    params = {
        "customer": customer_id, "feature": feature_slug, "n": amount, "now": now,
        "low_fraction": LOW_BALANCE_FRACTION, "idempotency_key": idempotency_key,
        "properties": json.dumps(properties or {}), "timestamp": timestamp or now,
    }
    # Inside a caller's transaction (tests), a savepoint keeps a rollback to this statement.
    guard = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with guard, connection.cursor() as cursor:
            _FAST_DEDUCT.execute(cursor, params)
            row = cursor.fetchone()
            cursor.nextset()
            recorded = cursor.fetchone()
    except IntegrityError:
        return None  # a repeated idempotency key: the general path replays the first event
    except DataError as exc:
        if _FAST_MISS not in str(exc):
            raise
        return None
    if row[0] is None:
        raise NotFound("customer", customer_id)
    width = len(BALANCE_FIELDS)
    balance = balance_from_row(row[1:1 + width])
    deducted = row[1 + width:1 + width + 6]
    if balance is None or deducted[0] is None:
        return _Fast(balance=balance)
    (balance.granted, balance.usage, balance.reserved, balance.overage, balance.unlimited,
     balance.low_notified) = deducted
    balance.updated_at = now
    return _Fast(balance=balance, event_id=recorded[0])


def _fast_path_applies(entity_id: str | None) -> bool:
    return entity_id is None and connection.vendor == "postgresql"


def _conditional(sql: str, *, balance: Balance, amount: int, now: datetime) -> bool:
    """Run a conditional UPDATE; on success refresh ``balance`` from RETURNING."""
    with connection.cursor() as cursor:
        cursor.execute(sql, {"n": amount, "now": now, "id": balance.pk})
        row = cursor.fetchone()
    if row is None:
        return False
    balance.granted, balance.usage, balance.reserved, balance.overage, unlimited, low = row
    balance.unlimited, balance.low_notified = bool(unlimited), bool(low)
    return True


def _bucket_delta(balance: Balance, added: int) -> int:
    """Units of the last ``added`` usage that belong in buckets (the rest is overage)."""
    after = bucket_share(usage=balance.usage, granted=balance.granted, unlimited=balance.unlimited)
    before = bucket_share(usage=balance.usage - added, granted=balance.granted, unlimited=balance.unlimited)
    return after - before


def usage_apply(*, balance: Balance, amount: int, now: datetime) -> None:
    """Add ``amount`` (≥ 0) to a locked balance's usage, overage and buckets."""
    before = bucket_share(usage=balance.usage, granted=balance.granted, unlimited=balance.unlimited)
    balance.usage += amount
    after = bucket_share(usage=balance.usage, granted=balance.granted, unlimited=balance.unlimited)
    balance.overage = 0 if balance.unlimited else balance.usage - after
    balance.updated_at = now
    Balance.objects.filter(pk=balance.pk).update(usage=balance.usage, overage=balance.overage, updated_at=now)
    buckets_consume(balance_id=balance.pk, amount=after - before)


def usage_record(*, balance: Balance, amount: int, now: datetime, timestamp: datetime | None = None,
            idempotency_key: str | None = None, properties: dict | None = None) -> UsageEvent:
    return UsageEvent.objects.create(
        customer_id=balance.customer_id,
        feature_id=balance.feature_id,
        entity_id=balance.entity_id,
        amount=amount,
        idempotency_key=idempotency_key,
        properties=properties or {},
        timestamp=timestamp or now,
        created_at=now,
    )


def entitlement_check(
    *,
    customer_id: str,
    feature_slug: str,
    required: int,
    now: datetime,
    entity_id: str | None = None,
    send_event: bool = False,
    lock_expires_at: datetime | None = None,
    lock: bool = False,
) -> CheckResult:
    """May the customer use ``required`` units? With ``send_event`` also deduct
    them (atomically, never past the balance unless overage is allowed), with
    ``lock`` reserve them and return a lock id. Raises NotFound (customer, entity),
    ValidationFailed (lock expiry)."""
    if send_event and not lock and _fast_path_applies(entity_id):
        fast = _deduct_fast(customer_id=customer_id, feature_slug=feature_slug, amount=required, now=now)
        if fast is not None and fast.event_id is not None:
            return CheckResult(allowed=True, code=OK, balance=fast.balance)
        if fast is not None:
            # Not deducted: a refusal decided on the row as it was found is final
            # (nothing was written); anything else goes the general way.
            code = decide(fast.balance, required)
            if code != OK:
                return CheckResult(allowed=False, code=code, balance=fast.balance)
            balance = fast.balance
        else:
            balance = balance_lookup(customer_id=customer_id, feature_slug=feature_slug, entity_id=entity_id)
    else:
        balance = balance_lookup(customer_id=customer_id, feature_slug=feature_slug, entity_id=entity_id)
    if not send_event and not lock:
        code = decide(balance, required)
        return CheckResult(allowed=code == OK, code=code, balance=balance)
    if balance is None or not balance.included:
        return CheckResult(allowed=False, code=NOT_INCLUDED, balance=balance)
    if lock:
        expires_at = lock_expires_at or now + timedelta(seconds=DEFAULT_LOCK_SECONDS)
        if not now < expires_at <= now + timedelta(seconds=MAX_LOCK_SECONDS):
            raise ValidationFailed("lock.expiresAt", "must be in the future and at most 7 days ahead")
    with transaction.atomic(durable=True):
        sql = _RESERVE_SQL if lock else _DEDUCT_SQL
        if _conditional(sql, balance=balance, amount=required, now=now):
            before = balance.remaining + required
            if not lock:
                buckets_consume(balance_id=balance.pk, amount=_bucket_delta(balance, required))
        else:
            balance = lock_balance(pk=balance.pk)
            before = balance.remaining
            code = decide(balance, required)
            if code != OK:
                return CheckResult(allowed=False, code=code, balance=balance)
            if lock:
                balance.reserved += required
                Balance.objects.filter(pk=balance.pk).update(reserved=balance.reserved, updated_at=now)
            else:
                usage_apply(balance=balance, amount=required, now=now)
        lock_id = None
        if lock:
            lock_id = BalanceLock.objects.create(balance=balance, amount=required, expires_at=expires_at, created_at=now).pk
        else:
            usage_record(balance=balance, amount=required, now=now)
        emit_crossings(balance=balance, before=before, now=now)
    return CheckResult(allowed=True, code=OK, balance=balance, lock_id=lock_id)


@dataclass(frozen=True)
class TrackResult:
    event: UsageEvent
    balance: Balance
    replayed: bool = False


def usage_track(
    *,
    customer_id: str,
    feature_slug: str,
    amount: int,
    now: datetime,
    entity_id: str | None = None,
    idempotency_key: str | None = None,
    properties: dict | None = None,
    timestamp: datetime | None = None,
) -> TrackResult:
    """Record usage (the work was done): past the balance if need be, as overage
    or a reported overdraft. A negative amount gives units back, never below zero
    usage. A repeated ``idempotency_key`` records nothing and returns the first
    event. Raises NotFound (customer, feature, entity)."""
    fast = None
    if amount > 0 and _fast_path_applies(entity_id):
        fast = _deduct_fast(customer_id=customer_id, feature_slug=feature_slug, amount=amount, now=now,
                            timestamp=timestamp, idempotency_key=idempotency_key, properties=properties)
        if fast is not None and fast.event_id is not None:
            event = UsageEvent(
                pk=fast.event_id, customer_id=fast.balance.customer_id, feature_id=fast.balance.feature_id,
                entity_id=None, amount=amount, idempotency_key=idempotency_key, properties=properties or {},
                timestamp=timestamp or now, created_at=now,
            )
            return TrackResult(event=event, balance=fast.balance)
    if fast is not None:
        balance = fast.balance
    else:
        balance = balance_lookup(customer_id=customer_id, feature_slug=feature_slug, entity_id=entity_id)
    if balance is None:
        balance = _empty_balance(customer_id=customer_id, feature_slug=feature_slug, entity_id=entity_id, now=now)
    with transaction.atomic(durable=True):
        return usage_track_on(balance=balance, amount=amount, now=now, idempotency_key=idempotency_key,
                              properties=properties, timestamp=timestamp)


def usage_track_on(*, balance: Balance, amount: int, now: datetime, idempotency_key: str | None = None,
                   properties: dict | None = None, timestamp: datetime | None = None) -> TrackResult:
    """``usage_track`` on a balance already looked up, in the caller's transaction
    (the general path; ``track/batch`` uses it for its rare rows)."""
    if idempotency_key is not None:
        prior = UsageEvent.objects.filter(customer_id=balance.customer_id, idempotency_key=idempotency_key).first()
        if prior is not None:
            return _replay(prior, balance)
    # A savepoint only when a duplicate key can make the insert fail.
    guard = transaction.atomic() if idempotency_key is not None else nullcontext()
    try:
        with guard:
            if amount >= 0:
                _conditional(_TRACK_SQL, balance=balance, amount=amount, now=now)
                before = balance.remaining + amount
                buckets_consume(balance_id=balance.pk, amount=_bucket_delta(balance, amount))
                recorded = amount
            else:
                balance = lock_balance(pk=balance.pk)
                before = balance.remaining
                recorded = -min(-amount, balance.usage)
                usage_give_back(balance=balance, amount=-recorded, now=now)
            event = usage_record(balance=balance, amount=recorded, now=now, timestamp=timestamp,
                                 idempotency_key=idempotency_key, properties=properties)
    except IntegrityError:
        if idempotency_key is None:
            raise
        # The same idempotency key committed by a concurrent request.
        prior = UsageEvent.objects.get(customer_id=balance.customer_id, idempotency_key=idempotency_key)
        return _replay(prior, balance)
    emit_crossings(balance=balance, before=before, now=now)
    return TrackResult(event=event, balance=balance)


def _replay(prior: UsageEvent, balance: Balance) -> TrackResult:
    """The first event for this key, with the current state of its balance."""
    current = Balance.objects.filter(
        customer_id=prior.customer_id, feature_id=prior.feature_id, entity_id=prior.entity_id
    ).first()
    return TrackResult(event=prior, balance=current or Balance.objects.get(pk=balance.pk), replayed=True)


def usage_give_back(*, balance: Balance, amount: int, now: datetime) -> None:
    before = bucket_share(usage=balance.usage, granted=balance.granted, unlimited=balance.unlimited)
    balance.usage -= amount
    after = bucket_share(usage=balance.usage, granted=balance.granted, unlimited=balance.unlimited)
    balance.overage = 0 if balance.unlimited else balance.usage - after
    Balance.objects.filter(pk=balance.pk).update(usage=balance.usage, overage=balance.overage, updated_at=now)
    buckets_consume(balance_id=balance.pk, amount=after - before)


def _empty_balance(*, customer_id: str, feature_slug: str, entity_id: str | None, now: datetime) -> Balance:
    """A balance row with no buckets, so usage of a feature the customer lacks is still kept."""
    with transaction.atomic(durable=True):
        return _empty_balance_here(customer_id=customer_id, feature_slug=feature_slug, entity_id=entity_id, now=now)


def _empty_balance_here(*, customer_id: str, feature_slug: str, entity_id: str | None, now: datetime) -> Balance:
    """``_empty_balance`` in the caller's transaction."""
    customer = Customer.objects.filter(external_id=customer_id, deleted_at__isnull=True).first()
    if customer is None:
        raise NotFound("customer", customer_id)
    feature = Feature.objects.filter(slug=feature_slug).first()
    if feature is None:
        raise NotFound("feature", feature_slug)
    entity = entity_lookup(customer=customer, entity_id=entity_id) if entity_id else None
    return balance_get_or_create(customer=customer, feature=feature, entity=entity, now=now)


def usage_track_in_transaction(*, customer_id: str, feature_slug: str, amount: int, now: datetime,
                               entity_id: str | None = None, idempotency_key: str | None = None,
                               properties: dict | None = None, timestamp: datetime | None = None) -> TrackResult:
    """``usage_track`` by the general path, inside the caller's transaction (which
    should hold the balance rows it may touch, in primary-key order). Raises
    NotFound (customer, feature, entity)."""
    balance = balance_lookup(customer_id=customer_id, feature_slug=feature_slug, entity_id=entity_id)
    if balance is None:
        balance = _empty_balance_here(customer_id=customer_id, feature_slug=feature_slug, entity_id=entity_id, now=now)
    return usage_track_on(balance=balance, amount=amount, now=now, idempotency_key=idempotency_key,
                          properties=properties, timestamp=timestamp)


@dataclass(frozen=True)
class FinalizeResult:
    lock: BalanceLock
    balance: Balance
    overdraft: bool


def lock_finalize(*, lock_id: str, action: str, now: datetime, override_value: int | None = None) -> FinalizeResult:
    """Confirm (consume the actual value, default the reserved amount; give back
    the rest) or release a lock, once. A confirm above the reservation takes the
    extra from the balance and reports an overdraft if it cannot cover it.
    Raises NotFound, Conflict (finalized, or expired)."""
    with transaction.atomic(durable=True):
        lock = lock_balance_lock(lock_id=lock_id)
        if lock is None:
            raise NotFound("lock", lock_id)
        if lock.status != BalanceLock.Status.OPEN:
            raise Conflict(f"The lock is already {lock.status}.", details={"lockId": lock.pk, "status": lock.status})
        if lock.expires_at <= now:
            raise Conflict("The lock has expired; its units are released.", details={"lockId": lock.pk, "status": "expired"})
        balance = lock_balance(pk=lock.balance_id)
        before = balance.remaining
        balance.reserved -= lock.amount
        Balance.objects.filter(pk=balance.pk).update(reserved=balance.reserved, updated_at=now)
        if action == "confirm":
            value = lock.amount if override_value is None else override_value
            usage_apply(balance=balance, amount=value, now=now)
            if value:
                usage_record(balance=balance, amount=value, now=now, properties={"lockId": lock.pk})
            lock.status, lock.consumed, lock.released = BalanceLock.Status.CONSUMED, value, max(0, lock.amount - value)
        else:
            lock.status, lock.consumed, lock.released = BalanceLock.Status.RELEASED, 0, lock.amount
        lock.finalized_at = now
        lock.save(update_fields=["status", "consumed", "released", "finalized_at"])
        emit_crossings(balance=balance, before=before + lock.amount, now=now)
    overdraft = not balance.unlimited and not balance.overage_allowed and balance.remaining < 0
    return FinalizeResult(lock=lock, balance=balance, overdraft=overdraft)
