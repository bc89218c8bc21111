"""Shared helpers of the credits API tests: signing requests and a workspace with credits."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time

from django.test import Client

from credits.api.auth import sign
from billing.models import Balance, BalanceBucket
from tests.billing.billing_helpers import add_card, make_product, subscribe

CREDITS = "/api/v1/credits"


def new_secret() -> str:
    return secrets.token_urlsafe(36)  # 48 characters


class SignedClient:
    """Signs every request as API.md says. ``timestamp``, ``secret``, ``signature``,
    ``sign_path`` and ``sign_body`` override what is signed, to test refusals."""

    def __init__(self, secret: str, service: str = "summarizer", client: Client | None = None):
        self.secret, self.service = secret, service
        # A fresh django.test.Client per request (unless one is given), so threads may share this.
        self.client, self._given = client or Client(), client is not None
        self._signed, self._lock = set(), threading.Lock()

    def fresh_timestamp(self, method: str, path: str, body: bytes) -> int:
        """Now, or a second later for each time this very request was signed
        already: the same request in the same second would be a replay (as the SDK does)."""
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            ts = int(time.time())
            while (ts, method, path, digest) in self._signed:
                ts += 1
            self._signed.add((ts, method, path, digest))
        return ts

    def headers(self, method: str, path: str, body: bytes, *, timestamp=None, secret=None, signature=None,
                sign_path=None, sign_body=None, service=None) -> dict:
        ts = str(self.fresh_timestamp(method, path, body) if timestamp is None else timestamp)
        digest = signature or sign(secret=secret or self.secret, timestamp=ts, method=method,
                                   path=sign_path or path, body=body if sign_body is None else sign_body)
        return {"X-Service-Name": self.service if service is None else service, "X-Timestamp": ts,
                "X-Signature": f"v1={digest}"}

    def post(self, route: str, body, **overrides):
        path = f"{CREDITS}/{route}"
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        client = self.client if self._given else Client()
        return client.post(path, data=raw, content_type="application/json",
                                headers=self.headers("POST", path, raw, **overrides))

    def get(self, route: str, **overrides):
        path = f"{CREDITS}/{route}"
        client = self.client if self._given else Client()
        return client.get(path, headers=self.headers("GET", path, b"", **overrides))

    def debit(self, amount=1, job="job-1", workspace="ws1", service="summarizer", **extra):
        return self.post("debit", {"workspaceId": workspace, "amount": amount, "jobId": job,
                                   "sourceService": service, **extra})

    def refund(self, job="job-1", workspace="ws1", service="summarizer", reason="job failed", **extra):
        return self.post("refund", {"workspaceId": workspace, "refundForJobId": job, "sourceService": service,
                                    "reason": reason, **extra})

    def balance(self, workspace="ws1"):
        return self.get(f"balance/{workspace}")


def make_wallet(sk_client, workspace="ws1", plan=20, topup=10, plan_amount=1000, topup_slug="credit-pack"):
    """A workspace on a paid plan with ``plan`` credits a billing period, plus one
    bought top-up of ``topup`` credits (both paid with the test card)."""
    if not _product_exists(sk_client, "team"):
        make_product(sk_client, "team", amount=plan_amount, features=[
            {"slug": "credits", "type": "metered", "allowance": plan, "resetInterval": "billing_period"}])
    add_card(sk_client, customer=workspace)
    subscribe(sk_client, "team", customer=workspace)
    if topup:
        if not _product_exists(sk_client, topup_slug):
            body = {"name": "Credits", "slug": topup_slug, "prices": [{"type": "one_off", "amount": 500}],
                    "features": [{"slug": "credits", "type": "metered", "allowance": topup}]}
            assert sk_client.post("/api/v1/pay/products", body, format="json").status_code == 201
        subscribe(sk_client, topup_slug, customer=workspace)


def _product_exists(sk_client, slug) -> bool:
    return sk_client.get(f"/api/v1/pay/products/{slug}").status_code == 200


def credits_balance(workspace="ws1") -> Balance:
    return Balance.objects.get(customer__external_id=workspace, customer__deleted_at__isnull=True,
                               feature__slug="credits", entity__isnull=True)


def bucket_consumed(workspace="ws1") -> dict[str, int]:
    """consumed per bucket kind of the workspace's active credit buckets."""
    out: dict[str, int] = {}
    for bucket in BalanceBucket.objects.filter(balance=credits_balance(workspace), active=True):
        out[bucket.kind] = out.get(bucket.kind, 0) + bucket.consumed
    return out


def assert_balance_invariants(workspace="ws1") -> None:
    """The invariants of billing/services/balances.py hold for the credit balance."""
    balance = credits_balance(workspace)
    buckets = list(BalanceBucket.objects.filter(balance=balance, active=True))
    assert balance.granted == sum(b.granted for b in buckets)
    assert balance.usage == sum(b.consumed for b in buckets) + balance.overage
    assert balance.overage == (0 if balance.unlimited else max(0, balance.usage - balance.granted))
    assert all(0 <= b.consumed <= b.granted for b in buckets)
