"""Rate limits: a token bucket per API key (merchant API) and per service name (credits API),
in Redis when REDIS_URL is set, in the process otherwise, failing open when Redis is down."""

import logging
import uuid

import pytest
import redis
from django.conf import settings as django_settings
from django.utils import timezone
from rest_framework.test import APIClient

from billing.api import throttling
from billing.services.api_keys import api_key_create
from tests.credits.credits_helpers import SignedClient, new_secret

pytestmark = pytest.mark.django_db

PING = "/api/v1/pay/ping"
HAS_REDIS = bool(django_settings.REDIS_URL)


@pytest.fixture(params=["local", "redis"])
def backend(request, settings, monkeypatch):
    """A fresh limiter (as in a new process) on the given store, with a tiny bucket:
    3 requests, then one token every 1,000 s."""
    if request.param == "redis":
        if not HAS_REDIS:
            pytest.skip("needs REDIS_URL (CI sets it)")
    else:
        settings.REDIS_URL = ""
    settings.RATE_LIMIT_PER_SECOND = 0.001
    settings.RATE_LIMIT_BURST = 3
    settings.RATE_LIMIT_KEY_PREFIX = f"test-ratelimit:{uuid.uuid4().hex}:"
    monkeypatch.setattr(throttling, "limiter", throttling.RateLimiter())
    return request.param


@pytest.fixture
def redis_backend(settings, monkeypatch):
    if not HAS_REDIS:
        pytest.skip("needs REDIS_URL (CI sets it)")
    settings.RATE_LIMIT_PER_SECOND = 0.001
    settings.RATE_LIMIT_BURST = 3
    settings.RATE_LIMIT_KEY_PREFIX = f"test-ratelimit:{uuid.uuid4().hex}:"
    monkeypatch.setattr(throttling, "limiter", throttling.RateLimiter())


def key_client(key_type="secret"):
    _, raw = api_key_create(name="rl", type=key_type, now=timezone.now())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


class TestMerchantApiLimit:
    def test_the_request_past_the_burst_is_429_rate_limited_with_retry_after(self, backend):
        client = key_client()
        assert [client.get(PING).status_code for _ in range(3)] == [200, 200, 200]
        refused = client.get(PING)
        assert refused.status_code == 429
        body = refused.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
        assert body["error"]["code"] == "RATE_LIMITED"
        # one token per 1,000 s: the next one is due in (about) 1,000 s
        assert 990 <= int(refused["Retry-After"]) <= 1000

    def test_each_key_has_its_own_bucket(self, backend):
        first, second = key_client(), key_client("publishable")
        for _ in range(4):
            first.get(PING)
        assert first.get(PING).status_code == 429
        assert [second.get(PING).status_code for _ in range(3)] == [200, 200, 200]

    def test_a_refused_request_changes_nothing(self, backend):
        client = key_client()
        for _ in range(3):
            client.get(PING)
        refused = client.post("/api/v1/pay/customers", {"customerId": "rl-cust"}, format="json")
        assert refused.status_code == 429
        from billing.models import Customer

        assert not Customer.objects.filter(external_id="rl-cust").exists()

    def test_disabled_limits_refuse_nothing(self, backend, settings):
        settings.RATE_LIMIT_ENABLED = False
        client = key_client()
        assert {client.get(PING).status_code for _ in range(6)} == {200}

    def test_unknown_keys_are_401_not_counted(self, backend):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Bearer cp_sk_" + "x" * 43)
        assert {client.get(PING).status_code for _ in range(5)} == {401}


class TestRedisBackedLimit:
    def test_the_bucket_is_shared_by_every_process(self, redis_backend, monkeypatch):
        client = key_client()
        for _ in range(3):
            assert client.get(PING).status_code == 200
        # another process: its own limiter, the same Redis bucket
        monkeypatch.setattr(throttling, "limiter", throttling.RateLimiter())
        assert client.get(PING).status_code == 429
        r = redis.Redis.from_url(django_settings.REDIS_URL)
        keys = r.keys(django_settings.RATE_LIMIT_KEY_PREFIX + "*")
        assert len(keys) == 1 and r.pttl(keys[0]) > 0  # the bucket expires once it would be full

    def test_redis_down_fails_open_and_logs_once(self, redis_backend, settings, caplog):
        settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
        settings.RATE_LIMIT_REDIS_RETRY_SECONDS = 0  # try Redis on every request: each fails
        settings.RATE_LIMIT_BURST = 1000
        client = key_client()
        with caplog.at_level(logging.WARNING, logger="billing.ratelimit"):
            statuses = [client.get(PING).status_code for _ in range(5)]
        assert statuses == [200] * 5
        warnings = [r for r in caplog.records if r.name == "billing.ratelimit"]
        assert len(warnings) == 1 and "Redis failed" in warnings[0].getMessage()

    def test_redis_down_still_counts_in_the_process(self, redis_backend, settings):
        settings.REDIS_URL = "redis://127.0.0.1:1/0"
        client = key_client()
        assert [client.get(PING).status_code for _ in range(4)] == [200, 200, 200, 429]


class TestCreditsApiLimit:
    @pytest.fixture
    def secret(self, settings):
        value = new_secret()
        settings.SVC_HMAC_SECRETS = [value]
        return value

    @pytest.fixture
    def tiny(self, backend, settings):
        settings.CREDITS_RATE_LIMIT_PER_SECOND = 0.001
        settings.CREDITS_RATE_LIMIT_BURST = 2

    def test_each_service_name_has_its_own_bucket(self, tiny, secret):
        name = f"svc-{uuid.uuid4().hex[:8]}"
        svc = SignedClient(secret, service=name)
        statuses = [svc.balance("nobody").status_code for _ in range(2)]
        assert statuses == [404, 404]  # past the limiter: no such wallet
        refused = svc.balance("nobody")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "RATE_LIMITED"
        assert 990 <= int(refused["Retry-After"]) <= 1000
        other = SignedClient(secret, service=name + "-other")
        assert other.balance("nobody-else").status_code == 404  # another path: not a replay of the above

    def test_bad_signatures_are_refused_before_counting(self, tiny, secret):
        name = f"svc-{uuid.uuid4().hex[:8]}"
        svc = SignedClient(secret, service=name)
        for _ in range(3):
            assert svc.get("balance/nobody", secret="x" * 48).status_code == 401
        assert svc.balance("nobody").status_code == 404
