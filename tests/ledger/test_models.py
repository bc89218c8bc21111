import pytest
from django.db import DataError, DatabaseError, IntegrityError, connection, transaction

from ledger import accounts
from ledger.models import Account, Entry, LedgerImmutable, Line

only_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="database triggers are PostgreSQL's; SQLite relies on the Python guard"
)


@pytest.mark.django_db
class TestChartOfAccounts:
    def test_the_chart_is_seeded_by_the_migrations(self):
        assert Account.objects.filter(code__in=["1000", "1200", "4001"]).count() == 3

    def test_the_migrated_chart_matches_ledger_accounts_chart(self):
        migrated = set(Account.objects.values_list("code", "name", "type", "normal_side"))
        assert migrated == set(accounts.CHART)

    def test_contra_revenue_accounts_are_debit_normal(self):
        for code in (accounts.DISCOUNTS, accounts.REFUNDS):
            account = Account.objects.get(code=code)
            assert (account.type, account.normal_side) == ("revenue", "debit")

    def test_an_unknown_account_type_is_refused_by_the_database(self):
        with pytest.raises(IntegrityError), transaction.atomic():
            Account.objects.create(code="9999", name="Nonsense", type="gadget", normal_side="debit")


@pytest.mark.django_db
class TestPythonGuard:
    def test_saving_a_stored_entry_is_refused(self, invoice_entry):
        invoice_entry.memo = "rewritten"
        with pytest.raises(LedgerImmutable):
            invoice_entry.save()
        assert Entry.objects.get(pk=invoice_entry.pk).memo == "Invoice 2025-0001"

    def test_saving_a_stored_line_is_refused(self, invoice_entry):
        line = invoice_entry.lines.first()
        line.amount = 1
        with pytest.raises(LedgerImmutable):
            line.save()
        assert Line.objects.get(pk=line.pk).amount == 2900

    def test_deleting_an_entry_or_a_line_is_refused(self, invoice_entry):
        with pytest.raises(LedgerImmutable):
            invoice_entry.delete()
        with pytest.raises(LedgerImmutable):
            invoice_entry.lines.first().delete()
        assert Line.objects.filter(entry=invoice_entry).count() == 2

    def test_queryset_update_and_delete_are_refused(self, invoice_entry):
        with pytest.raises(LedgerImmutable):
            Entry.objects.filter(pk=invoice_entry.pk).update(memo="rewritten")
        with pytest.raises(LedgerImmutable):
            Line.objects.all().update(amount=1)
        with pytest.raises(LedgerImmutable):
            Line.objects.all().delete()
        with pytest.raises(LedgerImmutable):
            Entry.objects.all().delete()
        assert sorted(Line.objects.values_list("amount", flat=True)) == [2900, 2900]

    def test_bulk_update_is_refused(self, invoice_entry):
        lines = list(invoice_entry.lines.all())
        for line in lines:
            line.amount = 1
        with pytest.raises(LedgerImmutable):
            Line.objects.bulk_update(lines, ["amount"])

    def test_the_refusal_is_a_billing_error_with_a_code(self, invoice_entry):
        with pytest.raises(LedgerImmutable) as refused:
            invoice_entry.delete()
        assert (refused.value.status, refused.value.code) == (409, "LEDGER_IMMUTABLE")


def _line(entry, **overrides):
    fields = {"entry": entry, "account_id": accounts.CASH, "side": "debit", "amount": 100, "currency": "usd"}
    return Line(**{**fields, **overrides})


@pytest.mark.django_db
class TestDatabaseConstraints:
    """CHECK constraints hold on both SQLite and PostgreSQL, whatever Python lets through."""

    @pytest.mark.parametrize("amount", [0, -100])
    def test_a_line_amount_that_is_not_positive_is_refused(self, invoice_entry, amount):
        with pytest.raises(IntegrityError), transaction.atomic():
            Line.objects.bulk_create([_line(invoice_entry, amount=amount)])

    @pytest.mark.parametrize("currency", ["USD", "us", "u5d"])
    def test_a_currency_that_is_not_three_lowercase_letters_is_refused(self, invoice_entry, currency):
        with pytest.raises(IntegrityError), transaction.atomic():
            Line.objects.bulk_create([_line(invoice_entry, currency=currency)])

    def test_a_currency_with_a_trailing_newline_is_refused(self, invoice_entry):
        # SQLite ignores varchar(3), so the CHECK's \Z refuses "usd\n" there (a "$" would let it
        # through); PostgreSQL refuses it first as too long for varchar(3), a DataError.
        with pytest.raises((IntegrityError, DataError)), transaction.atomic():
            Line.objects.bulk_create([_line(invoice_entry, currency="usd\n")])

    def test_a_side_other_than_debit_or_credit_is_refused(self, invoice_entry):
        with pytest.raises(IntegrityError), transaction.atomic():
            Line.objects.bulk_create([_line(invoice_entry, side="both")])

    def test_a_valid_line_is_accepted(self, invoice_entry):
        # The control for the refusals above: the same line with good values goes in.
        Line.objects.bulk_create([_line(invoice_entry)])
        assert invoice_entry.lines.count() == 3


@pytest.mark.postgres
@only_postgres
@pytest.mark.django_db
class TestDatabaseTriggers:
    def _execute(self, sql, params=()):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)

    def test_a_raw_update_of_a_line_is_refused(self, invoice_entry):
        with pytest.raises(DatabaseError, match="ledger rows are immutable"), transaction.atomic():
            self._execute("UPDATE ledger_line SET amount = 1 WHERE entry_id = %s", [invoice_entry.pk])
        assert sorted(Line.objects.values_list("amount", flat=True)) == [2900, 2900]

    def test_a_raw_update_of_an_entry_is_refused(self, invoice_entry):
        with pytest.raises(DatabaseError, match="ledger rows are immutable"), transaction.atomic():
            self._execute("UPDATE ledger_entry SET memo = 'rewritten' WHERE id = %s", [invoice_entry.pk])

    def test_a_raw_delete_of_lines_is_refused(self, invoice_entry):
        with pytest.raises(DatabaseError, match="ledger rows are immutable"), transaction.atomic():
            self._execute("DELETE FROM ledger_line")
        assert Line.objects.count() == 2

    def test_a_raw_delete_of_entries_is_refused(self, invoice_entry):
        with pytest.raises(DatabaseError, match="ledger rows are immutable"), transaction.atomic():
            self._execute("DELETE FROM ledger_entry")
        assert Entry.objects.count() == 1

    def test_truncate_still_works_for_the_test_flush(self, invoice_entry):
        with transaction.atomic():
            # Fire the deferred foreign-key checks of the fixture's inserts first: PostgreSQL
            # will not truncate a table with pending trigger events in the same transaction.
            self._execute("SET CONSTRAINTS ALL IMMEDIATE")
            # CASCADE: invoices and payments point at entries (Django's flush truncates them together).
            self._execute("TRUNCATE ledger_line, ledger_entry CASCADE")
            assert Entry.objects.count() == 0
            transaction.set_rollback(True)
        assert Entry.objects.count() == 1
