"""Reads of the credits API: a workspace's wallet, its split and its cycle.

A workspace is a live customer (workspaceId = its external id); its credits
are its customer-level balance of ``settings.BILLING_CREDITS_FEATURE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection

from billing.errors import BillingError
from billing.models import Balance, BalanceBucket, Customer, Subscription
from credits.models import CreditEntry, Wallet


class WorkspaceNotFound(BillingError):
    status = 404
    code = "WORKSPACE_NOT_FOUND"

    def __init__(self, workspace_id: str):
        super().__init__(f"No workspace {workspace_id!r}.", details={"workspaceId": workspace_id})


@dataclass(frozen=True)
class WalletRow:
    customer_pk: int
    balance_id: int | None
    frozen: bool
    prior_by_key: str | None  # id of the debit made under this idempotency key
    prior_by_job: str | None  # id of the debit of this (jobId, sourceService)


# wallet_row in one statement (PostgreSQL and SQLite alike). Plain SQL: the hot path of every
# debit, where building the ORM query cost more CPU than running it.
_WALLET_ROW_SQL = """
SELECT c.id,
       (SELECT b.id FROM billing_balance b
         WHERE b.customer_id = c.id AND b.entity_id IS NULL
           AND b.feature_id = (SELECT f.id FROM billing_feature f WHERE f.slug = %(feature)s)),
       EXISTS (SELECT 1 FROM credits_wallet w WHERE w.customer_id = c.id AND w.frozen),
       (SELECT e.id FROM credits_creditentry e WHERE e.kind = 'debit' AND e.idempotency_key = %(key)s),
       (SELECT e.id FROM credits_creditentry e
         WHERE e.kind = 'debit' AND e.source_service = %(service)s AND e.job_id = %(job)s)
  FROM billing_customer c
 WHERE c.external_id = %(workspace)s AND c.deleted_at IS NULL
"""


def wallet_row(*, workspace_id: str, idempotency_key: str, job_id: str, source_service: str) -> WalletRow:
    """What a debit needs to know before it writes, in one query: the customer,
    its credit balance, whether staff froze it, and any debit this request
    repeats. Raises WorkspaceNotFound."""
    params = {"feature": settings.BILLING_CREDITS_FEATURE, "key": idempotency_key, "service": source_service,
              "job": job_id, "workspace": workspace_id}
    with connection.cursor() as cursor:
        cursor.execute(_WALLET_ROW_SQL, params)
        row = cursor.fetchone()
    if row is None:
        raise WorkspaceNotFound(workspace_id)
    customer_pk, balance_id, frozen, prior_by_key, prior_by_job = row
    return WalletRow(customer_pk, balance_id, bool(frozen), prior_by_key, prior_by_job)


def customer_for_workspace(*, workspace_id: str) -> Customer:
    customer = Customer.objects.filter(external_id=workspace_id, deleted_at__isnull=True).first()
    if customer is None:
        raise WorkspaceNotFound(workspace_id)
    return customer


@dataclass(frozen=True)
class Split:
    """Credits left in the subscription buckets (plan allowance and grants, spent
    first) and in the top-up buckets (spent last)."""

    subscription: int
    topup: int


def split_of(buckets) -> Split:
    """The split of a balance's active buckets: (kind, granted, consumed, unlimited) each."""
    subscription = topup = 0
    for kind, granted, consumed, unlimited in buckets:
        if unlimited:
            continue
        if kind == BalanceBucket.Kind.TOPUP:
            topup += granted - consumed
        else:
            subscription += granted - consumed
    return Split(subscription=subscription, topup=topup)


@dataclass(frozen=True)
class WalletBalance:
    balance_subscription: int
    balance_topup: int
    total: int
    reserved: int
    unlimited: bool
    frozen: bool
    plan_snapshot: dict | None
    period_start: datetime | None
    period_end: datetime | None


def wallet_balance(*, workspace_id: str, now: datetime) -> WalletBalance:
    """The workspace's credits: the split, the total ``check`` sees (granted less
    usage less reservations) and the current cycle of its plan allowance.
    Raises WorkspaceNotFound."""
    customer = customer_for_workspace(workspace_id=workspace_id)
    frozen = Wallet.objects.filter(customer=customer, frozen=True).exists()
    balance = Balance.objects.filter(
        customer=customer, feature__slug=settings.BILLING_CREDITS_FEATURE, entity__isnull=True
    ).first()
    buckets = []
    if balance is not None:
        buckets = list(BalanceBucket.objects.filter(balance=balance, active=True).select_related(
            "subscription__product", "subscription__version"))
    split = split_of((b.kind, b.granted, b.consumed, b.unlimited) for b in buckets)
    snapshot, period_start, period_end = _cycle(customer=customer, buckets=buckets)
    return WalletBalance(
        balance_subscription=split.subscription,
        balance_topup=split.topup,
        total=balance.remaining if balance is not None and balance.included else 0,
        reserved=balance.reserved if balance is not None else 0,
        unlimited=bool(balance and balance.included and balance.unlimited),
        frozen=frozen,
        plan_snapshot=snapshot,
        period_start=period_start,
        period_end=period_end,
    )


def _cycle(*, customer: Customer, buckets: list[BalanceBucket]):
    """(plan snapshot, period start, period end) of the plan allowance of credits:
    the plan bucket that resets soonest, else the customer's live main plan."""
    plan_buckets = [b for b in buckets if b.kind == BalanceBucket.Kind.PLAN and b.subscription is not None]
    plan_buckets.sort(key=lambda b: (b.next_reset_at is None, b.next_reset_at or b.created_at, b.pk))
    if plan_buckets:
        bucket = plan_buckets[0]
        sub = bucket.subscription
        snapshot = _snapshot(sub, allowance=None if bucket.unlimited else bucket.granted, reset=bucket.reset_interval)
        return (snapshot, bucket.period_start or sub.current_period_start,
                bucket.next_reset_at or sub.current_period_end)
    sub = (
        Subscription.objects.filter(customer=customer, status__in=Subscription.LIVE_STATUSES, product__is_add_on=False)
        .select_related("product", "version")
        .order_by("-created_at")
        .first()
    )
    if sub is None:
        return None, None, None
    return _snapshot(sub, allowance=0, reset="none"), sub.current_period_start, sub.current_period_end


def _snapshot(sub: Subscription, *, allowance: int | None, reset: str) -> dict:
    return {
        "subscriptionId": sub.pk,
        "product": sub.product.slug,
        "name": sub.product.name,
        "version": sub.version.version,
        "status": sub.status,
        "creditsAllowance": allowance,
        "resetInterval": reset,
    }


def debit_for_job(*, customer: Customer, job_id: str, source_service: str) -> CreditEntry | None:
    return CreditEntry.objects.filter(
        kind=CreditEntry.Kind.DEBIT, customer=customer, job_id=job_id, source_service=source_service
    ).first()
