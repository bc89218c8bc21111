"""Writes of the credits API: debit, refund, freeze, and the replay guard of signatures.

A debit spends a workspace's credits (its balance of the credit feature, the
rows ``check`` and ``track`` use) with one conditional UPDATE of the balance
row, never past what is left: subscription buckets (plan allowance, grants)
before top-ups, in the engine's deduction order (``balances.deduction_order``).
It remembers which buckets gave how many units, so that a refund puts them
back there. Both keep the invariants of billing/services/balances.py: the
caller of every bucket write holds the balance row lock until commit.

Idempotency (API.md): a request's key (``idempotencyKey``, default
hex sha256(jobId + sourceService)) replays the first response for 24 h when
the request is the same; a second debit of a (jobId, sourceService), under any
other key or later, is 409 DUPLICATE_REQUEST. Unique indexes make this hold
under concurrency too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import F, Q

from billing.errors import BillingError
from billing.locks import lock_balance, lock_credit_entry
from billing.models import Balance, BalanceBucket, Customer
from billing.ids import new_id
from billing.services.balances import (
    DEDUCTION_ORDER_SQL,
    LOW_BALANCE_FRACTION,
    bucket_share,
    buckets_consume,
    deduction_order,
    emit_crossings,
    low_threshold,
)
from billing.services.entitlements import usage_record
from credits.models import CreditEntry, SeenSignature, Wallet
from credits.selectors import customer_for_workspace, split_of, wallet_row

logger = logging.getLogger(__name__)

REPLAY_WINDOW = timedelta(hours=24)
# Amounts are JSON integers a JavaScript client can send exactly.
MAX_AMOUNT = 2**53 - 1


class InvalidRequest(BillingError):
    """Bad input: ``details`` is ``[{field, message}]``."""

    status = 400
    code = "INVALID_REQUEST"

    @classmethod
    def field(cls, field: str, message: str, **extra) -> InvalidRequest:
        return cls(f"{field}: {message}", details=[{"field": field, "message": message, **extra}])


class InsufficientCredits(BillingError):
    status = 402
    code = "INSUFFICIENT_CREDITS"

    def __init__(self, *, required: int, available: int):
        super().__init__(
            f"The wallet has {available} credits; {required} are required.",
            details={"required": required, "available": available},
        )


class DuplicateRequest(BillingError):
    status = 409
    code = "DUPLICATE_REQUEST"


class WalletLocked(BillingError):
    status = 423
    code = "WALLET_LOCKED"

    def __init__(self, workspace_id: str):
        super().__init__("Staff froze this wallet: it cannot be debited now.", details={"workspaceId": workspace_id})


class DebitNotFound(BillingError):
    status = 404
    code = "DEBIT_NOT_FOUND"

    def __init__(self, *, workspace_id: str, job_id: str, source_service: str):
        super().__init__(
            f"No debit of job {job_id!r} by {source_service!r} in workspace {workspace_id!r}.",
            details={"workspaceId": workspace_id, "refundForJobId": job_id, "sourceService": source_service},
        )


def default_idempotency_key(job_id: str, source_service: str) -> str:
    """API.md: hex sha256(jobId + sourceService)."""
    return hashlib.sha256((job_id + source_service).encode("utf-8")).hexdigest()


def default_refund_key(job_id: str, source_service: str, amount: int | None) -> str:
    """A refund's default key: a retry of the same refund is replayed. Two
    partial refunds of one job with the same amount need keys of their own."""
    part = "all" if amount is None else str(amount)
    return hashlib.sha256(f"refund\x00{job_id}\x00{source_service}\x00{part}".encode("utf-8")).hexdigest()


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode("utf-8")).hexdigest()


def check_amount(amount, field: str = "amount") -> int:
    """A positive JSON integer of credits, or InvalidRequest."""
    if type(amount) is not int:  # bool, float (1.5 and 1.0 alike), str, null
        if isinstance(amount, float):
            raise InvalidRequest.field(field, "must be a whole number of credits (round fractions up to 1)")
        raise InvalidRequest.field(field, "must be an integer")
    if amount <= 0:
        raise InvalidRequest.field(field, "must be a positive integer")
    if amount > MAX_AMOUNT:
        raise InvalidRequest.field(field, f"must be at most {MAX_AMOUNT}")
    return amount


def entry_details(entry: CreditEntry, workspace_id: str | None = None) -> dict:
    """The wire form of a prior entry, for a 409's details."""
    return {
        "ledgerEntryId": entry.pk,
        "kind": entry.kind,
        "workspaceId": workspace_id or Customer.objects.filter(pk=entry.customer_id).values_list("external_id", flat=True).first(),
        "jobId": entry.job_id,
        "sourceService": entry.source_service,
        "amount": entry.amount,
        "createdAt": entry.created_at.isoformat().replace("+00:00", "Z"),
    }


