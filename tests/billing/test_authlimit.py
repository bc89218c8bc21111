"""Failed API-key authentications are limited per client address (in Redis when REDIS_URL is set,
in the process otherwise), a valid key keeps working from a limited address, and the client address
is X-Forwarded-For's right-most untrusted entry only behind TRUSTED_PROXY_COUNT proxies (here and for
the admin sign-in guard)."""

import uuid

import pytest
import redis
from django.conf import settings as django_settings
from django.test import Client, RequestFactory
from django.utils import timezone
from rest_framework.test import APIClient

from billing.api import throttling
from billing.client_address import client_address
from billing.services.api_keys import api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db

PING = "/api/v1/pay/ping"
HAS_REDIS = bool(django_settings.REDIS_URL)


class CountingLimiter(throttling.RateLimiter):
    """The real limiter (Redis or in-process), remembering which buckets it was asked for."""

    def __init__(self):
        super().__init__()
        self.taken = []

    def take(self, key, *, rate, burst):
        self.taken.append(key)
        return super().take(key, rate=rate, burst=burst)


@pytest.fixture(params=["local", "redis"])
def backend(request, settings, monkeypatch):
    """A fresh limiter (as in a new process) on the given store: 3 failed authentications a minute
    per address (a token back every 20 s), ample per-key buckets."""
    if request.param == "redis":
        if not HAS_REDIS:
            pytest.skip("needs REDIS_URL (CI sets it)")
    else:
        settings.REDIS_URL = ""
    settings.AUTH_FAILURE_LIMIT_PER_MINUTE = 3
    settings.RATE_LIMIT_PER_SECOND = 1000.0
    settings.RATE_LIMIT_BURST = 2000
    settings.TRUSTED_PROXY_COUNT = 0
    settings.RATE_LIMIT_KEY_PREFIX = f"test-authlimit:{uuid.uuid4().hex}:"
    limiter = CountingLimiter()
    monkeypatch.setattr(throttling, "limiter", limiter)
    return limiter


def client_with(raw=None, address="10.1.0.1", **extra):
    client = APIClient(REMOTE_ADDR=address, **extra)
    if raw is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def new_key(key_type="secret"):
    return api_key_create(name="authlimit", type=key_type, now=timezone.now())


def unknown_key():
    return "cp_sk_" + uuid.uuid4().hex + "x" * 11


def assert_rate_limited(response):
    assert response.status_code == 429, response.content
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(response["Retry-After"]) <= 20  # one token back every 20 s
    assert "WWW-Authenticate" not in response


