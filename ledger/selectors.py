"""Reads of the ledger: the trial balance and the list of entries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Exists, OuterRef, Prefetch, Q, Sum
from django.db.models.functions import Coalesce

from ledger.models import Entry, Line, Side


@dataclass(frozen=True, slots=True)
class TrialBalanceRow:
    code: str
    name: str
    type: str
    currency: str
    debit: int
    credit: int
    # Signed by the account's normal side: debit - credit for a debit-normal
    # account, credit - debit for a credit-normal one.
    balance: int


@dataclass(frozen=True, slots=True)
class TrialBalance:
    at: datetime | None
    # One row per (account, currency) that has lines, ordered by code then currency.
    accounts: list[TrialBalanceRow]
    # Sums over every row. Only meaningful as money within one currency; across
    # several they only show that debits equal credits (see totals_by_currency).
    total_debit: int
    total_credit: int
    totals_by_currency: dict[str, dict[str, int]]


def trial_balance(*, at: datetime | None = None, currency: str | None = None) -> TrialBalance:
    """Debit and credit totals per account and currency, as of ``at`` (inclusive) if given.

    One aggregate query; entries posted after ``at`` are left out.
    """
    lines = Line.objects.all()
    if at is not None:
        lines = lines.filter(entry__posted_at__lte=at)
    if currency is not None:
        lines = lines.filter(currency=currency)
    grouped = (
        lines.values("account_id", "account__name", "account__type", "account__normal_side", "currency")
        .annotate(
            debit=Coalesce(Sum("amount", filter=Q(side=Side.DEBIT)), 0),
            credit=Coalesce(Sum("amount", filter=Q(side=Side.CREDIT)), 0),
        )
        .order_by("account_id", "currency")
    )
    rows = [
        TrialBalanceRow(
            code=g["account_id"],
            name=g["account__name"],
            type=g["account__type"],
            currency=g["currency"],
            debit=g["debit"],
            credit=g["credit"],
            balance=g["debit"] - g["credit"] if g["account__normal_side"] == Side.DEBIT else g["credit"] - g["debit"],
        )
        for g in grouped
    ]
    totals_by_currency: dict[str, dict[str, int]] = {}
    for row in rows:
        totals = totals_by_currency.setdefault(row.currency, {"debit": 0, "credit": 0})
        totals["debit"] += row.debit
        totals["credit"] += row.credit
    return TrialBalance(
        at=at,
        accounts=rows,
        total_debit=sum(row.debit for row in rows),
        total_credit=sum(row.credit for row in rows),
        totals_by_currency=dict(sorted(totals_by_currency.items())),
    )


def entry_list(
    *,
    since: datetime | None = None,
    account: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[Entry]:
    """Entries newest first (by id), with their lines prefetched.

    ``since`` keeps entries posted at or after it; ``account`` keeps entries
    with at least one line on that account; ``before_id`` is the cursor (ids
    below it). ``limit`` must be positive.
    """
    entries = Entry.objects.all()
    if since is not None:
        entries = entries.filter(posted_at__gte=since)
    if account is not None:
        entries = entries.filter(Exists(Line.objects.filter(entry=OuterRef("pk"), account_id=account)))
    if before_id is not None:
        entries = entries.filter(id__lt=before_id)
    entries = entries.prefetch_related(Prefetch("lines", queryset=Line.objects.order_by("id")))
    return list(entries.order_by("-id")[:limit])