# --- debit ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DebitResult:
    entry: CreditEntry
    workspace_id: str
    replayed: bool = False


# The hot path: spend ``n`` only if it fits (reservations count as spent), in one
# statement that takes the balance row lock. Credits never go into overage.
_DEBIT_SQL = """
UPDATE billing_balance
   SET usage = usage + %(n)s, updated_at = %(now)s
 WHERE id = %(id)s AND included AND (unlimited OR granted - usage - reserved >= %(n)s)
RETURNING granted, usage, reserved, overage, unlimited, low_notified, customer_id, feature_id
"""


def credit_debit(
    *,
    workspace_id: str,
    amount: int,
    job_id: str,
    source_service: str,
    now: datetime,
    idempotency_key: str | None = None,
    actor_user_id: str = "",
    metadata: dict | None = None,
    caller: str = "",
) -> DebitResult:
    """Spend ``amount`` credits of the workspace for one job. A repeat of a debit
    already made returns it (``replayed``) or raises DuplicateRequest (see the
    module docstring). Raises InvalidRequest, WorkspaceNotFound, WalletLocked,
    InsufficientCredits, DuplicateRequest."""
    check_amount(amount)
    key = idempotency_key or default_idempotency_key(job_id, source_service)
    fingerprint = _fingerprint("debit", workspace_id, amount, job_id, source_service)
    wallet = wallet_row(workspace_id=workspace_id, idempotency_key=key, job_id=job_id, source_service=source_service)
    if wallet.prior_by_key or wallet.prior_by_job:
        return _repeat(workspace_id=workspace_id, key=key, job_id=job_id, source_service=source_service,
                       fingerprint=fingerprint, now=now)
    if wallet.frozen:
        raise WalletLocked(workspace_id)
    entry = None
    if wallet.balance_id is not None:
        fields = {"job_id": job_id, "source_service": source_service, "idempotency_key": key,
                  "fingerprint": fingerprint, "caller": caller, "actor_user_id": actor_user_id or "",
                  "metadata": metadata or {}}
        try:
            if connection.vendor == "postgresql":
                entry = _debit_fast(balance_id=wallet.balance_id, customer_id=wallet.customer_pk, amount=amount,
                                    now=now, fields=fields)
            if entry is None:
                entry = _debit(balance_id=wallet.balance_id, amount=amount, now=now, fields=fields)
        except IntegrityError:
            # The same debit (key or job) committed by a concurrent request.
            return _repeat(workspace_id=workspace_id, key=key, job_id=job_id, source_service=source_service,
                           fingerprint=fingerprint, now=now)
    if entry is None:
        # Not enough credits. A concurrent twin of this request may have taken them
        # and committed: then this is a retry, answered as one.
        if CreditEntry.objects.filter(Q(idempotency_key=key) | Q(source_service=source_service, job_id=job_id),
                                      kind=CreditEntry.Kind.DEBIT).exists():
            return _repeat(workspace_id=workspace_id, key=key, job_id=job_id, source_service=source_service,
                           fingerprint=fingerprint, now=now)
        balance = Balance.objects.filter(pk=wallet.balance_id).first() if wallet.balance_id else None
        available = max(0, balance.remaining) if balance is not None and balance.included else 0
        raise InsufficientCredits(required=amount, available=available)
    return DebitResult(entry=entry, workspace_id=workspace_id)


