"""Schemathesis against our own OpenAPI schema (drf-spectacular's, served at /api/schema/):
every route gets generated requests, valid and invalid, with a secret key, through the
WSGI app in-process. No answer is a 5xx, every answer keeps to the schema (documented
status, content type, body and headers), and an unauthenticated call is refused."""

import secrets

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks

from billing.models import ApiKey
from billing.services.api_keys import api_key_create, api_key_hash
from config.wsgi import application
from tests.db_snapshot import row_counts

pytestmark = pytest.mark.django_db

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)

# Fixed seed (derandomize) so CI sees the same requests each run; `make fuzz` style
# deeper runs can raise max_examples with FUZZ_EXAMPLES.
FUZZ = settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

# What "zero schema violations" means here. Left out: positive_data_acceptance and
# negative_data_rejection, which ask that the schema state every validation rule
# (slug patterns, cross-field rules) — ours are stated in API.md and enforced with 422.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.ignored_auth,
]

# Schemathesis asks for the key while it collects (before any fixture), so the raw
# value is fixed here and the fixture stores its hash.
RAW_KEY = "cp_sk_" + secrets.token_urlsafe(32)


@schema.auth()
class SecretKeyAuth:
    def get(self, case, context):
        return RAW_KEY

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture
def secret_key(db, settings):
    """A live secret key, and the WSGI handler kept from closing the test's connection
    after each request (Django's own test client disconnects it the same way)."""
    # Schemathesis sends a bad key to every route from one address: past the per-address limit on
    # failed authentications those would be 429, not the 401 its check expects (tests/billing/test_authlimit.py).
    settings.AUTH_FAILURE_LIMIT_PER_MINUTE = 0
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    key, _ = api_key_create(name="schemathesis", type="secret", now=timezone.now())
    ApiKey.objects.filter(pk=key.pk).update(key_hash=api_key_hash(RAW_KEY))
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


# One pytest item per operation, with the operation in its id (schemathesis's own
# parametrize gives every item the same node id, and xdist's loadgroup scheduling,
# which `make test` uses, then runs only one of them).
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method.upper()} {op.path}")
def test_every_route_answers_within_its_schema(operation, secret_key):
    strategy = st.one_of(*(operation.as_strategy(mode, auth_storage=schema.auth) for mode in schemathesis.GenerationMode))

    @FUZZ
    @given(case=strategy)
    def answers_within_schema(case):
        before = row_counts()
        response = case.call_and_validate(checks=CHECKS)
        if response.status_code >= 400:
            assert row_counts() == before, f"{case.method} {case.formatted_path} answered {response.status_code} but changed rows"

    answers_within_schema()


def test_every_route_is_fuzzed():
    """The schema lists every route of both APIs (a route missing from it would go unfuzzed)."""
    paths = {op.path for op in OPERATIONS}
    assert {"/api/v1/pay/check", "/api/v1/pay/track", "/api/v1/pay/track/batch", "/api/v1/pay/webhooks",
            "/api/v1/pay/analytics", "/api/v1/pay/referral-codes/redeem", "/api/v1/credits/debit"} <= paths
    assert len(OPERATIONS) >= 60
