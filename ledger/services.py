"""Writes to the ledger: post a balanced entry, reverse one.

Both are helpers that a use case calls inside its own transaction; they join
it (plain ``transaction.atomic()``), so the entry commits or rolls back with
the business change it records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from django.db import IntegrityError, transaction

from billing.errors import BillingError, Conflict
from billing.money import CURRENCY_RE, MAX_AMOUNT
from ledger.models import Account, Entry, Line, Side


class LedgerError(BillingError):
    """An entry that cannot be posted as given."""

    status = 422
    code = "LEDGER_INVALID"


class UnbalancedEntry(LedgerError):
    """Debits differ from credits in at least one currency.

    ``details`` is ``{"totalsByCurrency": {currency: {"debit": int, "credit": int}}}``.
    """

    code = "LEDGER_UNBALANCED"

    def __init__(self, totals: dict[str, dict[str, int]]):
        unbalanced = ", ".join(
            f"{currency}: debit {t['debit']} != credit {t['credit']}"
            for currency, t in totals.items()
            if t["debit"] != t["credit"]
        )
        super().__init__(f"Unbalanced entry ({unbalanced})", details={"totalsByCurrency": totals})


@dataclass(frozen=True, slots=True)
class LineSpec:
    """One line to post: a positive amount of minor units on one side of one account."""

    account: str
    side: Literal["debit", "credit"]
    amount: int
    currency: str


def debit(account: str, amount: int, currency: str) -> LineSpec:
    return LineSpec(account=account, side=Side.DEBIT.value, amount=amount, currency=currency)


def credit(account: str, amount: int, currency: str) -> LineSpec:
    return LineSpec(account=account, side=Side.CREDIT.value, amount=amount, currency=currency)


def entry_post(*, lines: Sequence[LineSpec], memo: str, posted_at: datetime, source: str = "") -> Entry:
    """Post one entry with its lines, after checking that it balances in every currency.

    Raises:
        UnbalancedEntry: debits != credits for some currency (code LEDGER_UNBALANCED, 422).
        LedgerError: fewer than two lines; an amount that is not an int (bools and floats
            included), not positive or above ``billing.money.MAX_AMOUNT``; a side other than
            debit/credit; a currency that is not three lowercase letters; an unknown or
            inactive account; a naive ``posted_at``; a memo or source too long (422).
    """
    _check_header(memo=memo, posted_at=posted_at, source=source)
    _check_lines(lines)
    with transaction.atomic():
        return _entry_create(lines=lines, memo=memo, posted_at=posted_at, source=source, reversal_of=None)


def entry_reverse(*, entry: Entry, memo: str, posted_at: datetime) -> Entry:
    """Post the reversal of ``entry``: the same lines with every side swapped.

    The reversal keeps the entry's ``source`` and points back at it through
    ``reversal_of``. Accounts deactivated since the entry was posted do not
    stop a reversal.

    Raises:
        Conflict: the entry has already been reversed (409).
        LedgerError: a naive ``posted_at`` or a memo too long (422).
    """
    _check_header(memo=memo, posted_at=posted_at, source=entry.source)
    swapped = [
        LineSpec(
            account=line.account_id,
            side=Side.CREDIT.value if line.side == Side.DEBIT else Side.DEBIT.value,
            amount=line.amount,
            currency=line.currency,
        )
        for line in entry.lines.order_by("id")
    ]
    if Entry.objects.filter(reversal_of=entry).exists():
        raise _already_reversed(entry)
    try:
        with transaction.atomic():
            return _entry_create(
                lines=swapped, memo=memo, posted_at=posted_at, source=entry.source, reversal_of=entry
            )
    except IntegrityError:
        # A concurrent reversal won the race: the UNIQUE on reversal_of refused this one.
        raise _already_reversed(entry) from None


def _already_reversed(entry: Entry) -> Conflict:
    reversed_by = Entry.objects.filter(reversal_of=entry).values_list("pk", flat=True).first()
    return Conflict(
        f"Entry #{entry.pk} has already been reversed", details={"entry": entry.pk, "reversedBy": reversed_by}
    )


def _entry_create(
    *, lines: Sequence[LineSpec], memo: str, posted_at: datetime, source: str, reversal_of: Entry | None
) -> Entry:
    entry = Entry.objects.create(posted_at=posted_at, memo=memo, source=source, reversal_of=reversal_of)
    Line.objects.bulk_create(
        Line(entry=entry, account_id=spec.account, side=spec.side, amount=spec.amount, currency=spec.currency)
        for spec in lines
    )
    return entry


def _invalid(field: str, message: str) -> LedgerError:
    return LedgerError(f"{field}: {message}", details=[{"field": field, "message": message}])


def _check_header(*, memo: str, posted_at: datetime, source: str) -> None:
    if not isinstance(posted_at, datetime) or posted_at.tzinfo is None:
        raise _invalid("posted_at", "must be a timezone-aware datetime")
    max_memo = Entry._meta.get_field("memo").max_length
    if not isinstance(memo, str) or len(memo) > max_memo:
        raise _invalid("memo", f"must be a string of at most {max_memo} characters")
    max_source = Entry._meta.get_field("source").max_length
    if not isinstance(source, str) or len(source) > max_source:
        raise _invalid("source", f"must be a string of at most {max_source} characters")


def _check_lines(lines: Sequence[LineSpec]) -> None:
    if len(lines) < 2:
        raise _invalid("lines", "an entry needs at least two lines")
    totals: dict[str, dict[str, int]] = {}
    for i, spec in enumerate(lines):
        field = f"lines[{i}]"
        if not isinstance(spec, LineSpec):
            raise _invalid(field, "must be a LineSpec")
        if not isinstance(spec.account, str):
            raise _invalid(f"{field}.account", "must be an account code string, e.g. '1200'")
        if spec.side not in Side.values:
            raise _invalid(f"{field}.side", "must be 'debit' or 'credit'")
        if isinstance(spec.amount, bool) or not isinstance(spec.amount, int):
            raise _invalid(f"{field}.amount", f"must be an int of minor units, not {type(spec.amount).__name__}")
        if not 0 < spec.amount <= MAX_AMOUNT:
            raise _invalid(f"{field}.amount", f"must be between 1 and {MAX_AMOUNT}")
        if not isinstance(spec.currency, str) or not CURRENCY_RE.fullmatch(spec.currency):
            raise _invalid(f"{field}.currency", "must be three lowercase letters, e.g. 'usd'")
        by_side = totals.setdefault(spec.currency, {"debit": 0, "credit": 0})
        by_side[spec.side] += spec.amount

    if any(t["debit"] != t["credit"] for t in totals.values()):
        raise UnbalancedEntry(dict(sorted(totals.items())))

    codes = {spec.account for spec in lines}
    active = dict(Account.objects.filter(code__in=codes).values_list("code", "active"))
    for i, spec in enumerate(lines):
        if spec.account not in active:
            raise _invalid(f"lines[{i}].account", f"no such account: {spec.account!r}")
        if not active[spec.account]:
            raise _invalid(f"lines[{i}].account", f"account {spec.account} is inactive")
