"""Refused signatures on the credits API are counted per client address with the merchant API's
mechanism and limit (AUTH_FAILURE_LIMIT_PER_MINUTE; in Redis when REDIS_URL is set, in the process
otherwise): past it the address gets 429 RATE_LIMITED in the credits error shape, a valid signature
still goes through, and once the bucket refills requests are judged again."""

import json
import time
import uuid

import pytest
import redis
from django.conf import settings as django_settings
from django.test import Client
from rest_framework.test import APIClient

from billing.api import throttling
from credits import services as credit_services
from credits.api import auth as credits_auth
from credits.models import CreditEntry
from tests.credits.credits_helpers import CREDITS, SignedClient, make_wallet

pytestmark = pytest.mark.django_db

HAS_REDIS = bool(django_settings.REDIS_URL)
LIMIT = 3  # failures a minute per address: a token back every 20 s


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class CountingLimiter(throttling.RateLimiter):
    """The real limiter (Redis or in-process) on an injected clock, remembering the buckets it was asked for."""

    def __init__(self):
        super().__init__()
        self.clock = FakeClock()
        self.local = throttling.LocalBuckets(clock=self.clock)
        self.taken = []

    def take(self, key, *, rate, burst):
        self.taken.append(key)
        return super().take(key, rate=rate, burst=burst)


@pytest.fixture(params=["local", "redis"])
def backend(request, settings, monkeypatch):
    """A fresh limiter (as in a new process) on the given store: LIMIT refused signatures a minute per
    address, ample per-service buckets."""
    if request.param == "redis":
        if not HAS_REDIS:
            pytest.skip("needs REDIS_URL (CI sets it)")
    else:
        settings.REDIS_URL = ""
    settings.AUTH_FAILURE_LIMIT_PER_MINUTE = LIMIT
    settings.CREDITS_RATE_LIMIT_PER_SECOND = 1000.0
    settings.CREDITS_RATE_LIMIT_BURST = 2000
    settings.TRUSTED_PROXY_COUNT = 0
    settings.RATE_LIMIT_KEY_PREFIX = f"test-credits-authlimit:{uuid.uuid4().hex}:"
    _clients.clear()
    limiter = CountingLimiter()
    limiter.store = request.param
    monkeypatch.setattr(throttling, "limiter", limiter)
    return limiter


@pytest.fixture
def wallet(sk_client):
    make_wallet(sk_client, topup=0)  # 20 plan credits
    return "ws1"


_clients = {}


def signed_from(secret, address="10.2.0.1", service="summarizer"):
    """One signing client per secret (a fresh one each test), address and service: it never signs
    the same request twice in one second, which would be a replay."""
    key = (secret, address, service)
    if key not in _clients:
        _clients[key] = SignedClient(secret, service=service, client=Client(REMOTE_ADDR=address))
    return _clients[key]


def debit_body(amount=1, job="job-1"):
    return {"workspaceId": "ws1", "amount": amount, "jobId": job, "sourceService": "summarizer"}


def bad_debit(secret, address="10.2.0.1"):
    """A well-formed, fresh request whose signature does not match."""
    return signed_from(secret, address).post("debit", debit_body(), signature="0" * 64)


def assert_unauthorized(response):
    assert response.status_code == 401, response.content
    assert response.json()["error"]["code"] == "UNAUTHORIZED"


def assert_rate_limited(response):
    assert response.status_code == 429, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(response["Retry-After"]) <= 20  # one token back every 20 s
    assert "WWW-Authenticate" not in response


def total(secret, workspace="ws1", address="10.2.0.1"):
    response = signed_from(secret, address).balance(workspace)
    assert response.status_code == 200, response.content
    return response.json()["total"]


def failure_buckets(limiter):
    return [k for k in limiter.taken if k.startswith("svcauthfail:")]