class TestFailedAuthenticationLimit:
    def test_past_the_limit_an_address_gets_429_for_any_request_without_a_valid_key(self, backend):
        key, _ = new_key()
        api_key_revoke(key_id=key.pk, now=timezone.now())
        assert [client_with(unknown_key()).get(PING).status_code for _ in range(3)] == [401, 401, 401]
        assert_rate_limited(client_with(unknown_key()).get(PING))
        assert_rate_limited(client_with("cp_sk_" + "A" * 43).get(PING))  # a revoked key
        assert_rate_limited(client_with("not-a-key").get(PING))  # malformed
        assert_rate_limited(client_with().get(PING))  # no key at all
        assert_rate_limited(client_with().post("/api/v1/pay/customers", {"customerId": "x"}, format="json"))

    def test_a_valid_key_keeps_working_from_a_limited_address(self, backend):
        _, secret = new_key()
        _, publishable = new_key("publishable")
        for _ in range(4):
            client_with(unknown_key()).get(PING)
        assert client_with(unknown_key()).get(PING).status_code == 429
        assert client_with(secret).get(PING).status_code == 200
        assert client_with(publishable).get(PING).status_code == 200
        created = client_with(secret).post("/api/v1/pay/customers", {"customerId": f"c-{uuid.uuid4().hex[:6]}"},
                                           format="json")
        assert created.status_code == 201

    def test_a_valid_key_costs_no_extra_bucket_call(self, backend):
        _, secret = new_key()
        backend.taken.clear()
        assert client_with(secret).get(PING).status_code == 200
        assert [k.split(":")[0] for k in backend.taken] == ["key"]  # only its own per-key bucket

    def test_a_revoked_key_and_an_unknown_key_get_the_same_bytes_before_and_after_the_limit(self, backend):
        key, raw = new_key()
        api_key_revoke(key_id=key.pk, now=timezone.now())
        unknown = "cp_sk_" + "B" * (len(raw) - len("cp_sk_"))
        answers = []
        for address in ("10.1.0.7", "10.1.0.8"):
            for candidate in (raw, unknown):
                response = client_with(candidate, address).get(PING)
                headers = {k: v for k, v in response.items() if k.lower() != "x-request-id"}
                answers.append((response.status_code, response.content, headers))
        # address .7: revoked then unknown, both 401; address .8 the same
        assert answers[0][0] == 401 and answers[0] == answers[1] == answers[2] == answers[3]
        client_with(unknown, "10.1.0.7").get(PING)  # the third failure from .7
        blocked = []
        for candidate in (raw, unknown):
            response = client_with(candidate, "10.1.0.7").get(PING)
            blocked.append((response.status_code, response.content,
                            {k: v for k, v in response.items() if k.lower() not in ("x-request-id", "retry-after")}))
        assert blocked[0][0] == 429 and blocked[0] == blocked[1]

    def test_each_address_has_its_own_bucket(self, backend):
        for _ in range(4):
            client_with(unknown_key(), "10.1.0.2").get(PING)
        assert client_with(unknown_key(), "10.1.0.2").get(PING).status_code == 429
        assert client_with(unknown_key(), "10.1.0.3").get(PING).status_code == 401

    def test_ipv6_addresses_count_per_64(self, backend):
        for n in range(3):
            assert client_with(unknown_key(), f"2001:db8:1:2::{n + 1}").get(PING).status_code == 401
        assert client_with(unknown_key(), "2001:db8:1:2:ffff::9").get(PING).status_code == 429
        assert client_with(unknown_key(), "2001:db8:1:3::1").get(PING).status_code == 401

    def test_zero_or_disabled_turns_it_off(self, backend, settings):
        settings.AUTH_FAILURE_LIMIT_PER_MINUTE = 0
        assert {client_with(unknown_key()).get(PING).status_code for _ in range(6)} == {401}
        settings.AUTH_FAILURE_LIMIT_PER_MINUTE = 3
        settings.RATE_LIMIT_ENABLED = False
        assert {client_with(unknown_key()).get(PING).status_code for _ in range(6)} == {401}

    def test_behind_a_proxy_each_forwarded_client_is_counted_and_spoofing_does_not_escape(self, backend, settings):
        settings.TRUSTED_PROXY_COUNT = 1
        proxy = "10.9.9.9"
        for _ in range(3):
            client_with(unknown_key(), proxy, HTTP_X_FORWARDED_FOR="203.0.113.5").get(PING)
        # the attacker writes a fresh left-most entry each time: the proxy still appends the real one
        spoofed = client_with(unknown_key(), proxy, HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.5").get(PING)
        assert_rate_limited(spoofed)
        # another client behind the same proxy is not limited
        assert client_with(unknown_key(), proxy, HTTP_X_FORWARDED_FOR="203.0.113.6").get(PING).status_code == 401


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
class TestRedisBacked:
    def test_failures_are_shared_by_every_process_and_the_bucket_expires(self, backend, monkeypatch):
        for _ in range(3):
            assert client_with(unknown_key(), "10.1.0.4").get(PING).status_code == 401
        monkeypatch.setattr(throttling, "limiter", throttling.RateLimiter())  # another process
        assert client_with(unknown_key(), "10.1.0.4").get(PING).status_code == 429
        r = redis.Redis.from_url(django_settings.REDIS_URL)
        keys = r.keys(django_settings.RATE_LIMIT_KEY_PREFIX + "authfail:*")
        assert [k.decode() for k in keys] == [django_settings.RATE_LIMIT_KEY_PREFIX + "authfail:10.1.0.4"]
        assert r.pttl(keys[0]) > 0

    def test_redis_down_fails_open_and_counts_in_the_process(self, backend, settings):
        settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
        assert [client_with(unknown_key(), "10.1.0.5").get(PING).status_code for _ in range(4)] == [401] * 3 + [429]
        _, secret = new_key()
        assert client_with(secret, "10.1.0.5").get(PING).status_code == 200


class TestClientAddress:
    @pytest.fixture
    def rf(self):
        return RequestFactory()

    def address(self, rf, forwarded=None, remote="10.0.0.9"):
        extra = {"REMOTE_ADDR": remote}
        if forwarded is not None:
            extra["HTTP_X_FORWARDED_FOR"] = forwarded
        return client_address(rf.get("/", **extra))

    def test_without_trusted_proxies_forwarded_for_is_ignored(self, rf, settings):
        settings.TRUSTED_PROXY_COUNT = 0
        assert self.address(rf, "203.0.113.5") == "10.0.0.9"

    @pytest.mark.parametrize("count, forwarded, expected", [
        (1, "203.0.113.5", "203.0.113.5"),
        (1, "198.51.100.1, 203.0.113.5", "203.0.113.5"),  # the client's own left-most entry is ignored
        (2, "198.51.100.1, 203.0.113.5, 10.0.0.8", "203.0.113.5"),
        (2, "203.0.113.5", "203.0.113.5"),  # fewer entries than proxies: the outermost one's
        (1, "203.0.113.5:4711", "203.0.113.5"),
        (1, "[2001:db8::1]:443", "2001:db8::1"),
        (1, "2001:db8::1", "2001:db8::1"),
        (1, "", "10.0.0.9"),
        (1, "evil, not-an-address", "10.0.0.9"),
    ])
    def test_the_right_most_untrusted_entry(self, rf, settings, count, forwarded, expected):
        settings.TRUSTED_PROXY_COUNT = count
        assert self.address(rf, forwarded) == expected

    def test_no_header_is_the_remote_address(self, rf, settings):
        settings.TRUSTED_PROXY_COUNT = 1
        assert self.address(rf) == "10.0.0.9"


class TestAdminLoginBehindAProxy:
    @pytest.fixture(autouse=True)
    def limits(self, settings):
        settings.ADMIN_LOGIN_MAX_FAILURES = 3
        settings.ADMIN_LOGIN_WINDOW_SECONDS = 600
        settings.ADMIN_LOGIN_LOCKOUT_SECONDS = 900
        settings.TRUSTED_PROXY_COUNT = 1

    @pytest.fixture
    def staff(self, db):
        from django.contrib.auth import get_user_model

        username = f"staff-{uuid.uuid4().hex[:8]}"
        get_user_model().objects.create_user(username=username, password="right-horse-battery", is_staff=True,
                                             is_superuser=True)
        return username

    def sign_in(self, username, password, forwarded):
        client = Client(REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR=forwarded)
        response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
        return client.get("/admin/").status_code == 200, response

    def test_the_lockout_follows_the_forwarded_client_not_the_proxy(self, staff):
        for n in range(3):
            self.sign_in(staff, "wrong", f"198.51.100.{n}, 203.0.113.5")  # spoofed left-most entries
        ok, response = self.sign_in(staff, "right-horse-battery", "203.0.113.5")
        assert not ok and "Too many failed sign-ins" in response.content.decode()
        ok, _ = self.sign_in(staff, "right-horse-battery", "203.0.113.6")  # another client, same proxy
        assert ok
