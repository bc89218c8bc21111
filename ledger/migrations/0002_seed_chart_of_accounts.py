"""Seed the chart of accounts.

The chart is copied in, not imported from ``ledger.accounts``: a migration is
history and must do the same thing in five years as today, whatever the live
chart then says. A later change to the chart gets a migration of its own (a
test checks that the migrated accounts match ``ledger.accounts.CHART``).
"""

from django.db import migrations

# (code, name, type, normal side): ledger.accounts.CHART as of this migration.
CHART = [
    ("1000", "Cash", "asset", "debit"),
    ("1100", "Payment gateway clearing", "asset", "debit"),
    ("1200", "Accounts Receivable", "asset", "debit"),
    ("2100", "Customer credit balance", "liability", "credit"),
    ("2200", "Deferred revenue", "liability", "credit"),
    ("4001", "Revenue", "revenue", "credit"),
    ("4900", "Discounts", "revenue", "debit"),
    ("4910", "Refunds", "revenue", "debit"),
    ("5000", "Payment processing fees", "expense", "debit"),
    ("6000", "Bad debt", "expense", "debit"),
]


def seed(apps, schema_editor):
    Account = apps.get_model("ledger", "Account")
    for code, name, type_, normal_side in CHART:
        Account.objects.update_or_create(
            code=code, defaults={"name": name, "type": type_, "normal_side": normal_side, "active": True}
        )


def unseed(apps, schema_editor):
    # Refused (ProtectedError) once an account has lines, as it should be.
    Account = apps.get_model("ledger", "Account")
    Account.objects.filter(code__in=[code for code, *_ in CHART]).delete()


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
