import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction

from billing.errors import BillingError, Conflict
from ledger import accounts
from ledger.models import Account, Entry, Line
from ledger.selectors import trial_balance
from ledger.services import LedgerError, LineSpec, UnbalancedEntry, credit, debit, entry_post, entry_reverse

only_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks and concurrent transactions need PostgreSQL"
)


def _post(lines, now, memo="test entry"):
    return entry_post(lines=lines, memo=memo, posted_at=now)


@pytest.mark.django_db
class TestEntryPost:
    def test_a_balanced_entry_is_posted_with_its_lines(self, now):
        entry = entry_post(
            lines=[debit(accounts.CASH, 2900, "usd"), credit(accounts.RECEIVABLE, 2900, "usd")],
            memo="Payment for invoice 2025-0001",
            posted_at=now,
            source="payment:ppay_1",
        )
        entry = Entry.objects.get(pk=entry.pk)
        assert (entry.memo, entry.source, entry.posted_at, entry.reversal_of) == (
            "Payment for invoice 2025-0001",
            "payment:ppay_1",
            now,
            None,
        )
        assert [(line.account_id, line.side, line.amount, line.currency) for line in entry.lines.all()] == [
            ("1000", "debit", 2900, "usd"),
            ("1200", "credit", 2900, "usd"),
        ]

    def test_an_entry_may_have_many_lines_on_each_side(self, now):
        # Invoice of 5 000 with a 1 000 coupon: DR 1200 4 000, DR 4900 1 000 / CR 4001 5 000.
        entry = _post(
            [debit(accounts.RECEIVABLE, 4000, "usd"), debit(accounts.DISCOUNTS, 1000, "usd"),
             credit(accounts.REVENUE, 5000, "usd")],
            now,
        )
        assert entry.lines.count() == 3

    def test_an_unbalanced_entry_is_refused_and_nothing_is_written(self, now):
        with pytest.raises(UnbalancedEntry) as refused:
            _post([debit(accounts.CASH, 2900, "usd"), credit(accounts.RECEIVABLE, 2800, "usd")], now)
        error = refused.value
        assert (error.status, error.code) == (422, "LEDGER_UNBALANCED")
        assert error.details == {"totalsByCurrency": {"usd": {"debit": 2900, "credit": 2800}}}
        assert isinstance(error, BillingError)
        assert (Entry.objects.count(), Line.objects.count()) == (0, 0)

    def test_an_entry_balanced_in_sum_but_not_per_currency_is_refused(self, now):
        # 100 usd debit against 100 eur credit: equal numbers, different money.
        with pytest.raises(UnbalancedEntry) as refused:
            _post([debit(accounts.CASH, 100, "usd"), credit(accounts.REVENUE, 100, "eur")], now)
        assert refused.value.details == {
            "totalsByCurrency": {"eur": {"debit": 0, "credit": 100}, "usd": {"debit": 100, "credit": 0}}
        }
        assert Entry.objects.count() == 0

    def test_an_entry_balanced_in_each_of_two_currencies_is_posted(self, now):
        entry = _post(
            [debit(accounts.CASH, 100, "usd"), credit(accounts.REVENUE, 100, "usd"),
             debit(accounts.CASH, 90, "eur"), credit(accounts.REVENUE, 90, "eur")],
            now,
        )
        assert entry.lines.count() == 4

    def test_an_entry_with_fewer_than_two_lines_is_refused(self, now):
        with pytest.raises(LedgerError, match="at least two lines"):
            _post([debit(accounts.CASH, 100, "usd")], now)
        with pytest.raises(LedgerError):
            _post([], now)

    @pytest.mark.parametrize("amount", [0, -100], ids=["zero", "negative"])
    def test_an_amount_that_is_not_positive_is_refused(self, now, amount):
        with pytest.raises(LedgerError) as refused:
            _post([debit(accounts.CASH, amount, "usd"), credit(accounts.REVENUE, amount, "usd")], now)
        assert (refused.value.status, refused.value.code) == (422, "LEDGER_INVALID")
        assert refused.value.details[0]["field"] == "lines[0].amount"
        assert Entry.objects.count() == 0

    @pytest.mark.parametrize("amount", [True, 29.0, "2900", None], ids=["bool", "float", "str", "none"])
    def test_an_amount_that_is_not_an_int_is_refused(self, now, amount):
        with pytest.raises(LedgerError) as refused:
            _post([debit(accounts.CASH, amount, "usd"), credit(accounts.REVENUE, amount, "usd")], now)
        assert refused.value.details[0]["field"] == "lines[0].amount"

    def test_an_amount_too_large_for_one_line_is_refused(self, now):
        with pytest.raises(LedgerError):
            _post([debit(accounts.CASH, 10**15 + 1, "usd"), credit(accounts.REVENUE, 10**15 + 1, "usd")], now)

    @pytest.mark.parametrize("currency", ["USD", "us", "usdt", "usd\n", ""])
    def test_a_currency_that_is_not_three_lowercase_letters_is_refused(self, now, currency):
        with pytest.raises(LedgerError) as refused:
            _post([debit(accounts.CASH, 100, currency), credit(accounts.REVENUE, 100, currency)], now)
        assert refused.value.details[0]["field"] == "lines[0].currency"

    def test_a_side_other_than_debit_or_credit_is_refused(self, now):
        with pytest.raises(LedgerError):
            _post([LineSpec(account=accounts.CASH, side="both", amount=100, currency="usd"),
                   credit(accounts.REVENUE, 100, "usd")], now)

    def test_an_unknown_account_is_refused(self, now):
        with pytest.raises(LedgerError) as refused:
            _post([debit("1999", 100, "usd"), credit(accounts.REVENUE, 100, "usd")], now)
        assert refused.value.details == [{"field": "lines[0].account", "message": "no such account: '1999'"}]
        assert Entry.objects.count() == 0

    def test_an_inactive_account_is_refused(self, now):
        Account.objects.filter(code=accounts.BAD_DEBT).update(active=False)
        with pytest.raises(LedgerError, match="inactive"):
            _post([debit(accounts.BAD_DEBT, 100, "usd"), credit(accounts.RECEIVABLE, 100, "usd")], now)

    def test_a_naive_posted_at_is_refused(self, now):
        with pytest.raises(LedgerError, match="posted_at"):
            _post([debit(accounts.CASH, 100, "usd"), credit(accounts.REVENUE, 100, "usd")], now.replace(tzinfo=None))

    def test_a_memo_longer_than_500_characters_is_refused(self, now):
        with pytest.raises(LedgerError, match="memo"):
            _post([debit(accounts.CASH, 100, "usd"), credit(accounts.REVENUE, 100, "usd")], now, memo="x" * 501)

    def test_the_entry_rolls_back_with_the_callers_transaction(self, now):
        # entry_post joins the caller's transaction: a use case that fails later takes the entry with it.
        with pytest.raises(RuntimeError), transaction.atomic():
            _post([debit(accounts.CASH, 100, "usd"), credit(accounts.REVENUE, 100, "usd")], now)
            raise RuntimeError("the use case failed after posting")
        assert Entry.objects.count() == 0


