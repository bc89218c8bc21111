"""HMAC authentication of /api/v1/credits/: tampering, staleness, replays, rotation,
and secrets refused at start-up."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from credits.api.auth import sign
from credits.models import CreditEntry, SeenSignature
from tests.credits.credits_helpers import CREDITS, SignedClient, make_wallet, new_secret

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def wallet(sk_client):
    make_wallet(sk_client, topup=0)
    return "ws1"


def body_of(job="job-1", amount=1):
    return json.dumps({"workspaceId": "ws1", "amount": amount, "jobId": job, "sourceService": "summarizer"}).encode()


def unauthorized(response) -> str:
    assert response.status_code == 401, response.content
    err = response.json()["error"]
    assert err["code"] == "UNAUTHORIZED"
    assert response["WWW-Authenticate"].startswith("HMAC-SHA256")
    return err["message"]


class TestSignature:
    def test_a_correctly_signed_request_goes_through(self, svc, wallet):
        assert svc.debit().status_code == 201

    def test_a_tampered_body_is_refused_and_changes_nothing(self, svc, wallet):
        signed_for = body_of(amount=1)
        response = svc.post("debit", body_of(amount=20), sign_body=signed_for)
        assert "Bad signature" in unauthorized(response)
        assert not CreditEntry.objects.exists()

    def test_a_tampered_path_is_refused(self, svc, wallet, sk_client):
        sk_client.post("/api/v1/pay/customers", {"customerId": "ws2"}, format="json")
        response = svc.get("balance/ws2", sign_path=f"{CREDITS}/balance/ws1")
        assert "Bad signature" in unauthorized(response)

    def test_a_tampered_method_is_refused(self, svc, wallet):
        path = f"{CREDITS}/debit"
        raw = body_of()
        headers = svc.headers("GET", path, raw)
        response = svc.client.post(path, data=raw, content_type="application/json", headers=headers)
        unauthorized(response)

    def test_a_tampered_timestamp_is_refused(self, svc, wallet):
        path, raw = f"{CREDITS}/debit", body_of()
        now = int(time.time())
        signature = sign(secret=svc.secret, timestamp=str(now), method="POST", path=path, body=raw)
        response = svc.post("debit", raw, timestamp=now - 1, signature=signature)
        assert "Bad signature" in unauthorized(response)

    # +330, not +301: a loaded machine can take a second or more between signing and the
    # server's clock read, which would bring +301 back inside the window.
    @pytest.mark.parametrize("skew", [-301, 330, -10_000])
    def test_a_timestamp_more_than_300_seconds_away_is_refused_even_when_signed(self, svc, wallet, skew):
        response = svc.post("debit", body_of(), timestamp=int(time.time()) + skew)
        assert "300 s" in unauthorized(response)

    @pytest.mark.parametrize("skew", [-290, 290])
    def test_a_timestamp_within_the_window_is_accepted(self, svc, wallet, skew):
        assert svc.post("debit", body_of(), timestamp=int(time.time()) + skew).status_code == 201

    def test_a_signature_made_with_another_secret_is_refused(self, svc, wallet):
        assert "Bad signature" in unauthorized(SignedClient(new_secret()).debit())

    @pytest.mark.parametrize("header,value", [
        ("X-Service-Name", ""), ("X-Timestamp", ""), ("X-Signature", ""),
        ("X-Timestamp", "12.5"), ("X-Timestamp", "-5"), ("X-Timestamp", "soon"),
        ("X-Signature", "v2=" + "0" * 64), ("X-Signature", "v1=abc"), ("X-Signature", "0" * 64),
    ])
    def test_missing_or_malformed_headers_are_refused(self, svc, wallet, header, value):
        path, raw = f"{CREDITS}/debit", body_of()
        headers = svc.headers("POST", path, raw)
        headers[header] = value
        unauthorized(svc.client.post(path, data=raw, content_type="application/json", headers=headers))

    def test_an_unsigned_request_is_refused(self, client, secret):
        unauthorized(client.get(f"{CREDITS}/balance/ws1"))

    def test_a_merchant_api_key_is_no_credential_here(self, sk_client, secret):
        unauthorized(sk_client.get(f"{CREDITS}/balance/ws1"))

    def test_with_no_secrets_configured_everything_is_refused(self, settings, wallet):
        secret = new_secret()
        settings.SVC_HMAC_SECRETS = []
        assert "not configured" in unauthorized(SignedClient(secret).debit())

    def test_the_refusal_happens_before_the_body_is_looked_at(self, client, secret):
        """An unsigned request with a bad body is 401, not 400: nothing is told to strangers."""
        unauthorized(client.post(f"{CREDITS}/debit", data=b"{nope", content_type="application/json"))


class TestReplay:
    @pytest.mark.parametrize("redis", [False, True], ids=["database", "cache"])
    def test_a_replayed_signature_is_refused_within_the_window(self, svc, wallet, settings, redis):
        settings.REDIS_URL = "redis://configured" if redis else ""
        path, raw = f"{CREDITS}/debit", body_of()
        headers = svc.headers("POST", path, raw)
        first = svc.client.post(path, data=raw, content_type="application/json", headers=headers)
        assert first.status_code == 201
        replay = svc.client.post(path, data=raw, content_type="application/json", headers=headers)
        assert "Replayed" in unauthorized(replay)
        assert SeenSignature.objects.exists() is not redis
        assert CreditEntry.objects.count() == 1

    def test_a_refused_request_spends_its_signature_too(self, svc, wallet):
        path, raw = f"{CREDITS}/debit", body_of(amount=10_000)
        headers = svc.headers("POST", path, raw)
        assert svc.client.post(path, data=raw, content_type="application/json", headers=headers).status_code == 402
        unauthorized(svc.client.post(path, data=raw, content_type="application/json", headers=headers))

    def test_a_retry_signed_afresh_is_accepted_and_replays_the_debit(self, svc, wallet):
        first = svc.debit().json()
        assert svc.debit().json()["ledgerEntryId"] == first["ledgerEntryId"]

    def test_expired_signatures_are_forgotten(self, svc, wallet, settings):
        settings.REDIS_URL = ""
        svc.debit(job="a")
        SeenSignature.objects.update(expires_at="2000-01-01T00:00:00Z")
        svc.debit(job="b")
        assert SeenSignature.objects.count() == 1


class TestRotation:
    def test_while_two_secrets_are_active_both_sign_and_after_the_old_one_goes_only_the_new_one(self, settings, wallet):
        old, new = new_secret(), new_secret()
        settings.SVC_HMAC_SECRETS = [old]
        assert SignedClient(old).debit(job="1").status_code == 201
        settings.SVC_HMAC_SECRETS = [old, new]  # step 1: add the new secret beside the old
        assert SignedClient(old).debit(job="2").status_code == 201
        assert SignedClient(new).debit(job="3").status_code == 201
        settings.SVC_HMAC_SECRETS = [new]  # step 3: callers moved; drop the old
        unauthorized(SignedClient(old).debit(job="4"))
        assert SignedClient(new).debit(job="5").status_code == 201


class TestStartUp:
    def start(self, secrets_value: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "SVC_HMAC_SECRETS": secrets_value, "DJANGO_SETTINGS_MODULE": "config.settings"}
        code = "import django; django.setup(); from django.conf import settings; print(len(settings.SVC_HMAC_SECRETS))"
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    def test_a_secret_under_32_characters_stops_the_service_from_starting(self):
        done = self.start(f"{'a' * 40},{'b' * 31}")
        assert done.returncode != 0
        assert "ImproperlyConfigured" in done.stderr and "at least 32 characters" in done.stderr

    def test_secrets_of_32_characters_or_more_are_accepted_comma_separated(self):
        done = self.start(f"{'a' * 32},{'b' * 64}")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "2"
