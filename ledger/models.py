"""The double-entry ledger: accounts, entries and their lines.

An ``Entry`` is written once, with its lines, by ``ledger.services.entry_post``
and never changed: a correction is a reversing entry. Python refuses a change
here (``save`` on a stored row, ``delete``, ``QuerySet.update``/``delete``);
on PostgreSQL a trigger refuses it too (migration 0003), so raw SQL cannot
slip past.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from billing.errors import BillingError


class LedgerImmutable(BillingError):
    """Someone tried to change or delete a posted ledger row."""

    status = 409
    code = "LEDGER_IMMUTABLE"

    def __init__(self, what: str):
        super().__init__(f"{what}: ledger rows are immutable; post a reversing entry instead")


class Side(models.TextChoices):
    DEBIT = "debit"
    CREDIT = "credit"


class AccountType(models.TextChoices):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    REVENUE = "revenue"
    EXPENSE = "expense"


class Account(models.Model):
    """One account of the chart (``ledger.accounts``), keyed by its code, e.g. "1200"."""

    code = models.CharField(primary_key=True, max_length=10)
    name = models.CharField(max_length=200)
    type = models.CharField(max_length=10, choices=AccountType.choices)
    # The side on which the balance normally grows: the sign of the trial balance.
    normal_side = models.CharField(max_length=6, choices=Side.choices)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(condition=Q(type__in=AccountType.values), name="ledger_account_type_valid"),
            models.CheckConstraint(condition=Q(normal_side__in=Side.values), name="ledger_account_normal_side_valid"),
        ]

    def __str__(self):
        return f"{self.code} {self.name}"


class ImmutableQuerySet(models.QuerySet):
    """Bulk writes that would change posted rows are refused. ``bulk_create`` stays."""

    def update(self, **kwargs):
        raise LedgerImmutable(f"{self.model.__name__}.objects.update()")

    def delete(self):
        raise LedgerImmutable(f"{self.model.__name__}.objects.delete()")


class Entry(models.Model):
    """One balanced journal entry: the lines' debits equal their credits in every currency."""

    id = models.BigAutoField(primary_key=True)
    posted_at = models.DateTimeField(db_index=True)
    memo = models.CharField(max_length=500)
    # The business document behind the entry, e.g. "invoice:pinv_123".
    source = models.CharField(max_length=200, blank=True, default="")
    # One-to-one: an entry can be reversed once only (the database's UNIQUE says so).
    reversal_of = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversed_by"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ImmutableQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "entries"

    def __str__(self):
        return f"#{self.pk} {self.memo}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise LedgerImmutable(f"Entry #{self.pk}.save()")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise LedgerImmutable(f"Entry #{self.pk}.delete()")


class Line(models.Model):
    """One side of an entry: a positive amount of minor units on one account, never signed."""

    id = models.BigAutoField(primary_key=True)
    entry = models.ForeignKey(Entry, on_delete=models.PROTECT, related_name="lines")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="lines")
    side = models.CharField(max_length=6, choices=Side.choices)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)

    objects = ImmutableQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="ledger_line_amount_positive"),
            models.CheckConstraint(condition=Q(side__in=Side.values), name="ledger_line_side_valid"),
            # \A and \Z (not ^ and $) so "usd\n" is refused too; both PostgreSQL's
            # regex engine and Python's (Django's REGEXP function on SQLite) know them.
            models.CheckConstraint(condition=Q(currency__regex=r"\A[a-z]{3}\Z"), name="ledger_line_currency_iso"),
        ]

    def __str__(self):
        return f"{self.side} {self.account_id} {self.amount} {self.currency}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise LedgerImmutable(f"Line #{self.pk}.save()")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise LedgerImmutable(f"Line #{self.pk}.delete()")