@pytest.mark.django_db
class TestEntryReverse:
    def test_a_reversal_swaps_every_side_and_points_back(self, invoice_entry, now):
        later = now + timedelta(days=1)
        reversal = entry_reverse(entry=invoice_entry, memo="Void invoice 2025-0001", posted_at=later)
        assert reversal.reversal_of == invoice_entry
        assert Entry.objects.get(pk=invoice_entry.pk).reversed_by == reversal
        assert (reversal.memo, reversal.posted_at) == ("Void invoice 2025-0001", later)
        assert reversal.source == "invoice:pinv_1"  # the reversal belongs to the same document
        assert [(line.account_id, line.side, line.amount, line.currency) for line in reversal.lines.all()] == [
            ("1200", "credit", 2900, "usd"),
            ("4001", "debit", 2900, "usd"),
        ]

    def test_a_reversal_nets_the_trial_balance_to_zero(self, invoice_entry, now):
        entry_reverse(entry=invoice_entry, memo="Void", posted_at=now)
        balance = trial_balance()
        # 1200: DR 2 900 (invoice) / CR 2 900 (reversal) -> 0; 4001: CR 2 900 / DR 2 900 -> 0.
        assert [(row.code, row.debit, row.credit, row.balance) for row in balance.accounts] == [
            ("1200", 2900, 2900, 0),
            ("4001", 2900, 2900, 0),
        ]

    def test_an_entry_can_be_reversed_only_once(self, invoice_entry, now):
        first = entry_reverse(entry=invoice_entry, memo="Void", posted_at=now)
        with pytest.raises(Conflict) as refused:
            entry_reverse(entry=invoice_entry, memo="Void again", posted_at=now)
        assert refused.value.status == 409
        assert refused.value.details == {"entry": invoice_entry.pk, "reversedBy": first.pk}
        assert Entry.objects.filter(reversal_of=invoice_entry).count() == 1

    def test_a_reversal_goes_through_on_an_account_deactivated_since(self, invoice_entry, now):
        Account.objects.filter(code=accounts.REVENUE).update(active=False)
        reversal = entry_reverse(entry=invoice_entry, memo="Void", posted_at=now)
        assert reversal.lines.count() == 2


@pytest.mark.postgres
@only_postgres
@pytest.mark.django_db(transaction=True)
class TestEntryReverseRace:
    def test_two_concurrent_reversals_post_one_and_refuse_the_other(self, now):
        entry = _post([debit(accounts.RECEIVABLE, 2900, "usd"), credit(accounts.REVENUE, 2900, "usd")], now)
        first_inserted, release = threading.Event(), threading.Event()
        outcome = {}

        def first():
            try:
                with transaction.atomic():
                    outcome["first"] = entry_reverse(entry=Entry.objects.get(pk=entry.pk), memo="A", posted_at=now)
                    first_inserted.set()
                    release.wait(10)  # hold the uncommitted reversal until the second one waits on it
            finally:
                connection.close()

        def second():
            first_inserted.wait(10)
            try:
                with transaction.atomic():
                    entry_reverse(entry=Entry.objects.get(pk=entry.pk), memo="B", posted_at=now)
            except Conflict as refused:
                outcome["second"] = refused
            finally:
                connection.close()

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        # The second insert blocks on reversal_of's UNIQUE index until the first commits.
        deadline = time.monotonic() + 10
        while not _a_backend_waits_on_a_lock() and time.monotonic() < deadline:
            time.sleep(0.05)
        release.set()
        for thread in threads:
            thread.join(15)

        assert isinstance(outcome.get("second"), Conflict)
        assert list(Entry.objects.filter(reversal_of=entry).values_list("pk", flat=True)) == [outcome["first"].pk]


def _a_backend_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0