def _debit(*, balance_id: int, amount: int, now: datetime, fields: dict) -> CreditEntry | None:
    """The debit's transaction; None when the credits do not cover ``amount``."""
    with transaction.atomic(durable=True):
        with connection.cursor() as cursor:
            cursor.execute(_DEBIT_SQL, {"n": amount, "now": now, "id": balance_id})
            row = cursor.fetchone()
        if row is None:
            return None
        granted, usage, reserved, overage, unlimited, low_notified, customer_id, feature_id = row
        balance = Balance(
            pk=balance_id, customer_id=customer_id, feature_id=feature_id, entity_id=None, included=True,
            granted=granted, usage=usage, reserved=reserved, overage=overage, unlimited=bool(unlimited),
            low_notified=bool(low_notified), updated_at=now,
        )
        # This transaction holds the balance row, so the buckets cannot change under it.
        buckets = list(
            deduction_order(BalanceBucket.objects.filter(balance_id=balance_id, active=True))
            .values_list("id", "kind", "granted", "consumed", "unlimited")
        )
        taken: dict[int, int] = {}
        if not balance.unlimited:
            left = amount
            for bucket_id, _kind, bucket_granted, consumed, _unlimited in buckets:
                room = bucket_granted - consumed
                if room > 0 and left:
                    taken[bucket_id] = min(left, room)
                    left -= taken[bucket_id]
            if left:
                raise BillingError("credit buckets ran out of room", code="INTERNAL_INVARIANT", status=500)
        split = split_of((kind, g, c + taken.get(bid, 0), unl) for bid, kind, g, c, unl in buckets)
        entry = CreditEntry.objects.create(
            kind=CreditEntry.Kind.DEBIT, customer_id=customer_id, balance_id=balance_id, amount=amount,
            buckets={str(bid): units for bid, units in taken.items()},
            balance_subscription_after=split.subscription, balance_topup_after=split.topup,
            total_after=balance.remaining, created_at=now, **fields,
        )
        for bucket_id, units in taken.items():
            BalanceBucket.objects.filter(pk=bucket_id).update(consumed=F("consumed") + units)
        usage_record(balance=balance, amount=amount, now=now, properties=_event_properties(entry))
        emit_crossings(balance=balance, before=balance.remaining + amount, now=now)
    return entry


# --- PostgreSQL: the common debit in one round trip ---------------------------------------
#
# The engine's technique (billing/services/entitlements.py, _FAST_DEDUCT_SQL): two statements
# sent as one query, one implicit transaction, each statement with a snapshot of its own.
#  1. the conditional UPDATE of the balance row, only when the credits fit and leave the
#     balance above the balance.low threshold (so no event can be due); it takes the row
#     lock and leaves the balance id in a transaction-local setting;
#  2. with a fresh snapshot, taken while this transaction holds the row lock (every writer of
#     buckets holds it until commit), fill the buckets in deduction order (a running sum),
#     insert the credit entry (with what each bucket gave and the split after) and the usage
#     event. A repeated idempotency key or job fails the entry insert: the whole transaction
#     rolls back (IntegrityError, answered as a repeat). Should the buckets not hold the units
#     (they always do while the invariants hold), the statement fails on purpose (DataError)
#     and the general path decides.
# When statement 1 changes nothing (too few credits, or a balance.low crossing), nothing was
# written and the general path (``_debit``) runs.
_FAST_MISS = "credits fast path: the buckets did not take the units of balance "

