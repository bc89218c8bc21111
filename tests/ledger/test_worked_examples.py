"""Worked examples of the ledger, with the arithmetic written out to check by hand.

Amounts are minor units (cents). "DR 1200 2 900" means a debit line of 2 900 on
account 1200. A balance is signed by the account's normal side: debit - credit
for assets, expenses and the contra-revenue accounts 4900/4910; credit - debit
for liabilities and revenue.
"""

from datetime import timedelta

import pytest

from ledger.accounts import (
    CASH,
    CUSTOMER_CREDIT,
    DISCOUNTS,
    FEES,
    GATEWAY_CLEARING,
    RECEIVABLE,
    REFUNDS,
    REVENUE,
)
from ledger.selectors import trial_balance
from ledger.services import credit, debit, entry_post, entry_reverse


def _balances(at=None) -> dict[str, tuple[int, int, int]]:
    """{code: (debit, credit, balance)} for the one currency these examples use."""
    return {row.code: (row.debit, row.credit, row.balance) for row in trial_balance(at=at).accounts}


@pytest.mark.django_db
class TestInvoicePaymentAndPartialRefund:
    def test_the_trial_balance_after_invoice_payment_and_partial_refund(self, now):
        # 1. Invoice of 2 900 issued: the customer owes it, we have earned it.
        #    DR 1200 Receivable 2 900 / CR 4001 Revenue 2 900
        entry_post(
            lines=[debit(RECEIVABLE, 2900, "usd"), credit(REVENUE, 2900, "usd")],
            memo="Invoice 2025-0001", posted_at=now, source="invoice:pinv_1",
        )
        # 2. The customer pays it: cash in, nothing owed any more.
        #    DR 1000 Cash 2 900 / CR 1200 Receivable 2 900
        entry_post(
            lines=[debit(CASH, 2900, "usd"), credit(RECEIVABLE, 2900, "usd")],
            memo="Payment for 2025-0001", posted_at=now + timedelta(hours=1), source="payment:ppay_1",
        )
        # 3. Partial refund of 900: refunds (contra-revenue) up, cash out.
        #    DR 4910 Refunds 900 / CR 1000 Cash 900
        entry_post(
            lines=[debit(REFUNDS, 900, "usd"), credit(CASH, 900, "usd")],
            memo="Partial refund of 2025-0001", posted_at=now + timedelta(days=3), source="refund:pref_1",
        )

        balance = trial_balance()
        assert _balances() == {
            # code    debit  credit  balance
            "1000": (2900, 900, 2000),  # cash: 2 900 in - 900 out = 2 000 (debit-normal)
            "1200": (2900, 2900, 0),  # receivable: invoiced 2 900 - paid 2 900 = 0
            "4001": (0, 2900, 2900),  # revenue: 2 900 (credit-normal)
            "4910": (900, 0, 900),  # refunds: 900 (debit-normal, contra-revenue)
        }
        # Debits: 2 900 (1200) + 2 900 (1000) + 900 (4910) = 6 700.
        # Credits: 2 900 (4001) + 2 900 (1200) + 900 (1000) = 6 700.
        assert (balance.total_debit, balance.total_credit) == (6700, 6700)
        assert balance.totals_by_currency == {"usd": {"debit": 6700, "credit": 6700}}
        # Net revenue 2 900 - 900 = 2 000 is exactly the cash kept.
        assert _balances()["4001"][2] - _balances()["4910"][2] == _balances()["1000"][2] == 2000

        # Before the refund (end of day 1) the cash was still 2 900 and refunds had no row.
        day_one = _balances(at=now + timedelta(days=1))
        assert day_one["1000"] == (2900, 0, 2900)
        assert "4910" not in day_one


