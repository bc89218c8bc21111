"""Security of the service's edges: page headers (CSP with a nonce), the staff sign-in's
guard against guessing, revoked and unknown API keys alike, and no secret in any log line."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Customer
from billing.services.api_keys import api_key_create, api_key_revoke
from config.logs import JsonFormatter, PlainFormatter, redact
from credits.api.auth import sign
from portal.tokens import portal_token_make
from tests.billing.billing_helpers import make_product, subscribe

pytestmark = pytest.mark.django_db

PING = "/api/v1/pay/ping"


def checkout_path(sk_client, customer="c1") -> str:
    """An open checkout page (a subscription to a paid product without a card)."""
    if sk_client.get("/api/v1/pay/products/pro").status_code != 200:
        make_product(sk_client, "pro", amount=2000)
    body = subscribe(sk_client, "pro", customer=customer, successUrl="https://shop.example/ok")
    return "/checkout/" + body["url"].split("/checkout/")[1]


def portal_path(customer="c1") -> str:
    pk = Customer.objects.get(external_id=customer, deleted_at__isnull=True).pk
    return f"/portal/{portal_token_make(customer_pk=pk)}/"


class TestPageHeaders:
    def assert_strict_headers(self, response):
        csp = response["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["object-src"] == "'none'"
        nonce = re.fullmatch(r"'self' 'nonce-([A-Za-z0-9_\-]{20,})'", directives["script-src"]).group(1)
        assert directives["style-src"] == f"'self' 'nonce-{nonce}'"
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response["X-Content-Type-Options"] == "nosniff"
        # no Referer to other sites (no-referrer would make Chromium's form POSTs Origin: null)
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Frame-Options"] == "DENY"
        assert "camera=()" in response["Permissions-Policy"]
        assert response["Cache-Control"] == "no-store"
        return nonce

    def assert_inline_tags_carry(self, response, nonce):
        html = response.content.decode()
        tags = re.findall(r"<(?:script|style)\b[^>]*>", html)
        for tag in tags:
            if tag.startswith("<script") and "src=" in tag:
                continue
            assert f'nonce="{nonce}"' in tag, tag

    def test_portal_pages_are_strict_and_their_inline_style_carries_the_nonce(self, sk_client):
        sk_client.post("/api/v1/pay/customers", {"customerId": "c1"}, format="json")
        first, second = Client().get(portal_path()), Client().get(portal_path())
        assert first.status_code == 200
        nonce = self.assert_strict_headers(first)
        self.assert_inline_tags_carry(first, nonce)
        assert self.assert_strict_headers(second) != nonce  # a fresh nonce per response

    def test_a_refused_portal_link_is_strict_too(self):
        response = Client().get("/portal/not-a-token/")
        assert response.status_code == 403
        self.assert_inline_tags_carry(response, self.assert_strict_headers(response))

    def test_checkout_pages_are_strict(self, sk_client):
        response = Client().get(checkout_path(sk_client))
        assert response.status_code == 200
        self.assert_inline_tags_carry(response, self.assert_strict_headers(response))

    def test_the_api_gets_no_page_policy(self, sk_client):
        response = sk_client.get(PING)
        assert response.status_code == 200
        assert "Content-Security-Policy" not in response


@pytest.fixture
def staff(db):
    username = f"staff-{uuid.uuid4().hex[:8]}"  # the cache (Redis) is shared by parallel test workers
    get_user_model().objects.create_user(username=username, password="right-horse-battery", is_staff=True,
                                         is_superuser=True)
    return username


def sign_in(username, password, address="10.0.0.1"):
    client = Client(REMOTE_ADDR=address)
    response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    return client, response


def signed_in(client) -> bool:
    return client.get("/admin/").status_code == 200


class TestAdminLoginGuard:
    @pytest.fixture(autouse=True)
    def limits(self, settings):
        settings.ADMIN_LOGIN_MAX_FAILURES = 3
        settings.ADMIN_LOGIN_WINDOW_SECONDS = 600
        settings.ADMIN_LOGIN_LOCKOUT_SECONDS = 900

    def test_after_n_failures_even_the_right_password_is_refused_with_a_clear_message(self, staff):
        for _ in range(3):
            client, response = sign_in(staff, "wrong")
            assert response.status_code == 200 and not signed_in(client)
            assert "Too many failed sign-ins" not in response.content.decode()
        client, response = sign_in(staff, "right-horse-battery")
        assert response.status_code == 200 and not signed_in(client)
        text = response.content.decode()
        assert "Too many failed sign-ins for this username from your address" in text and "15 minutes" in text

    def test_another_address_or_username_is_not_locked(self, staff):
        for _ in range(3):
            sign_in(staff, "wrong")
        client, response = sign_in(staff, "right-horse-battery", address="10.0.0.2")
        assert response.status_code == 302 and signed_in(client)

    def test_a_successful_sign_in_forgets_the_failures(self, staff):
        for _ in range(2):
            sign_in(staff, "wrong")
        client, response = sign_in(staff, "right-horse-battery")
        assert response.status_code == 302 and signed_in(client)
        for _ in range(2):
            sign_in(staff, "wrong")
        client, response = sign_in(staff, "right-horse-battery")
        assert response.status_code == 302 and signed_in(client)

    def test_the_username_is_matched_without_case(self, staff):
        for _ in range(3):
            sign_in(staff.upper(), "wrong")
        client, response = sign_in(staff, "right-horse-battery")
        assert not signed_in(client) and "Too many failed sign-ins" in response.content.decode()


class TestRevokedAndUnknownKeys:
    def test_a_revoked_key_and_an_unknown_key_get_the_same_bytes(self):
        key, raw = api_key_create(name="soon revoked", type="secret", now=timezone.now())
        api_key_revoke(key_id=key.pk, now=timezone.now())
        unknown = "cp_sk_" + "A" * (len(raw) - len("cp_sk_"))
        answers = []
        for candidate in (raw, unknown):
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {candidate}")
            with CaptureQueriesContext(connection) as queries:
                response = client.post("/api/v1/pay/check", {"customer": "c1", "feature": "x"}, format="json")
            headers = {k: v for k, v in response.items() if k.lower() != "x-request-id"}
            statements = [re.sub(r"'[0-9a-f]{64}'", "'<hash>'", q["sql"]) for q in queries]
            answers.append((response.status_code, response.content, headers, statements))
        assert answers[0][0] == 401
        assert answers[0][1] == answers[1][1]  # byte for byte
        assert answers[0][:3] == answers[1][:3]
        # the same work: one lookup by hash, whatever the key
        assert answers[0][3] == answers[1][3] and len(answers[0][3]) == 1


@pytest.fixture
def log_output(settings):
    """What the configured console handler writes, at DEBUG everywhere (SQL included)."""
    import io

    root = logging.getLogger()
    handler = next(h for h in root.handlers if h.get_name() == "console")
    buffer = io.StringIO()
    old_stream = handler.setStream(buffer)
    loggers = [root] + [logging.getLogger(n) for n in ("django", "django.request", "django.db.backends",
                                                       "django.server", "billing", "credits", "portal")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    connection.force_debug_cursor = True  # Django logs every SQL statement with its parameters
    try:
        yield buffer, handler
    finally:
        connection.force_debug_cursor = False
        handler.setStream(old_stream)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class TestNoSecretInLogs:
    @pytest.mark.parametrize("formatter", [PlainFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"),
                                           JsonFormatter()], ids=["plain", "json"])
    def test_requests_carrying_secrets_leave_none_in_the_log(self, log_output, formatter, settings):
        buffer, handler = log_output
        old_formatter = handler.formatter
        handler.setFormatter(formatter)
        try:
            secrets_seen = self.drive_requests(settings)
        finally:
            handler.setFormatter(old_formatter)
        output = buffer.getvalue()
        assert "Forbidden: /portal/[redacted]/" in output  # django.request logged the refused link, redacted
        assert len(output.splitlines()) > 20  # SQL and request logs were written
        for name, value in secrets_seen.items():
            assert value not in output, f"{name} reached the log"

    def drive_requests(self, settings) -> dict[str, str]:
        seen = {}
        _, secret_key = api_key_create(name="logged?", type="secret", now=timezone.now())
        seen["secret key"] = secret_key
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret_key}")
        assert client.post("/api/v1/pay/customers", {"customerId": "c1"}, format="json").status_code in (200, 201)
        created = client.post("/api/v1/pay/api-keys", {"name": "k2", "type": "secret"}, format="json")
        seen["created key"] = created.json()["rawKey"]
        unknown = "cp_sk_" + uuid.uuid4().hex + uuid.uuid4().hex
        seen["unknown key"] = unknown
        bad = APIClient()
        bad.credentials(HTTP_AUTHORIZATION=f"Bearer {unknown}")
        assert bad.get(PING).status_code == 401
        hook = client.post("/api/v1/pay/webhooks", {"url": "https://hooks.example/in", "events": ["invoice.paid"]},
                           format="json")
        if hook.status_code == 201:  # the outgoing webhooks routes
            seen["webhook secret"] = hook.json()["secret"]
        # Stripe's inbound webhook with a signature header (refused: no secret configured here)
        stripe_sig = hashlib.sha256(b"stripe").hexdigest()
        seen["stripe signature"] = stripe_sig
        Client().post("/api/v1/pay/gateways/stripe/webhook", data=b"{}", content_type="application/json",
                      headers={"Stripe-Signature": f"t={int(time.time())},v1={stripe_sig}"})
        # the credits API: a good and a bad HMAC signature
        hmac_secret = "s" * 20 + uuid.uuid4().hex
        settings.SVC_HMAC_SECRETS = [hmac_secret]
        seen["hmac secret"] = hmac_secret
        for key in (hmac_secret, "x" * 48):
            ts = str(int(time.time()))
            signature = sign(secret=key, timestamp=ts, method="GET", path="/api/v1/credits/balance/c1", body=b"")
            seen[f"hmac signature {len(seen)}"] = signature
            Client().get("/api/v1/credits/balance/c1",
                         headers={"X-Service-Name": "svc", "X-Timestamp": ts, "X-Signature": f"v1={signature}"})
        # portal links: a good one, and a tampered one that Django logs as a 403
        good = portal_path().split("/")[2]
        seen["portal token"] = good
        assert Client().get(f"/portal/{good}/").status_code == 200
        tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
        seen["tampered portal token"] = tampered
        assert Client().get(f"/portal/{tampered}/").status_code == 403
        # card numbers at checkout: a declined one, then the success card
        path = checkout_path(client)
        for card in ("4000 0000 0000 0002", "4242424242424242"):
            seen[f"card {card}"] = card
            seen[f"card digits {card}"] = card.replace(" ", "")
            Client().post(path, {"cardNumber": card})
        # a secret key sent where it does not belong, in the path and the query string
        Client().get(f"/api/v1/pay/customers/{secret_key}?key={secret_key}")
        return seen


class TestRedaction:
    @pytest.mark.parametrize("text,secret", [
        ("Authorization: Bearer cp_sk_abcDEF123_-xyz", "cp_sk_abcDEF123_-xyz"),
        ("key=cp_pk_abcDEF123", "abcDEF123"),
        ('{"secret": "whsec_0123456789abcdef"}', "0123456789abcdef"),
        ("X-Signature: v1=" + "ab" * 32, "ab" * 32),
        ("GET /portal/.eJyrVkrOz0vOTypWsoo2NNAxNNQx0jE0iTU0NNAxMDZCAgBHLQ:1tAbCd:abc123/ 403", "eJyrVkrO"),
        ("card 4242 4242 4242 4242 declined", "4242 4242 4242 4242"),
        ("card 4000-0027-6000-3184", "4000-0027-6000-3184"),
    ])
    def test_secrets_are_redacted(self, text, secret):
        assert secret not in redact(text) and "[redacted]" in redact(text)

    def test_ordinary_numbers_are_kept(self):
        line = "event 1700000000123 amount 4242424242424241 id 12345"  # epoch ms; not a Luhn number
        assert redact(line) == line

    def test_the_json_formatter_writes_one_object_a_line(self):
        record = logging.LogRecord("billing", logging.INFO, __file__, 1, "charged %s", ("cp_sk_secret",), None)
        record.request_id = "req_1"
        entry = json.loads(JsonFormatter().format(record))
        assert entry["message"] == "charged cp_sk_[redacted]" and entry["request_id"] == "req_1"
        assert entry["level"] == "INFO" and entry["logger"] == "billing" and entry["time"].endswith("Z")