_DEBIT_FAST_SQL = f"""
WITH deducted AS (
  UPDATE billing_balance SET usage = usage + %(n)s, updated_at = %(now)s
   WHERE id = %(id)s AND included
     AND (unlimited OR granted - usage - reserved - %(n)s > trunc(granted * %(low_fraction)s::float8)::bigint)
  RETURNING id
)
SELECT set_config('credits.deducted_balance', COALESCE((SELECT id FROM deducted)::text, ''), true);

WITH mine AS (
  SELECT id, customer_id, feature_id, unlimited, granted - usage - reserved AS total FROM billing_balance
   WHERE id = NULLIF(current_setting('credits.deducted_balance', true), '')::bigint
), ordered AS (
  SELECT id, granted - consumed AS room,
         SUM(granted - consumed) OVER (ORDER BY {DEDUCTION_ORDER_SQL}) AS upto
    FROM billing_balancebucket
   WHERE balance_id = (SELECT id FROM mine WHERE NOT unlimited) AND active AND consumed < granted
), take AS (
  SELECT id, LEAST(room, %(n)s - (upto - room)) AS units FROM ordered WHERE upto - room < %(n)s
), fill AS (
  UPDATE billing_balancebucket b SET consumed = b.consumed + take.units FROM take WHERE b.id = take.id
  RETURNING b.id
), split AS (
  SELECT COALESCE(SUM(b.granted - b.consumed - COALESCE(t.units, 0)) FILTER (WHERE b.kind <> 'topup'), 0) AS sub,
         COALESCE(SUM(b.granted - b.consumed - COALESCE(t.units, 0)) FILTER (WHERE b.kind = 'topup'), 0) AS topup
    FROM billing_balancebucket b LEFT JOIN take t ON t.id = b.id
   WHERE b.balance_id = (SELECT id FROM mine) AND b.active AND NOT b.unlimited
), covered AS (
  SELECT mine.id FROM mine WHERE mine.unlimited OR (SELECT COALESCE(SUM(units), 0) FROM take) = %(n)s
), entry AS (
  INSERT INTO credits_creditentry
         (id, kind, customer_id, balance_id, amount, returned, refund_of_id, source_service, job_id,
          idempotency_key, fingerprint, caller, actor_user_id, reason, metadata, buckets,
          balance_subscription_after, balance_topup_after, total_after, created_at)
  SELECT %(entry_id)s, 'debit', mine.customer_id, mine.id, %(n)s, 0, NULL, %(source_service)s, %(job_id)s,
         %(idempotency_key)s, %(fingerprint)s, %(caller)s, %(actor_user_id)s, '', %(metadata)s::jsonb,
         (SELECT COALESCE(jsonb_object_agg(id::text, units), '{{}}'::jsonb) FROM take),
         split.sub, split.topup, mine.total, %(now)s
    FROM mine, split WHERE mine.id IN (SELECT id FROM covered)
  RETURNING id, balance_subscription_after, balance_topup_after, total_after, buckets
), event AS (
  INSERT INTO billing_usageevent
         (customer_id, feature_id, entity_id, amount, idempotency_key, properties, timestamp, created_at)
  SELECT mine.customer_id, mine.feature_id, NULL, %(n)s, NULL, %(properties)s::jsonb, %(now)s, %(now)s
    FROM mine WHERE mine.id IN (SELECT id FROM covered)
  RETURNING id
)
SELECT entry.id, entry.balance_subscription_after, entry.balance_topup_after, entry.total_after, entry.buckets,
       CASE WHEN entry.id IS NULL THEN ('{_FAST_MISS}' || mine.id)::bigint END, (SELECT count(*) FROM event)
  FROM mine LEFT JOIN entry ON true
"""