@pytest.mark.django_db
class TestDiscountedInvoicePaidThroughTheGateway:
    def test_the_coupon_and_the_gateway_fee_are_booked_on_their_own_accounts(self, now):
        # Invoice: list price 5 000 with a 20% coupon: 5 000 x 20% = 1 000 off, 4 000 due.
        #    DR 1200 Receivable 4 000 + DR 4900 Discounts 1 000 / CR 4001 Revenue 5 000
        entry_post(
            lines=[debit(RECEIVABLE, 4000, "usd"), debit(DISCOUNTS, 1000, "usd"), credit(REVENUE, 5000, "usd")],
            memo="Invoice 2025-0002 (coupon SAVE20)", posted_at=now,
        )
        # The gateway captures 4 000; the money sits with the gateway until payout.
        #    DR 1100 Gateway clearing 4 000 / CR 1200 Receivable 4 000
        entry_post(
            lines=[debit(GATEWAY_CLEARING, 4000, "usd"), credit(RECEIVABLE, 4000, "usd")],
            memo="Charge ch_1", posted_at=now,
        )
        # Payout, less the fee of 2.9% + 30: 4 000 x 0.029 = 116, + 30 = 146; 4 000 - 146 = 3 854.
        #    DR 1000 Cash 3 854 + DR 5000 Fees 146 / CR 1100 Gateway clearing 4 000
        entry_post(
            lines=[debit(CASH, 3854, "usd"), debit(FEES, 146, "usd"), credit(GATEWAY_CLEARING, 4000, "usd")],
            memo="Payout po_1", posted_at=now,
        )

        balance = trial_balance()
        assert _balances() == {
            "1000": (3854, 0, 3854),
            "1100": (4000, 4000, 0),  # cleared: in 4 000, out 4 000
            "1200": (4000, 4000, 0),
            "4001": (0, 5000, 5000),
            "4900": (1000, 0, 1000),
            "5000": (146, 0, 146),
        }
        # Debits: 4 000 + 1 000 + 4 000 + 3 854 + 146 = 13 000. Credits: 5 000 + 4 000 + 4 000 = 13 000.
        assert (balance.total_debit, balance.total_credit) == (13000, 13000)
        # Revenue 5 000 - discounts 1 000 - fees 146 = 3 854 = the cash received.
        assert 5000 - 1000 - 146 == _balances()["1000"][2]


@pytest.mark.django_db
class TestPrepaidCreditTopUpAndSpend:
    def test_credit_is_a_liability_until_it_is_spent(self, now):
        # Top-up of 10 000 paid in cash: we owe the customer that credit.
        #    DR 1000 Cash 10 000 / CR 2100 Customer credit 10 000
        entry_post(
            lines=[debit(CASH, 10000, "usd"), credit(CUSTOMER_CREDIT, 10000, "usd")],
            memo="Top-up", posted_at=now,
        )
        # An invoice of 2 500 settled from the credit: the liability shrinks, revenue is earned.
        #    DR 2100 Customer credit 2 500 / CR 4001 Revenue 2 500
        entry_post(
            lines=[debit(CUSTOMER_CREDIT, 2500, "usd"), credit(REVENUE, 2500, "usd")],
            memo="Invoice 2025-0003 paid from credit", posted_at=now,
        )

        balance = trial_balance()
        assert _balances() == {
            "1000": (10000, 0, 10000),
            "2100": (2500, 10000, 7500),  # still owed: 10 000 - 2 500 = 7 500 (credit-normal)
            "4001": (0, 2500, 2500),
        }
        # Debits 10 000 + 2 500 = 12 500 = credits 10 000 + 2 500.
        assert (balance.total_debit, balance.total_credit) == (12500, 12500)
        # Cash 10 000 = credit still owed 7 500 + revenue earned 2 500.
        assert _balances()["1000"][2] == _balances()["2100"][2] + _balances()["4001"][2]


@pytest.mark.django_db
class TestVoidedInvoice:
    def test_a_voided_invoice_leaves_every_balance_at_zero(self, now):
        # Invoice of 2 900:  DR 1200 2 900 / CR 4001 2 900
        invoice = entry_post(
            lines=[debit(RECEIVABLE, 2900, "usd"), credit(REVENUE, 2900, "usd")],
            memo="Invoice 2025-0004", posted_at=now, source="invoice:pinv_4",
        )
        # Voided the next day by its reversal:  DR 4001 2 900 / CR 1200 2 900
        entry_reverse(entry=invoice, memo="Void 2025-0004", posted_at=now + timedelta(days=1))

        assert _balances() == {
            "1200": (2900, 2900, 0),  # 2 900 - 2 900
            "4001": (2900, 2900, 0),  # 2 900 - 2 900
        }
        # Between the two, the invoice stood: receivable 2 900, revenue 2 900.
        assert _balances(at=now + timedelta(hours=1)) == {"1200": (2900, 0, 2900), "4001": (0, 2900, 2900)}
        assert (trial_balance().total_debit, trial_balance().total_credit) == (5800, 5800)
