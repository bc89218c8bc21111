"""Debits do not depend on Redis (found by the fault tests, tests/faults): with Redis
unreachable the replay guard remembers signatures in the database, so a debit is
still made once and a replayed signature still refused."""

import json
import socket

import pytest

from credits import services
from credits.models import CreditEntry, SeenSignature
from tests.credits.credits_helpers import CREDITS, make_wallet

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_away(settings):
    """Redis configured, on a port where nothing listens (a real refused connection)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    settings.REDIS_URL = url
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    services._redis_down_until = 0.0
    yield
    services._redis_down_until = 0.0


class TestRedisAway:
    def test_a_debit_is_made_and_its_replay_refused(self, sk_client, svc, redis_away, caplog):
        make_wallet(sk_client, topup=0)
        raw = json.dumps({"workspaceId": "ws1", "amount": 3, "jobId": "job-r", "sourceService": "summarizer"}).encode()
        path = f"{CREDITS}/debit"
        headers = svc.headers("POST", path, raw)
        first = svc.client.post(path, data=raw, content_type="application/json", headers=headers)
        assert first.status_code == 201, first.content
        assert "Redis unavailable" in caplog.text
        assert SeenSignature.objects.count() == 1  # remembered in the database instead

        replay = svc.client.post(path, data=raw, content_type="application/json", headers=headers)
        assert replay.status_code == 401
        assert "Replayed" in replay.json()["error"]["message"]
        assert CreditEntry.objects.filter(kind="debit").count() == 1
        assert svc.balance().json()["total"] == 20 - 3

    def test_redis_is_tried_again_after_the_pause(self, sk_client, svc, redis_away, caplog):
        make_wallet(sk_client, topup=0)
        assert svc.debit(amount=1, job="a").status_code == 201
        assert services._redis_down_until > 0
        services._redis_down_until = 0.0  # the pause is over
        caplog.clear()
        assert svc.debit(amount=1, job="b").status_code == 201
        assert "Redis unavailable" in caplog.text  # it was tried (and is still away)