def _debit_fast(*, balance_id: int, customer_id: int, amount: int, now: datetime, fields: dict) -> CreditEntry | None:
    """The debit in one round trip (PostgreSQL); None when it wrote nothing and the
    general path must decide. Raises IntegrityError (a repeat)."""
    entry_id = new_id("cle")
    properties = {"source": "credits", "ledgerEntryId": entry_id, "jobId": fields["job_id"],
                  "sourceService": fields["source_service"]}
    params = {
        "n": amount, "now": now, "id": balance_id, "low_fraction": LOW_BALANCE_FRACTION, "entry_id": entry_id,
        "metadata": json.dumps(fields["metadata"]), "properties": json.dumps(properties),
        **{k: fields[k] for k in ("source_service", "job_id", "idempotency_key", "fingerprint", "caller",
                                  "actor_user_id")},
    }
    # Inside a caller's transaction (tests), a savepoint keeps a rollback to this statement.
    guard = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with guard, connection.cursor() as cursor:
            cursor.execute(_DEBIT_FAST_SQL, params)
            cursor.nextset()
            row = cursor.fetchone()
    except DataError as exc:
        if _FAST_MISS not in str(exc):
            raise
        return None
    if row is None or row[0] is None:
        return None  # nothing deducted: too few credits, or an event may be due
    _, sub, topup, total, buckets, _, _ = row
    return CreditEntry(
        pk=entry_id, kind=CreditEntry.Kind.DEBIT, customer_id=customer_id, balance_id=balance_id, amount=amount,
        buckets=buckets if isinstance(buckets, dict) else json.loads(buckets), balance_subscription_after=sub,
        balance_topup_after=topup, total_after=total, created_at=now, **fields,
    )


def _event_properties(entry: CreditEntry) -> dict:
    return {"source": "credits", "ledgerEntryId": entry.pk, "jobId": entry.job_id, "sourceService": entry.source_service}


def _repeat(*, workspace_id: str, key: str, job_id: str, source_service: str, fingerprint: str,
            now: datetime) -> DebitResult:
    """A debit request that repeats one already made: the same request under the
    same key within 24 h is a retry (replayed); anything else is a duplicate."""
    priors = list(CreditEntry.objects.filter(
        Q(idempotency_key=key) | Q(source_service=source_service, job_id=job_id), kind=CreditEntry.Kind.DEBIT))
    by_key = next((e for e in priors if e.idempotency_key == key), None)
    if by_key is not None and by_key.fingerprint == fingerprint and now - by_key.created_at < REPLAY_WINDOW:
        return DebitResult(entry=by_key, workspace_id=workspace_id, replayed=True)
    prior = next((e for e in priors if e.source_service == source_service and e.job_id == job_id), by_key)
    if prior is None:  # cannot happen: a prior is why we are here
        raise BillingError("the prior debit vanished", code="INTERNAL_INVARIANT", status=500)
    if prior is by_key and prior.fingerprint == fingerprint:
        message = "This debit was made more than 24 hours ago; retries are replayed only within 24 hours."
    elif prior.job_id == job_id and prior.source_service == source_service:
        message = f"Job {job_id!r} of {source_service!r} was already debited."
    else:
        message = "This idempotency key was already used for another debit."
    raise DuplicateRequest(message, details=entry_details(prior))


# --- refund --------------------------------------------------------------------------

@dataclass(frozen=True)
class RefundResult:
    entry: CreditEntry
    debit: CreditEntry
    workspace_id: str
    replayed: bool = False


def credit_refund(
    *,
    workspace_id: str,
    refund_for_job_id: str,
    source_service: str,
    reason: str,
    now: datetime,
    amount: int | None = None,
    idempotency_key: str | None = None,
    caller: str = "",
) -> RefundResult:
    """Give back the credits of a prior debit, all that is left of it or
    ``amount``, to the buckets they came from (top-ups first, the reverse of
    spending). Units whose bucket has since reset or expired have lapsed with
    it and are not given back (``returned`` < ``amount``). A retry of the same
    refund within 24 h is replayed. Raises InvalidRequest (more than is left),
    WorkspaceNotFound, DebitNotFound, DuplicateRequest (nothing left to refund,
    or the key reused)."""
    if amount is not None:
        check_amount(amount)
    key = idempotency_key or default_refund_key(refund_for_job_id, source_service, amount)
    fingerprint = _fingerprint("refund", workspace_id, refund_for_job_id, source_service, amount)
    customer = customer_for_workspace(workspace_id=workspace_id)
    if (prior := _prior_refund(key=key, fingerprint=fingerprint, workspace_id=workspace_id, now=now)) is not None:
        return prior
    found = CreditEntry.objects.filter(
        kind=CreditEntry.Kind.DEBIT, customer=customer, job_id=refund_for_job_id, source_service=source_service
    ).values_list("pk", flat=True).first()
    if found is None:
        raise DebitNotFound(workspace_id=workspace_id, job_id=refund_for_job_id, source_service=source_service)
    try:
        with transaction.atomic(durable=True):
            debit = lock_credit_entry(pk=found)
            # A twin of this request may have committed while we waited for the lock.
            if (prior := _prior_refund(key=key, fingerprint=fingerprint, workspace_id=workspace_id, now=now)) is not None:
                return prior
            entry = _refund(debit=debit, amount=amount, now=now, fields={
                "job_id": refund_for_job_id, "source_service": source_service, "idempotency_key": key,
                "fingerprint": fingerprint, "caller": caller, "reason": reason,
            }, workspace_id=workspace_id)
    except IntegrityError:
        prior = _prior_refund(key=key, fingerprint=fingerprint, workspace_id=workspace_id, now=now)
        if prior is None:
            raise
        return prior
    return RefundResult(entry=entry, debit=debit, workspace_id=workspace_id)


