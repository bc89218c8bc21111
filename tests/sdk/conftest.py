"""The SDK is its own package (sdk/python, installable with pip); the suite imports it
from the checkout, so `make test` needs no install step."""

import sys
from pathlib import Path

import pytest
from django.utils import timezone

SDK_SRC = Path(__file__).resolve().parents[2] / "sdk" / "python" / "src"
if str(SDK_SRC) not in sys.path:
    sys.path.insert(0, str(SDK_SRC))


@pytest.fixture
def secret_key(transactional_db):
    from billing.services.api_keys import api_key_create

    return api_key_create(name="sdk", type="secret", now=timezone.now())[1]


@pytest.fixture
def billing(live_server, secret_key):
    from cynco_billing import BillingClient

    return BillingClient(live_server.url, api_key=secret_key)