class TestRefusedSignatureLimit:
    def test_past_the_limit_every_refused_signature_gets_429_in_the_credits_error_shape(self, backend, secret,
                                                                                           wallet):
        for _ in range(LIMIT):
            assert_unauthorized(bad_debit(secret))
        assert_rate_limited(bad_debit(secret))
        client = signed_from(secret)
        assert_rate_limited(client.post("debit", debit_body(), timestamp=int(time.time()) - 10_000))  # stale
        assert_rate_limited(client.post("debit", debit_body(), signature="not-hex"))  # malformed
        assert_rate_limited(signed_from(secret, service="").debit())  # X-Service-Name missing
        assert_rate_limited(Client(REMOTE_ADDR="10.2.0.1").get(f"{CREDITS}/balance/ws1"))  # no signature at all
        assert not CreditEntry.objects.exists()

    def test_a_replayed_signature_is_counted_too(self, backend, secret, wallet):
        path, raw = f"{CREDITS}/balance/ws1", b""
        headers = signed_from(secret).headers("GET", path, raw)
        assert Client(REMOTE_ADDR="10.2.0.1").get(path, headers=headers).status_code == 200
        for _ in range(LIMIT):
            assert_unauthorized(Client(REMOTE_ADDR="10.2.0.1").get(path, headers=headers))
        assert_rate_limited(Client(REMOTE_ADDR="10.2.0.1").get(path, headers=headers))

    def test_a_valid_signed_debit_from_a_limited_address_goes_through_exactly_once(self, backend, secret, wallet):
        before = total(secret)
        for _ in range(LIMIT + 2):
            bad_debit(secret)
        assert_rate_limited(bad_debit(secret))
        backend.taken.clear()
        debited = signed_from(secret).debit(amount=5, job="job-nat")
        assert debited.status_code == 201, debited.content
        assert failure_buckets(backend) == []  # a valid signature costs no failure-bucket call
        assert debited.json()["totalBalanceAfter"] == before - 5
        assert total(secret) == before - 5
        assert CreditEntry.objects.filter(job_id="job-nat").count() == 1
        assert_rate_limited(bad_debit(secret))  # and the address is still limited for the rest

    def test_another_address_is_unaffected(self, backend, secret, wallet):
        for _ in range(LIMIT + 1):
            bad_debit(secret, "10.2.0.2")
        assert_rate_limited(bad_debit(secret, "10.2.0.2"))
        assert_unauthorized(bad_debit(secret, "10.2.0.3"))

    def test_the_credits_and_merchant_apis_count_in_their_own_buckets(self, backend, secret, wallet, settings):
        for _ in range(LIMIT + 1):
            bad_debit(secret, "10.2.0.4")
        assert_rate_limited(bad_debit(secret, "10.2.0.4"))
        merchant = APIClient(REMOTE_ADDR="10.2.0.4")
        merchant.credentials(HTTP_AUTHORIZATION="Bearer cp_sk_" + "C" * 43)
        assert merchant.get("/api/v1/pay/ping").status_code == 401

    def test_with_the_limit_at_zero_nothing_is_counted(self, backend, secret, wallet, settings):
        settings.AUTH_FAILURE_LIMIT_PER_MINUTE = 0
        for _ in range(2 * LIMIT + 2):
            assert_unauthorized(bad_debit(secret))
        assert failure_buckets(backend) == []
        settings.AUTH_FAILURE_LIMIT_PER_MINUTE = LIMIT
        settings.RATE_LIMIT_ENABLED = False
        assert {bad_debit(secret).status_code for _ in range(2 * LIMIT)} == {401}

    def test_once_the_bucket_refills_requests_are_judged_again(self, backend, secret, wallet, settings):
        address = "10.2.0.5"
        for _ in range(LIMIT):
            assert_unauthorized(bad_debit(secret, address))
        assert_rate_limited(bad_debit(secret, address))
        let_time_pass(backend, address, 20.5)  # one token back
        assert_unauthorized(bad_debit(secret, address))
        assert_rate_limited(bad_debit(secret, address))
        let_time_pass(backend, address, 61)  # a whole minute: the full limit again
        assert [bad_debit(secret, address).status_code for _ in range(LIMIT + 1)] == [401] * LIMIT + [429]

    def test_limited_requests_do_no_expensive_work(self, backend, secret, wallet, settings, monkeypatch):
        for _ in range(LIMIT):
            bad_debit(secret)
        remembered = []
        real_remember = credit_services.signature_remember

        def remember(**kwargs):
            remembered.append(kwargs["signature"])
            return real_remember(**kwargs)

        monkeypatch.setattr(credits_auth, "signature_remember", remember)
        assert_rate_limited(bad_debit(secret))
        assert remembered == []  # a bad signature never reaches the replay store
        # a refusal by the headers alone is answered before the body is read: 429, not 413
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
        big = json.dumps({"workspaceId": "ws1", "amount": 1, "jobId": "j", "sourceService": "s",
                          "metadata": {"pad": "x" * 2000}}).encode()
        assert_rate_limited(signed_from(secret).post("debit", big, timestamp=int(time.time()) - 10_000))
        assert signed_from(secret).post("debit", big).status_code == 413  # a fresh one is read, and too big


def let_time_pass(limiter, address, seconds):
    """The in-process buckets run on the limiter's fake clock; a Redis bucket, on Redis's own clock,
    is made as old as if ``seconds`` had passed since its last take."""
    if limiter.store == "local":
        limiter.clock.now += seconds
        return
    r = redis.Redis.from_url(django_settings.REDIS_URL)
    key = django_settings.RATE_LIMIT_KEY_PREFIX + f"svcauthfail:{address}"
    r.hset(key, "ms", int(r.hget(key, "ms")) - int(seconds * 1000))


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
class TestRedisBacked:
    def test_failures_are_shared_by_every_process_and_the_bucket_expires(self, backend, secret, wallet,
                                                                         monkeypatch):
        for _ in range(LIMIT):
            assert_unauthorized(bad_debit(secret, "10.2.0.6"))
        monkeypatch.setattr(throttling, "limiter", throttling.RateLimiter())  # another process
        assert_rate_limited(bad_debit(secret, "10.2.0.6"))
        r = redis.Redis.from_url(django_settings.REDIS_URL)
        keys = r.keys(django_settings.RATE_LIMIT_KEY_PREFIX + "svcauthfail:*")
        assert [k.decode() for k in keys] == [django_settings.RATE_LIMIT_KEY_PREFIX + "svcauthfail:10.2.0.6"]
        assert r.pttl(keys[0]) > 0

    def test_redis_down_fails_open_and_counts_in_the_process(self, backend, secret, wallet, settings):
        before = total(secret, address="10.2.0.7")
        settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
        assert [bad_debit(secret, "10.2.0.7").status_code for _ in range(LIMIT + 1)] == [401] * LIMIT + [429]
        assert signed_from(secret, "10.2.0.7").debit(amount=2, job="job-down").status_code == 201
        assert total(secret, address="10.2.0.7") == before - 2
