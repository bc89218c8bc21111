"""POST /api/v1/credits/debit: every row of the credits error table, replays and
duplicates, the bucket order, and that check sees what the debit spent."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import Customer, UsageEvent
from credits.models import CreditEntry
from credits.services import MAX_AMOUNT, default_idempotency_key, wallet_freeze
from tests.billing.billing_helpers import API, assert_books_reconcile
from tests.conftest import postgres_only
from tests.credits.credits_helpers import (
    assert_balance_invariants,
    bucket_consumed,
    credits_balance,
    make_wallet,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def books_reconcile():
    """Buying the plan and the top-up moved money; debits move none. The books stay level."""
    yield
    assert_books_reconcile()


@pytest.fixture
def wallet(sk_client):
    make_wallet(sk_client)  # ws1: 20 plan credits + 10 top-up credits
    return "ws1"


def error(response):
    return response.json()["error"]


class TestDebit:
    def test_a_debit_spends_the_plan_credits_and_answers_201_with_the_balance_after(self, svc, wallet):
        response = svc.debit(amount=5, actorUserId="user-7", metadata={"meeting": "m1"})
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["ledgerEntryId"].startswith("cle_")
        assert (body["workspaceId"], body["amount"]) == ("ws1", 5)
        assert (body["balanceSubscriptionAfter"], body["balanceTopupAfter"], body["totalBalanceAfter"]) == (15, 10, 25)
        entry = CreditEntry.objects.get(pk=body["ledgerEntryId"])
        assert (entry.kind, entry.job_id, entry.source_service, entry.caller) == ("debit", "job-1", "summarizer", "summarizer")
        assert (entry.actor_user_id, entry.metadata) == ("user-7", {"meeting": "m1"})
        assert entry.idempotency_key == default_idempotency_key("job-1", "summarizer")
        assert bucket_consumed() == {"plan": 5, "topup": 0}
        assert_balance_invariants()

    def test_the_plan_credits_go_before_the_top_up_and_a_debit_may_span_both(self, svc, wallet):
        assert svc.debit(amount=18, job="a").json()["balanceSubscriptionAfter"] == 2
        body = svc.debit(amount=5, job="b").json()
        assert (body["balanceSubscriptionAfter"], body["balanceTopupAfter"], body["totalBalanceAfter"]) == (0, 7, 7)
        entry = CreditEntry.objects.get(pk=body["ledgerEntryId"])
        kinds = {b.pk: b.kind for b in credits_balance().buckets.all()}
        assert {kinds[int(k)]: v for k, v in entry.buckets.items()} == {"plan": 2, "topup": 3}
        assert bucket_consumed() == {"plan": 20, "topup": 3}
        assert_balance_invariants()

    def test_check_and_track_of_the_merchant_api_see_the_same_balance(self, svc, sk_client, wallet):
        svc.debit(amount=25)
        check = sk_client.post(f"{API}/check", {"customer": "ws1", "feature": "credits", "requiredBalance": 6},
                               format="json").json()
        assert (check["allowed"], check["balance"]) == (False, 5)
        sk_client.post(f"{API}/track", {"customer": "ws1", "feature": "credits", "amount": 2}, format="json")
        assert svc.balance().json()["total"] == 3
        assert svc.debit(amount=4, job="next").status_code == 402
        assert_balance_invariants()

    def test_each_debit_records_a_usage_event_like_track_does(self, svc, wallet):
        ledger_id = svc.debit(amount=3).json()["ledgerEntryId"]
        event = UsageEvent.objects.get(feature__slug="credits")
        assert event.amount == 3
        assert event.properties == {"source": "credits", "ledgerEntryId": ledger_id, "jobId": "job-1",
                                    "sourceService": "summarizer"}


class TestRetries:
    def test_the_same_request_again_replays_the_first_response_with_the_same_ledger_entry(self, svc, wallet):
        first = svc.debit(amount=4)
        again = svc.debit(amount=4)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again["Idempotent-Replayed"] == "true" and not first.has_header("Idempotent-Replayed")
        assert CreditEntry.objects.count() == 1
        assert credits_balance().usage == 4

    def test_a_replay_answers_the_first_balance_even_after_later_debits(self, svc, wallet):
        first = svc.debit(amount=4).json()
        svc.debit(amount=1, job="other")
        assert svc.debit(amount=4).json() == first

    def test_an_explicit_idempotency_key_is_the_retry_key(self, svc, wallet):
        first = svc.debit(amount=2, idempotencyKey="k-1").json()
        assert svc.debit(amount=2, idempotencyKey="k-1").json()["ledgerEntryId"] == first["ledgerEntryId"]

    def test_the_same_job_under_another_key_is_409_with_the_prior_entry(self, svc, wallet):
        first = svc.debit(amount=2).json()
        response = svc.debit(amount=2, idempotencyKey="another-key")
        assert response.status_code == 409
        err = error(response)
        assert err["code"] == "DUPLICATE_REQUEST"
        assert err["details"]["ledgerEntryId"] == first["ledgerEntryId"]
        assert (err["details"]["jobId"], err["details"]["sourceService"], err["details"]["amount"]) == ("job-1", "summarizer", 2)
        assert credits_balance().usage == 2

    def test_the_same_request_after_24_hours_is_409(self, svc, wallet):
        first = svc.debit(amount=2).json()
        CreditEntry.objects.filter(pk=first["ledgerEntryId"]).update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
        response = svc.debit(amount=2)
        assert response.status_code == 409
        assert error(response)["details"]["ledgerEntryId"] == first["ledgerEntryId"]
        assert credits_balance().usage == 2

    def test_the_same_key_with_another_amount_is_409_not_a_replay(self, svc, wallet):
        svc.debit(amount=2)
        response = svc.debit(amount=3)
        assert (response.status_code, error(response)["code"]) == (409, "DUPLICATE_REQUEST")
        assert credits_balance().usage == 2

    def test_an_idempotency_key_used_for_another_job_is_409(self, svc, wallet):
        svc.debit(amount=2, job="a", idempotencyKey="shared")
        response = svc.debit(amount=2, job="b", idempotencyKey="shared")
        assert response.status_code == 409
        assert error(response)["details"]["jobId"] == "a"

    def test_another_service_may_use_the_same_job_id(self, svc, wallet):
        assert svc.debit(amount=1, service="summarizer").status_code == 201
        assert svc.debit(amount=1, service="agent").status_code == 201
        assert credits_balance().usage == 2


class TestRefusals:
    def test_402_says_what_was_required_and_what_is_available_and_changes_nothing(self, svc, wallet):
        svc.debit(amount=28, job="big")
        response = svc.debit(amount=3)
        assert response.status_code == 402
        assert error(response) == {"code": "INSUFFICIENT_CREDITS", "message": error(response)["message"],
                                   "details": {"required": 3, "available": 2}}
        assert credits_balance().usage == 28 and CreditEntry.objects.count() == 1
        # Not an idempotent answer: after a top-up the same request goes through.
        assert svc.debit(amount=2).status_code == 201

    def test_a_workspace_without_credits_is_402_with_nothing_available(self, svc, sk_client):
        sk_client.post(f"{API}/customers", {"customerId": "bare"}, format="json")
        response = svc.debit(amount=1, workspace="bare")
        assert (response.status_code, error(response)["details"]) == (402, {"required": 1, "available": 0})

    def test_reserved_credits_cannot_be_debited(self, svc, sk_client, wallet):
        lock = sk_client.post(f"{API}/check", {"customer": "ws1", "feature": "credits", "requiredBalance": 29,
                                               "lock": {"enabled": True}}, format="json").json()
        assert lock["allowed"] is True
        assert error(svc.debit(amount=2))["details"] == {"required": 2, "available": 1}

    def test_an_unknown_workspace_is_404(self, svc):
        response = svc.debit(workspace="nobody")
        assert response.status_code == 404
        assert error(response)["code"] == "WORKSPACE_NOT_FOUND"
        assert error(response)["details"] == {"workspaceId": "nobody"}

    def test_a_deleted_workspace_is_404(self, svc, sk_client, wallet):
        Customer.objects.filter(external_id="ws1").update(deleted_at=timezone.now())
        assert error(svc.debit())["code"] == "WORKSPACE_NOT_FOUND"

    def test_a_wallet_frozen_by_staff_is_423_and_unfreezing_lets_debits_through(self, svc, wallet):
        customer = Customer.objects.get(external_id="ws1")
        wallet_freeze(customer=customer, frozen=True, actor="admin", now=timezone.now())
        response = svc.debit()
        assert (response.status_code, error(response)["code"]) == (423, "WALLET_LOCKED")
        assert credits_balance().usage == 0 and not CreditEntry.objects.exists()
        wallet_freeze(customer=customer, frozen=False, actor="admin", now=timezone.now())
        assert svc.debit().status_code == 201

    def test_a_debit_made_before_the_freeze_still_replays(self, svc, wallet):
        first = svc.debit().json()
        wallet_freeze(customer=Customer.objects.get(external_id="ws1"), frozen=True, actor="admin", now=timezone.now())
        assert svc.debit().json() == first


BAD_AMOUNTS = [
    (1.5, "whole number"),
    (0.1, "whole number"),
    (1.0, "whole number"),
    (0, "positive"),
    (-1, "positive"),
    ("5", "integer"),
    (True, "integer"),
    (None, "integer"),
    ([1], "integer"),
    (MAX_AMOUNT + 1, "at most"),
    (2**64, "at most"),
    (10**30, "at most"),
    (1e30, "whole number"),
]


class TestBadInput:
    @pytest.mark.parametrize("amount,words", BAD_AMOUNTS)
    def test_an_amount_that_is_not_a_positive_integer_is_400_and_changes_nothing(self, svc, wallet, amount, words):
        response = svc.debit(amount=amount)
        assert response.status_code == 400, response.content
        err = error(response)
        assert err["code"] == "INVALID_REQUEST"
        assert err["details"][0]["field"] == "amount" and words in err["details"][0]["message"]
        assert credits_balance().usage == 0 and not CreditEntry.objects.exists()

    @pytest.mark.parametrize("body,field", [
        ({"amount": 1, "jobId": "j", "sourceService": "s"}, "workspaceId"),
        ({"workspaceId": "ws1", "jobId": "j", "sourceService": "s"}, "amount"),
        ({"workspaceId": "ws1", "amount": 1, "sourceService": "s"}, "jobId"),
        ({"workspaceId": "ws1", "amount": 1, "jobId": "j"}, "sourceService"),
        ({"workspaceId": "ws1", "amount": 1, "jobId": "", "sourceService": "s"}, "jobId"),
        ({"workspaceId": "ws1", "amount": 1, "jobId": 7, "sourceService": "s"}, "jobId"),
        ({"workspaceId": "ws1", "amount": 1, "jobId": "j" * 256, "sourceService": "s"}, "jobId"),
        ({"workspaceId": "ws1", "amount": 1, "jobId": "j", "sourceService": "s", "metadata": [1]}, "metadata"),
        ({"workspaceId": "ws1", "amount": 1, "jobId": "j", "sourceService": "s", "actorUserId": 5}, "actorUserId"),
        ({"workspaceId": "ws1", "amount": 1, "jobId": "j", "sourceService": "s", "idempotencyKey": ""}, "idempotencyKey"),
        ({"workspaceId": "ws1", "amount": 1, "jobId": "j\x00", "sourceService": "s"}, "jobId"),
    ])
    def test_a_missing_or_malformed_field_is_400_naming_it(self, svc, wallet, body, field):
        response = svc.post("debit", body)
        assert response.status_code == 400, response.content
        assert error(response)["code"] == "INVALID_REQUEST"
        assert field in [d["field"] for d in error(response)["details"]]
        assert not CreditEntry.objects.exists()

    @pytest.mark.parametrize("raw", [b"[1, 2]", b'"debit"', b"{not json", b'{"amount": 1, "amount": 2}', b'{"amount": NaN}'])
    def test_a_body_that_is_not_a_json_object_is_400(self, svc, wallet, raw):
        response = svc.post("debit", raw)
        assert response.status_code == 400, response.content
        assert error(response)["code"] == "INVALID_REQUEST"

    def test_every_problem_is_listed(self, svc):
        response = svc.post("debit", {"amount": 1.5})
        fields = [d["field"] for d in error(response)["details"]]
        assert fields == ["workspaceId", "amount", "jobId", "sourceService"]

    def test_a_body_over_the_size_limit_is_413_not_a_crash(self, svc, wallet, settings):
        settings.API_MAX_BODY_BYTES = 1000
        response = svc.post("debit", b'{"pad": "' + b"x" * 2000 + b'"}')
        assert (response.status_code, error(response)["code"]) == (413, "PAYLOAD_TOO_LARGE")
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000  # larger than even Django reads: refused before the signature
        response = svc.post("debit", b'{"pad": "' + b"x" * 2000 + b'"}')
        assert (response.status_code, error(response)["code"]) == (413, "PAYLOAD_TOO_LARGE")


class TestFastPath:
    """On PostgreSQL a debit that leaves the wallet above the balance.low threshold is one
    round trip; one that crosses it goes the general way and emits the event. Both leave
    the same rows (the other tests run through both)."""

    pytestmark = postgres_only

    def test_a_debit_far_from_empty_is_one_statement(self, svc, wallet):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            body = svc.debit(amount=25).json()  # 20 plan + 5 top-up, 5 left > threshold 3
        writes = [q["sql"] for q in queries.captured_queries if "credits.deducted_balance" in q["sql"]]
        assert len(writes) == 1
        assert not [q for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("INSERT")]
        entry = CreditEntry.objects.get(pk=body["ledgerEntryId"])
        kinds = {b.pk: b.kind for b in credits_balance().buckets.all()}
        assert {kinds[int(k)]: v for k, v in entry.buckets.items()} == {"plan": 20, "topup": 5}
        assert (entry.balance_subscription_after, entry.balance_topup_after, entry.total_after) == (0, 5, 5)
        assert UsageEvent.objects.get().properties["ledgerEntryId"] == entry.pk
        assert_balance_invariants()

    def test_a_debit_that_crosses_the_low_threshold_emits_balance_low(self, svc, wallet):
        from billing.models import OutboxEvent

        svc.debit(amount=28)  # 2 left of 30: below 10 %
        assert OutboxEvent.objects.filter(type="balance.low").count() == 1
        svc.debit(amount=2, job="last")
        assert OutboxEvent.objects.filter(type="entitlement.exhausted").count() == 1
        assert_balance_invariants()
