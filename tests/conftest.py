import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from billing.services.api_keys import api_key_create

ON_POSTGRES = connection.vendor == "postgresql"

postgres_only = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not ON_POSTGRES,
        reason="needs PostgreSQL (row locks and real concurrency); run with DATABASE_URL=postgres://… as CI does",
    ),
]


@pytest.fixture
def anon_client():
    return APIClient()


def _client_for(key_type: str):
    _, raw = api_key_create(name=f"test {key_type}", type=key_type, now=timezone.now())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.raw_key = raw
    return client


@pytest.fixture
def sk_client(db):
    """A client holding a fresh secret key (``.raw_key`` has it)."""
    return _client_for("secret")


@pytest.fixture
def pk_client(db):
    """A client holding a fresh publishable key."""
    return _client_for("publishable")


@pytest.fixture(autouse=True)
def no_auth_failure_limit_by_default(settings):
    """Every test client calls from 127.0.0.1, and the suite makes far more than 60 refused
    calls a minute across its workers: without this they would share one failure bucket
    and see stray 429s. tests/billing/test_authlimit.py and tests/credits/test_authlimit.py turn the
    limit back on."""
    settings.AUTH_FAILURE_LIMIT_PER_MINUTE = 0
