"""Races on PostgreSQL: many clients against one balance, through the HTTP layer."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import Balance, BalanceLock, UsageEvent
from billing.services.api_keys import api_key_create
from tests.conftest import postgres_only
from tests.billing.billing_helpers import client_for
from tests.concurrency import run_concurrently

pytestmark = [*postgres_only, pytest.mark.django_db(transaction=True)]

API = "/api/v1/pay"


@pytest.fixture
def raw_key():
    _, raw = api_key_create(name="race", type="secret", now=timezone.now())
    client = client_for(raw)
    body = {"name": "Plan", "slug": "plan", "features": [{"slug": "tokens", "type": "metered", "allowance": 40, "resetInterval": "month"}]}
    assert client.post(f"{API}/products", body, format="json").status_code == 201
    assert client.post(f"{API}/subscribe", {"customer": "c1", "product": "plan"}, format="json").status_code == 200
    return raw


class TestHotBalance:
    def test_64_concurrent_deductions_against_40_allow_exactly_40(self, raw_key):
        def work(_):
            response = client_for(raw_key).post(f"{API}/check", {"customer": "c1", "feature": "tokens", "sendEvent": True}, format="json")
            assert response.status_code == 200, response.content
            return response.json()["allowed"]

        results = run_concurrently(64, work)
        assert results.count(True) == 40 and results.count(False) == 24
        balance = Balance.objects.get(feature__slug="tokens")
        assert (balance.usage, balance.remaining, balance.overage) == (40, 0, 0)
        assert UsageEvent.objects.count() == 40
        assert sum(b.consumed for b in balance.buckets.all()) == 40


class TestConcurrentLocks:
    def test_32_lock_confirm_release_sequences_conserve_units(self, raw_key):
        expires = int((timezone.now() + timedelta(minutes=5)).timestamp() * 1000)

        def work(i):
            client = client_for(raw_key)
            got = client.post(f"{API}/check", {"customer": "c1", "feature": "tokens", "requiredBalance": 3,
                                               "lock": {"enabled": True, "expiresAt": expires}}, format="json").json()
            if not got["allowed"]:
                return ("refused", 0)
            if i % 3 == 0:
                body = {"lockId": got["lockId"], "action": "release"}
            else:
                body = {"lockId": got["lockId"], "action": "confirm", "overrideValue": i % 4}
            done = client.post(f"{API}/locks/finalize", body, format="json")
            assert done.status_code == 200, done.content
            return ("finalized", done.json()["consumed"])

        results = run_concurrently(32, work)
        locks = list(BalanceLock.objects.all())
        assert all(lock.status in ("consumed", "released") for lock in locks)
        assert all(lock.amount == lock.consumed + lock.released for lock in locks if lock.consumed <= lock.amount)
        balance = Balance.objects.get(feature__slug="tokens")
        consumed = sum(lock.consumed for lock in locks)
        assert balance.reserved == 0
        assert balance.usage == consumed == sum(n for _, n in results)
        assert balance.remaining == 40 - consumed
        assert len(locks) == sum(1 for kind, _ in results if kind == "finalized")

    def test_two_concurrent_finalizes_of_one_lock_give_one_success_and_one_409(self, raw_key):
        client = client_for(raw_key)
        expires = int((timezone.now() + timedelta(minutes=5)).timestamp() * 1000)
        lock_id = client.post(f"{API}/check", {"customer": "c1", "feature": "tokens", "requiredBalance": 10,
                                               "lock": {"enabled": True, "expiresAt": expires}}, format="json").json()["lockId"]

        def work(i):
            action = "confirm" if i == 0 else "release"
            return client_for(raw_key).post(f"{API}/locks/finalize", {"lockId": lock_id, "action": action}, format="json").status_code

        assert sorted(run_concurrently(2, work)) == [200, 409]
        balance = Balance.objects.get(feature__slug="tokens")
        lock = BalanceLock.objects.get(pk=lock_id)
        assert balance.reserved == 0
        assert balance.usage == lock.consumed and lock.consumed + lock.released == 10
