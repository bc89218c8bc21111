"""POST /api/v1/credits/refund: whole and partial, back into the buckets the debit
took from, never more than was debited, idempotent."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import Customer, Subscription, UsageEvent
from credits.models import CreditEntry
from credits.services import wallet_freeze
from tests.billing.billing_helpers import API, assert_books_reconcile, cycle
from tests.credits.credits_helpers import assert_balance_invariants, bucket_consumed, credits_balance, make_wallet

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def books_reconcile():
    yield
    assert_books_reconcile()


@pytest.fixture
def wallet(sk_client):
    make_wallet(sk_client)  # 20 plan + 10 top-up
    return "ws1"


def error(response):
    return response.json()["error"]


class TestRefund:
    def test_a_whole_refund_returns_every_credit_to_the_buckets_it_came_from(self, svc, wallet):
        svc.debit(amount=18, job="first")
        debit = svc.debit(amount=5).json()  # 2 from the plan, 3 from the top-up
        assert bucket_consumed() == {"plan": 20, "topup": 3}
        response = svc.refund()
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["ledgerEntryId"].startswith("cle_") and body["ledgerEntryId"] != debit["ledgerEntryId"]
        assert (body["refundedAmount"], body["returnedAmount"], body["totalBalanceAfter"]) == (5, 5, 12)
        assert (body["balanceSubscriptionAfter"], body["balanceTopupAfter"]) == (2, 10)
        assert body["debitLedgerEntryId"] == debit["ledgerEntryId"]
        assert bucket_consumed() == {"plan": 18, "topup": 0}
        refund = CreditEntry.objects.get(pk=body["ledgerEntryId"])
        assert (refund.kind, refund.refund_of_id, refund.reason) == ("refund", debit["ledgerEntryId"], "job failed")
        assert_balance_invariants()

    def test_a_partial_refund_gives_back_the_credits_spent_last_first(self, svc, wallet):
        svc.debit(amount=18, job="first")
        svc.debit(amount=5)
        assert svc.refund(amount=2).json()["refundedAmount"] == 2
        assert bucket_consumed() == {"plan": 20, "topup": 1}
        assert svc.refund(amount=2, idempotencyKey="second part").status_code == 201
        assert bucket_consumed() == {"plan": 19, "topup": 0}
        body = svc.refund().json()  # what is left: 1
        assert (body["refundedAmount"], body["totalBalanceAfter"]) == (1, 12)
        assert bucket_consumed() == {"plan": 18, "topup": 0}
        assert_balance_invariants()

    def test_a_refund_is_seen_by_check(self, svc, sk_client, wallet):
        svc.debit(amount=30)
        svc.refund(amount=7)
        check = sk_client.post(f"{API}/check", {"customer": "ws1", "feature": "credits"}, format="json").json()
        assert check["balance"] == 7

    def test_a_refund_records_a_negative_usage_event(self, svc, wallet):
        svc.debit(amount=4)
        svc.refund(amount=3)
        assert sorted(UsageEvent.objects.filter(feature__slug="credits").values_list("amount", flat=True)) == [-3, 4]

    def test_a_frozen_wallet_still_takes_refunds(self, svc, wallet):
        svc.debit(amount=4)
        wallet_freeze(customer=Customer.objects.get(external_id="ws1"), frozen=True, actor="admin", now=timezone.now())
        assert svc.refund().status_code == 201
        assert credits_balance().usage == 0

    def test_with_usage_tracked_past_the_balance_the_overage_shrinks_first(self, svc, sk_client, wallet):
        svc.debit(amount=10)
        sk_client.post(f"{API}/track", {"customer": "ws1", "feature": "credits", "amount": 25}, format="json")
        balance = credits_balance()
        assert (balance.usage, balance.overage) == (35, 5)
        assert svc.refund().json()["returnedAmount"] == 10
        balance = credits_balance()
        assert (balance.usage, balance.overage, balance.remaining) == (25, 0, 5)
        assert_balance_invariants()


class TestLimits:
    def test_never_more_than_was_debited(self, svc, wallet):
        svc.debit(amount=4)
        response = svc.refund(amount=5)
        assert response.status_code == 400
        assert error(response)["code"] == "INVALID_REQUEST"
        assert error(response)["details"] == [{"field": "amount", "message": error(response)["details"][0]["message"],
                                               "refundable": 4}]
        svc.refund(amount=3)
        assert error(svc.refund(amount=2, idempotencyKey="k2"))["details"][0]["refundable"] == 1
        assert credits_balance().usage == 1

    def test_a_debit_refunded_in_full_answers_409_to_another_refund(self, svc, wallet):
        svc.debit(amount=4)
        first = svc.refund().json()
        response = svc.refund(amount=1)
        assert response.status_code == 409
        err = error(response)
        assert err["code"] == "DUPLICATE_REQUEST"
        assert (err["details"]["refunded"], err["details"]["refunds"]) == (4, [first["ledgerEntryId"]])

    def test_an_unknown_job_is_404(self, svc, wallet):
        response = svc.refund(job="never")
        assert (response.status_code, error(response)["code"]) == (404, "DEBIT_NOT_FOUND")

    def test_a_job_of_another_workspace_is_404(self, svc, sk_client, wallet):
        svc.debit(amount=1)
        sk_client.post(f"{API}/customers", {"customerId": "ws2"}, format="json")
        assert error(svc.refund(workspace="ws2"))["code"] == "DEBIT_NOT_FOUND"

    def test_a_job_of_another_service_is_404(self, svc, wallet):
        svc.debit(amount=1, service="summarizer")
        assert error(svc.refund(service="agent"))["code"] == "DEBIT_NOT_FOUND"

    def test_an_unknown_workspace_is_404(self, svc):
        assert error(svc.refund(workspace="nobody"))["code"] == "WORKSPACE_NOT_FOUND"

    @pytest.mark.parametrize("extra,field", [
        ({"amount": 1.5}, "amount"), ({"amount": 0}, "amount"), ({"amount": "1"}, "amount"),
        ({"reason": ""}, "reason"), ({"refundForJobId": None}, "refundForJobId"),
    ])
    def test_bad_input_is_400(self, svc, wallet, extra, field):
        svc.debit(amount=2)
        response = svc.refund(**extra)
        assert response.status_code == 400
        assert field in [d["field"] for d in error(response)["details"]]
        assert credits_balance().usage == 2


class TestIdempotency:
    def test_the_same_refund_again_replays_the_first_answer(self, svc, wallet):
        svc.debit(amount=6)
        first = svc.refund(amount=2)
        again = svc.refund(amount=2)
        assert again.status_code == 201 and again.json() == first.json()
        assert again["Idempotent-Replayed"] == "true"
        assert CreditEntry.objects.filter(kind="refund").count() == 1
        assert credits_balance().usage == 4

    def test_a_whole_refund_repeated_replays_too(self, svc, wallet):
        svc.debit(amount=6)
        first = svc.refund().json()
        assert svc.refund().json() == first

    def test_a_refund_key_reused_after_24_hours_is_409(self, svc, wallet):
        svc.debit(amount=6)
        svc.refund(amount=2)
        CreditEntry.objects.filter(kind="refund").update(created_at=timezone.now() - timedelta(days=2))
        assert svc.refund(amount=2).status_code == 409


class TestLapsed:
    def test_credits_of_a_plan_period_that_ended_lapse_and_the_top_up_ones_come_back(self, svc, wallet):
        svc.debit(amount=25)  # 20 plan + 5 top-up
        sub = Subscription.objects.get(customer__external_id="ws1", product__slug="team")
        cycle(sub.current_period_end + timedelta(minutes=1))  # renews: the plan bucket resets to 20
        assert bucket_consumed() == {"plan": 0, "topup": 5}
        body = svc.refund().json()
        assert (body["refundedAmount"], body["returnedAmount"]) == (25, 5)
        assert bucket_consumed() == {"plan": 0, "topup": 0}
        assert body["totalBalanceAfter"] == 30
        assert_balance_invariants()