def _prior_refund(*, key: str, fingerprint: str, workspace_id: str, now: datetime) -> RefundResult | None:
    prior = CreditEntry.objects.filter(kind=CreditEntry.Kind.REFUND, idempotency_key=key).select_related("refund_of").first()
    if prior is None:
        return None
    if prior.fingerprint == fingerprint and now - prior.created_at < REPLAY_WINDOW:
        return RefundResult(entry=prior, debit=prior.refund_of, workspace_id=workspace_id, replayed=True)
    raise DuplicateRequest("This refund was already made (idempotency key used before).",
                           details=entry_details(prior))


def _refund(*, debit: CreditEntry, amount: int | None, now: datetime, fields: dict, workspace_id: str) -> CreditEntry:
    """The refund's writes; the caller holds the debit row lock."""
    refunds = list(debit.refunds.all())
    left = debit.amount - sum(r.amount for r in refunds)
    if left == 0:
        raise DuplicateRequest(
            "This debit was already refunded in full.",
            details={**entry_details(debit, workspace_id), "refunded": debit.amount,
                     "refunds": [r.pk for r in refunds]},
        )
    if amount is None:
        amount = left
    elif amount > left:
        raise InvalidRequest.field("amount", f"at most {left} credits of this debit are left to refund",
                                   refundable=left)
    balance = lock_balance(pk=debit.balance_id)
    # What of the debit's share of each bucket is not refunded yet.
    owed = {int(bid): units for bid, units in debit.buckets.items()}
    for r in refunds:
        for bid, units in r.buckets.items():
            owed[int(bid)] = owed.get(int(bid), 0) - units
    buckets = list(deduction_order(BalanceBucket.objects.filter(pk__in=list(owed))))
    covered: dict[int, int] = {}  # units of this refund, per bucket of the debit
    returnable: list[tuple[BalanceBucket, int]] = []
    rest = amount
    for bucket in reversed(buckets):  # the units spent last come back first
        units = min(rest, owed.get(bucket.pk, 0))
        if units <= 0:
            continue
        covered[bucket.pk] = units
        rest -= units
        # A bucket that reset after the debit (a new period) or expired: its units lapsed.
        if bucket.active and (bucket.period_start is None or bucket.period_start <= debit.created_at):
            returnable.append((bucket, units))
    # ``rest``: units the debit took from no bucket (an unlimited balance).
    returned = min(balance.usage, sum(units for _, units in returnable) + rest)
    _give_back(balance=balance, amount=returned, returnable=returnable, now=now)
    split = split_of(BalanceBucket.objects.filter(balance_id=balance.pk, active=True)
                     .values_list("kind", "granted", "consumed", "unlimited"))
    entry = CreditEntry.objects.create(
        kind=CreditEntry.Kind.REFUND, customer_id=debit.customer_id, balance_id=debit.balance_id, amount=amount,
        returned=returned, refund_of=debit, buckets={str(bid): units for bid, units in covered.items()},
        balance_subscription_after=split.subscription, balance_topup_after=split.topup,
        total_after=balance.remaining, created_at=now, **fields,
    )
    if returned:
        usage_record(balance=balance, amount=-returned, now=now, properties=_event_properties(entry))
    return entry


