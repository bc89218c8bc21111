import pytest

from tests.credits.credits_helpers import SignedClient, new_secret


@pytest.fixture
def secret(settings):
    """A fresh secret per test (a replayed signature of another test can never match)."""
    value = new_secret()
    settings.SVC_HMAC_SECRETS = [value]
    return value


@pytest.fixture
def svc(secret):
    return SignedClient(secret)
