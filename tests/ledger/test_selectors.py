from datetime import timedelta

import pytest

from ledger import accounts
from ledger.selectors import TrialBalanceRow, entry_list, trial_balance
from ledger.services import credit, debit, entry_post


def _post(lines, posted_at, memo="test entry"):
    return entry_post(lines=lines, memo=memo, posted_at=posted_at)


@pytest.mark.django_db
class TestTrialBalance:
    def test_an_empty_ledger_has_no_rows_and_zero_totals(self):
        balance = trial_balance()
        assert (balance.accounts, balance.total_debit, balance.total_credit, balance.totals_by_currency) == (
            [], 0, 0, {}
        )

    def test_rows_are_per_account_and_currency_ordered_by_code_then_currency(self, now):
        _post([debit(accounts.CASH, 500, "usd"), credit(accounts.REVENUE, 500, "usd")], now)
        _post([debit(accounts.CASH, 300, "eur"), credit(accounts.REVENUE, 300, "eur")], now)
        balance = trial_balance()
        assert [(row.code, row.currency) for row in balance.accounts] == [
            ("1000", "eur"), ("1000", "usd"), ("4001", "eur"), ("4001", "usd"),
        ]
        assert balance.accounts[0] == TrialBalanceRow(
            code="1000", name="Cash", type="asset", currency="eur", debit=300, credit=0, balance=300
        )
        assert balance.totals_by_currency == {
            "eur": {"debit": 300, "credit": 300},
            "usd": {"debit": 500, "credit": 500},
        }
        assert (balance.total_debit, balance.total_credit) == (800, 800)

    def test_the_balance_is_signed_by_the_normal_side(self, now):
        # Customer credit (2100, credit-normal) bought for 1 000, then 400 of it refunded:
        # 2100 CR 1 000, DR 400 -> balance 1 000 - 400 = 600; 1000 DR 1 000, CR 400 -> 600.
        _post([debit(accounts.CASH, 1000, "usd"), credit(accounts.CUSTOMER_CREDIT, 1000, "usd")], now)
        _post([debit(accounts.CUSTOMER_CREDIT, 400, "usd"), credit(accounts.CASH, 400, "usd")], now)
        rows = {row.code: row for row in trial_balance().accounts}
        assert (rows["2100"].debit, rows["2100"].credit, rows["2100"].balance) == (400, 1000, 600)
        assert (rows["1000"].debit, rows["1000"].credit, rows["1000"].balance) == (1000, 400, 600)

    def test_at_leaves_out_entries_posted_later(self, now):
        _post([debit(accounts.CASH, 100, "usd"), credit(accounts.REVENUE, 100, "usd")], now)
        _post([debit(accounts.CASH, 50, "usd"), credit(accounts.REVENUE, 50, "usd")], now + timedelta(seconds=1))
        assert trial_balance(at=now).total_debit == 100  # posted exactly at `at`: included
        assert trial_balance(at=now - timedelta(seconds=1)).accounts == []
        assert trial_balance().total_debit == 150

    def test_currency_keeps_only_that_currency(self, now):
        _post([debit(accounts.CASH, 500, "usd"), credit(accounts.REVENUE, 500, "usd")], now)
        _post([debit(accounts.CASH, 300, "eur"), credit(accounts.REVENUE, 300, "eur")], now)
        balance = trial_balance(currency="eur")
        assert {row.currency for row in balance.accounts} == {"eur"}
        assert (balance.total_debit, balance.total_credit) == (300, 300)

    def test_it_is_one_query(self, now, django_assert_num_queries):
        _post([debit(accounts.CASH, 500, "usd"), credit(accounts.REVENUE, 500, "usd")], now)
        _post([debit(accounts.CASH, 300, "eur"), credit(accounts.REVENUE, 300, "eur")], now)
        with django_assert_num_queries(1):
            trial_balance()


@pytest.mark.django_db
class TestEntryList:
    def test_entries_come_newest_first_with_their_lines(self, now, django_assert_num_queries):
        first = _post([debit(accounts.RECEIVABLE, 100, "usd"), credit(accounts.REVENUE, 100, "usd")], now)
        second = _post([debit(accounts.CASH, 100, "usd"), credit(accounts.RECEIVABLE, 100, "usd")], now)
        with django_assert_num_queries(2):  # the entries, then all their lines
            entries = entry_list(limit=10)
            lines = [[line.account_id for line in entry.lines.all()] for entry in entries]
        assert entries == [second, first]
        assert lines == [["1000", "1200"], ["1200", "4001"]]

    def test_account_keeps_entries_with_a_line_on_it_once_each(self, now):
        invoice = _post([debit(accounts.RECEIVABLE, 100, "usd"), credit(accounts.REVENUE, 100, "usd")], now)
        _post([debit(accounts.CASH, 100, "usd"), credit(accounts.FEES, 100, "usd")], now)
        split = _post(
            [debit(accounts.RECEIVABLE, 60, "usd"), debit(accounts.RECEIVABLE, 40, "usd"),
             credit(accounts.REVENUE, 100, "usd")],
            now,
        )
        assert entry_list(account=accounts.RECEIVABLE, limit=10) == [split, invoice]

    def test_since_and_before_id_narrow_the_list(self, now):
        old = _post([debit(accounts.CASH, 1, "usd"), credit(accounts.REVENUE, 1, "usd")], now - timedelta(days=2))
        middle = _post([debit(accounts.CASH, 2, "usd"), credit(accounts.REVENUE, 2, "usd")], now)
        new = _post([debit(accounts.CASH, 3, "usd"), credit(accounts.REVENUE, 3, "usd")], now)
        assert entry_list(since=now, limit=10) == [new, middle]
        assert entry_list(before_id=new.pk, limit=10) == [middle, old]
        assert entry_list(limit=1) == [new]
