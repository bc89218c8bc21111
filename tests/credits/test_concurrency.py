"""Races on PostgreSQL: many signed requests at once against one wallet, through HTTP.
Each thread has its own database connection and closes it at the end."""


import pytest
from django.utils import timezone

from billing.models import UsageEvent
from billing.services.api_keys import api_key_create
from credits.models import CreditEntry
from tests.billing.billing_helpers import assert_books_reconcile
from tests.conftest import postgres_only
from tests.credits.credits_helpers import SignedClient, assert_balance_invariants, credits_balance, make_wallet
from tests.concurrency import run_concurrently

pytestmark = [*postgres_only, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def wallet(secret):
    """ws1 with 30 credits: 20 of its plan and a top-up of 10."""
    from rest_framework.test import APIClient

    _, raw = api_key_create(name="race", type="secret", now=timezone.now())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    make_wallet(client, plan=20, topup=10)
    assert credits_balance().remaining == 30
    yield SignedClient(secret)
    assert_balance_invariants()
    assert_books_reconcile()


class TestHotWallet:
    def test_50_concurrent_debits_of_1_against_30_give_30_successes_and_20_insufficient(self, wallet):
        def work(i):
            response = wallet.debit(amount=1, job=f"job-{i}")
            assert response.status_code in (201, 402), response.content
            return response.status_code

        results = run_concurrently(50, work)
        assert results.count(201) == 30 and results.count(402) == 20
        balance = credits_balance()
        assert (balance.usage, balance.remaining, balance.overage) == (30, 0, 0)
        assert CreditEntry.objects.filter(kind="debit").count() == 30
        assert UsageEvent.objects.filter(feature__slug="credits").count() == 30
        assert sorted(b.consumed for b in balance.buckets.all()) == [10, 20]

    def test_20_concurrent_retries_of_one_debit_make_one_ledger_entry(self, wallet):
        def work(_):
            response = wallet.debit(amount=3, job="the-job")  # one client: each retry signed afresh
            assert response.status_code == 201, response.content
            return response.json()["ledgerEntryId"]

        results = run_concurrently(20, work)
        assert len(set(results)) == 1
        assert CreditEntry.objects.count() == 1
        assert credits_balance().usage == 3

    def test_20_concurrent_retries_of_a_debit_that_empties_the_wallet_all_replay(self, wallet):
        def work(_):
            return wallet.debit(amount=30, job="everything").status_code

        assert run_concurrently(20, work) == [201] * 20
        assert CreditEntry.objects.count() == 1 and credits_balance().remaining == 0


class TestConcurrentRefunds:
    def test_12_concurrent_partial_refunds_of_a_debit_of_5_never_return_more_than_5(self, wallet):
        wallet.debit(amount=25, job="big")  # 20 plan + 5 top-up

        def work(i):
            response = wallet.refund(job="big", amount=3, idempotencyKey=f"part-{i}")
            return response.status_code

        results = run_concurrently(12, work)
        assert results.count(201) == 8 and results.count(400) + results.count(409) == 4
        refunded = sum(CreditEntry.objects.filter(kind="refund").values_list("amount", flat=True))
        assert refunded == 24
        assert credits_balance().usage == 1

    def test_concurrent_retries_of_one_refund_make_one_refund(self, wallet):
        wallet.debit(amount=8, job="j")

        def work(_):
            response = wallet.refund(job="j")
            assert response.status_code == 201, response.content
            return response.json()["ledgerEntryId"]

        assert len(set(run_concurrently(10, work))) == 1
        assert CreditEntry.objects.filter(kind="refund").count() == 1
        assert credits_balance().usage == 0

    def test_debits_and_refunds_interleaved_keep_the_wallet_whole(self, wallet):
        for i in range(10):
            wallet.debit(amount=2, job=f"old-{i}")  # 20 spent

        def work(i):
            if i % 2:
                return ("refund", wallet.refund(job=f"old-{i // 2}").status_code)
            return ("debit", wallet.debit(amount=3, job=f"new-{i}").status_code)

        results = run_concurrently(20, work)
        debited = 3 * sum(1 for kind, status in results if kind == "debit" and status == 201)
        refunded = 2 * sum(1 for kind, status in results if kind == "refund" and status == 201)
        assert all(status in (201, 402) for _, status in results)
        assert refunded == 20
        assert credits_balance().usage == 20 + debited - refunded
        assert credits_balance().remaining >= 0
