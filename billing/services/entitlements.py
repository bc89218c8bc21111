"""The hot path: check (optionally deduct or reserve), track, and lock finalize.

A deduction that fits is one conditional UPDATE of the balance row
(``… WHERE unlimited OR granted - usage - reserved >= n RETURNING …``) plus the
bucket bookkeeping and the usage-event insert, in one transaction. Only when
it does not fit (overage, spend caps) is the row locked and the rules run in
Python. Nothing here sums usage events.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction

from billing.errors import BillingError, Conflict, NotFound, ValidationFailed
from billing.locks import lock_balance, lock_balance_lock
from billing.models import Balance, BalanceLock, Customer, Feature, UsageEvent
from billing.selectors.entitlements import balance_lookup, entity_lookup
from billing.services.balances import balance_get_or_create, bucket_share, buckets_consume, emit_crossings

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
    balance = balance_lookup(customer_id=customer_id, feature_slug=feature_slug, entity_id=entity_id)
    if balance is None:
        balance = _empty_balance(customer_id=customer_id, feature_slug=feature_slug, entity_id=entity_id, now=now)
    with transaction.atomic(durable=True):
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
    customer = Customer.objects.filter(external_id=customer_id, deleted_at__isnull=True).first()
    if customer is None:
        raise NotFound("customer", customer_id)
    feature = Feature.objects.filter(slug=feature_slug).first()
    if feature is None:
        raise NotFound("feature", feature_slug)
    entity = entity_lookup(customer=customer, entity_id=entity_id) if entity_id else None
    with transaction.atomic(durable=True):
        return balance_get_or_create(customer=customer, feature=feature, entity=entity, now=now)


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