def _give_back(*, balance: Balance, amount: int, returnable: list[tuple[BalanceBucket, int]], now: datetime) -> None:
    """Take ``amount`` off a locked balance's usage. The units that leave the
    buckets (overage, if any, shrinks first: balances.py) go back to the
    debit's buckets, then, if those hold less now, to the others in reverse
    deduction order."""
    if amount <= 0:
        return
    share_before = bucket_share(usage=balance.usage, granted=balance.granted, unlimited=balance.unlimited)
    balance.usage -= amount
    share_after = bucket_share(usage=balance.usage, granted=balance.granted, unlimited=balance.unlimited)
    balance.overage = 0 if balance.unlimited else balance.usage - share_after
    balance.updated_at = now
    if balance.remaining > low_threshold(balance):
        balance.low_notified = False
    balance.save(update_fields=["usage", "overage", "updated_at", "low_notified"])
    leave = share_before - share_after
    for bucket, units in returnable:
        give = min(leave, units, bucket.consumed)
        if give > 0:
            BalanceBucket.objects.filter(pk=bucket.pk).update(consumed=F("consumed") - give)
            leave -= give
    buckets_consume(balance_id=balance.pk, amount=-leave)


# --- staff ---------------------------------------------------------------------------

def wallet_freeze(*, customer: Customer, frozen: bool, actor: str, now: datetime) -> bool:
    """Freeze (or unfreeze) a workspace's wallet. Returns False when it already
    was so (nothing changed)."""
    with transaction.atomic():
        wallet, _ = Wallet.objects.select_for_update().get_or_create(customer=customer, defaults={"updated_at": now})
        if wallet.frozen == frozen:
            return False
        wallet.frozen = frozen
        wallet.frozen_at = now if frozen else None
        wallet.frozen_by = actor if frozen else ""
        wallet.updated_at = now
        wallet.save(update_fields=["frozen", "frozen_at", "frozen_by", "updated_at"])
    return True


# --- the replay guard of signed requests -----------------------------------------------

REDIS_RETRY_SECONDS = 5.0
_redis_down_until = 0.0  # monotonic time until which Redis is not tried again (per process)


def signature_remember(*, signature: str, now: datetime) -> bool:
    """Remember an accepted request signature for the replay window; False when
    it was seen before (a replay). In Redis when REDIS_URL is set (the cache
    then; ``add`` is atomic), else in the database (shared by every process)."""
    window = settings.SVC_HMAC_WINDOW_SECONDS
    # Only a digest is kept, so neither the database (nor its SQL log) nor Redis holds a
    # signature: no secret material at rest or in a log line.
    signature = hashlib.sha256(signature.encode("utf-8", "surrogatepass")).hexdigest()
    # A signature stays valid while its timestamp is within the window on either
    # side of now: remember it for twice the window to cover both.
    global _redis_down_until
    if settings.REDIS_URL and time.monotonic() >= _redis_down_until:
        try:
            return cache.add(f"credits:sig:{signature}", 1, timeout=2 * window)
        except Exception as exc:  # redis-py's ConnectionError, TimeoutError, …: Redis is away
            # Debits must not depend on Redis: remember signatures in the database
            # meanwhile (a replay of one Redis saw just before is still refused by the
            # debit's idempotency key), and try Redis again a few seconds later.
            _redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
            logger.warning("credits: Redis unavailable (%s: %s); signatures are remembered in the database "
                           "for the next %s s", exc.__class__.__name__, exc, REDIS_RETRY_SECONDS)
    SeenSignature.objects.filter(expires_at__lt=now).delete()
    try:
        with transaction.atomic():
            SeenSignature.objects.create(signature=signature, expires_at=now + timedelta(seconds=2 * window))
    except IntegrityError:
        return False
    return True

