"""Races on PostgreSQL, with threads that start together (tests/concurrency.py):
one referee redeeming many codes at once is referred once; a program's
per-referrer maximum holds under a crowd of referees; two paid invoices of one
referee at once reward the first-payment program once."""

import pytest
from django.db import transaction
from django.utils import timezone

from billing.models import BalanceBucket, Customer, Invoice, OutboxEvent
from billing.services.api_keys import api_key_create
from rewards.models import ReferralCode, ReferralRedemption, RewardGrant
from rewards.services import referral_invoice_paid
from tests.billing.billing_helpers import API, add_card, client_for, make_product, subscribe
from tests.concurrency import run_concurrently
from tests.conftest import postgres_only

pytestmark = [*postgres_only, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def raw_key():
    _, raw = api_key_create(name="race", type="secret", now=timezone.now())
    client = client_for(raw)
    make_product(client, "starter", amount=0, group="", features=[{"slug": "credits", "type": "metered", "allowance": 10}])
    return raw


def program(client, **body):
    body = {"name": "P", "trigger": "sign_up", "recipient": "both", "rewardType": "credits", "feature": "credits",
            "creditAmount": 50, **body}
    response = client.post(f"{API}/reward-programs", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def code_for(client, program_id, customer):
    assert client.post(f"{API}/customers", {"customerId": customer}, format="json").status_code in (200, 201)
    response = client.post(f"{API}/referral-codes", {"customer": customer, "program": program_id}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["code"]


def credits_granted(client, customer) -> int:
    return client.get(f"{API}/customers/{customer}").json()["balances"].get("credits", {}).get("granted", 0)


class TestConcurrentRedeems:
    def test_one_referee_redeeming_eight_codes_at_once_is_referred_once(self, raw_key):
        client = client_for(raw_key)
        program_id = program(client)
        codes = [code_for(client, program_id, f"referrer{i}") for i in range(8)]
        assert client.post(f"{API}/customers", {"customerId": "bob"}, format="json").status_code == 201

        def work(i):
            response = client_for(raw_key).post(f"{API}/referral-codes/redeem", {"code": codes[i], "customer": "bob"}, format="json")
            assert response.status_code in (201, 409), response.content
            return response.status_code

        results = run_concurrently(8, work)
        assert sorted(results) == [201] + [409] * 7
        redemption = ReferralRedemption.objects.get()
        assert credits_granted(client, "bob") == 50
        rewarded = [f"referrer{i}" for i in range(8) if credits_granted(client, f"referrer{i}")]
        assert rewarded == [redemption.referrer.external_id]
        assert RewardGrant.objects.count() == 2 and BalanceBucket.objects.filter(kind="grant").count() == 2

    def test_a_crowd_of_referees_on_one_code_stops_at_the_programs_maximum(self, raw_key):
        client = client_for(raw_key)
        code = code_for(client, program(client, recipient="referrer", maxRedemptionsPerReferrer=3), "acme")
        for i in range(10):
            assert client.post(f"{API}/customers", {"customerId": f"friend{i}"}, format="json").status_code == 201

        def work(i):
            response = client_for(raw_key).post(f"{API}/referral-codes/redeem", {"code": code, "customer": f"friend{i}"}, format="json")
            assert response.status_code in (201, 409), response.content
            return response.status_code

        results = run_concurrently(10, work)
        assert sorted(results) == [201] * 3 + [409] * 7
        assert ReferralRedemption.objects.count() == 3
        assert credits_granted(client, "acme") == 150


class TestConcurrentFirstPayments:
    def test_two_paid_invoices_at_once_reward_once(self, raw_key):
        client = client_for(raw_key)
        make_product(client, "pro", amount=2000)
        make_product(client, "extra", amount=500, group="addons", isAddOn=True,
                     features=[{"slug": "seats", "type": "metered", "allowance": 1}])
        code = code_for(client, program(client, trigger="first_payment"), "acme")
        add_card(client, customer="bob")
        subscribe(client, "pro", customer="bob")
        subscribe(client, "extra", customer="bob")
        invoices = list(Invoice.objects.filter(customer__external_id="bob", status="paid", amount_paid__gt=0))
        assert len(invoices) == 2
        # a pending referral of bob (made here directly: the API refuses a referee who has paid before)
        referral = ReferralCode.objects.get(code=code)
        ReferralRedemption.objects.create(code=referral, program=referral.program, referrer=referral.customer,
                                          referee=Customer.objects.get(external_id="bob"), created_at=timezone.now())

        def work(i):
            with transaction.atomic(durable=True):
                referral_invoice_paid(invoice=invoices[i], now=timezone.now())
            return i

        run_concurrently(2, work)
        assert RewardGrant.objects.count() == 2
        assert OutboxEvent.objects.filter(type="referral.rewarded").count() == 1
        assert ReferralRedemption.objects.get().status == "rewarded"
        assert credits_granted(client, "acme") == 50
        assert credits_granted(client, "bob") == 50
