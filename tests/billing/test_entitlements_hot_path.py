"""On PostgreSQL the hot path deducts in one round trip; the cases where it hands over
to the general path, and a race it must win. Assertions are on the rows written."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.locks import lock_balance
from billing.models import Balance, BalanceBucket, OutboxEvent, UsageEvent
from billing.services.api_keys import api_key_create
from billing.services.balances import bucket_add
from tests.billing.billing_helpers import client_for
from tests.conftest import postgres_only

API = "/api/v1/pay"
FAST = "billing_hot_deduct"  # the name of the one-round-trip statement (prepared once per session)


@pytest.fixture
def raw_key(transactional_db):
    _, raw = api_key_create(name="hot", type="secret", now=timezone.now())
    client = client_for(raw)
    body = {"name": "Plan", "slug": "plan", "features": [
        {"slug": "tokens", "type": "metered", "allowance": 100, "resetInterval": "month"},
        {"slug": "calls", "type": "metered", "allowanceType": "unlimited"},
    ]}
    assert client.post(f"{API}/products", body, format="json").status_code == 201
    assert client.post(f"{API}/subscribe", {"customer": "c1", "product": "plan"}, format="json").status_code == 200
    return raw


def post(raw, route, **body):
    body.setdefault("customer", "c1")
    body.setdefault("feature", "tokens")
    with CaptureQueriesContext(connection) as ctx:
        response = client_for(raw).post(f"{API}/{route}", body, format="json")
    # What the request sent, less the once-per-session PREPAREs.
    return response, [q["sql"] for q in ctx.captured_queries if not q["sql"].startswith("PREPARE")]


def tokens():
    return Balance.objects.get(feature__slug="tokens", entity__isnull=True)


def consumed():
    return {(b.kind, b.granted): b.consumed for b in BalanceBucket.objects.filter(balance__feature__slug="tokens")}


def invariants_hold(balance):
    buckets = list(balance.buckets.filter(active=True))
    assert balance.granted == sum(b.granted for b in buckets)
    assert balance.usage == sum(b.consumed for b in balance.buckets.all()) + balance.overage
    assert balance.overage == max(0, balance.usage - balance.granted)


class TestOneRoundTrip:
    pytestmark = postgres_only

    def test_a_send_event_that_fits_is_one_statement_after_the_key(self, raw_key):
        response, sql = post(raw_key, "check", requiredBalance=5, sendEvent=True)
        body = response.json()
        assert (body["allowed"], body["balance"], body["usage"]) == (True, 95, 5)
        assert len(sql) == 2 and FAST in sql[1], sql  # the key lookup, then one statement: no BEGIN/COMMIT
        assert (tokens().usage, consumed()) == (5, {("plan", 100): 5})
        event = UsageEvent.objects.get()
        assert (event.amount, event.customer.external_id, event.feature.slug) == (5, "c1", "tokens")
        assert event.entity_id is None
        invariants_hold(tokens())

    def test_a_track_that_fits_is_one_statement_and_keeps_properties_and_key(self, raw_key):
        response, sql = post(raw_key, "track", amount=3, properties={"model": "m"}, idempotencyKey="job-1")
        assert response.json()["eventId"] == f"uev_{UsageEvent.objects.get().pk}"
        assert len(sql) == 2 and FAST in sql[1], sql
        event = UsageEvent.objects.get()
        assert (event.amount, event.properties, event.idempotency_key) == (3, {"model": "m"}, "job-1")
        assert (tokens().usage, consumed()) == (3, {("plan", 100): 3})

    def test_an_unlimited_balance_counts_usage_and_touches_no_bucket(self, raw_key):
        response, sql = post(raw_key, "check", feature="calls", requiredBalance=7, sendEvent=True)
        assert response.json()["allowed"] is True and response.json()["unlimited"] is True
        assert len(sql) == 2 and FAST in sql[1], sql
        calls = Balance.objects.get(feature__slug="calls")
        assert calls.usage == 7 and [b.consumed for b in calls.buckets.all()] == [0]
        assert UsageEvent.objects.get().amount == 7

    def test_units_spanning_two_buckets_roll_the_statement_back_and_go_the_general_way(self, raw_key):
        soon = (timezone.now() + timedelta(days=1)).isoformat()
        grant = {"customer": "c1", "feature": "tokens", "grantedBalance": 5, "expiresAt": soon}
        assert client_for(raw_key).post(f"{API}/balances", grant, format="json").status_code == 201
        response, sql = post(raw_key, "check", requiredBalance=8, sendEvent=True)
        assert response.json()["balance"] == 97
        assert FAST in sql[1] and len(sql) > 2, sql  # tried, then the general path
        # 8 = the grant's 5 (it expires first) + 3 of the plan; one event, not two
        assert consumed() == {("grant", 5): 5, ("plan", 100): 3}
        assert tokens().usage == 8 and list(UsageEvent.objects.values_list("amount", flat=True)) == [8]
        invariants_hold(tokens())

    def test_a_repeated_idempotency_key_rolls_the_statement_back_and_replays(self, raw_key):
        first, _ = post(raw_key, "track", amount=7, idempotencyKey="job-1")
        second, sql = post(raw_key, "track", amount=7, idempotencyKey="job-1")
        assert FAST in sql[1]
        assert second["Idempotent-Replayed"] == "true" and second.json()["eventId"] == first.json()["eventId"]
        assert (tokens().usage, consumed(), UsageEvent.objects.count()) == (7, {("plan", 100): 7}, 1)

    def test_crossings_go_the_general_way_and_their_events_are_written_once(self, raw_key):
        def general(sql):
            return FAST in sql[1] and any(q.lstrip().startswith("UPDATE billing_balance") for q in sql[2:])

        post(raw_key, "check", requiredBalance=85, sendEvent=True)  # 15 left
        response, sql = post(raw_key, "check", requiredBalance=6, sendEvent=True)  # 9 left: below 10, balance.low
        assert response.json()["balance"] == 9 and general(sql), sql
        response, sql = post(raw_key, "track", amount=8)  # 1 left: low already reported, one statement
        assert response.json()["balance"] == 1 and len(sql) == 2 and FAST in sql[1], sql
        response, sql = post(raw_key, "check", sendEvent=True)  # 0 left: entitlement.exhausted
        assert response.json()["balance"] == 0 and general(sql), sql
        assert sorted(OutboxEvent.objects.exclude(type="customer.created").values_list("type", flat=True)) == [
            "balance.low", "entitlement.exhausted"]
        assert (tokens().usage, consumed(), UsageEvent.objects.count()) == (100, {("plan", 100): 100}, 4)
        invariants_hold(tokens())

    def test_a_refusal_is_read_from_the_row_without_a_lock_and_writes_nothing(self, raw_key):
        post(raw_key, "check", requiredBalance=100, sendEvent=True)
        before = (tokens().usage, tokens().updated_at, UsageEvent.objects.count())
        response, sql = post(raw_key, "check", requiredBalance=1, sendEvent=True)
        body = response.json()
        assert (body["allowed"], body["code"], body["balance"]) == (False, "insufficient_balance", 0)
        assert len(sql) == 2 and FAST in sql[1], sql
        assert (tokens().usage, tokens().updated_at, UsageEvent.objects.count()) == before

    def test_an_unknown_customer_is_404_and_a_feature_not_included_is_refused(self, raw_key):
        assert post(raw_key, "check", customer="nobody", sendEvent=True)[0].status_code == 404
        assert post(raw_key, "track", customer="nobody")[0].status_code == 404
        body = post(raw_key, "check", feature="nothing", sendEvent=True)[0].json()
        assert (body["allowed"], body["code"]) == (False, "feature_not_included")
        assert not UsageEvent.objects.exists()

    def test_a_bucket_added_while_the_deduction_waits_for_the_row_lock_is_filled_first(self, raw_key):
        """The statement's first snapshot is older than the new bucket; the bucket is
        chosen by the second statement, whose snapshot is taken under the row lock."""
        holding, release = threading.Event(), threading.Event()
        outcome = {}

        def add_a_grant_and_hold_the_lock():
            try:
                with transaction.atomic():
                    balance = lock_balance(pk=tokens().pk)
                    now = timezone.now()
                    bucket_add(balance=balance, kind="grant", granted=10, expires_at=now + timedelta(days=1), now=now)
                    holding.set()
                    assert release.wait(timeout=60)
            finally:
                connection.close()

        def deduct():
            try:
                outcome["body"] = client_for(raw_key).post(
                    f"{API}/check", {"customer": "c1", "feature": "tokens", "requiredBalance": 4, "sendEvent": True},
                    format="json").json()
            finally:
                connection.close()

        holder = threading.Thread(target=add_a_grant_and_hold_the_lock)
        holder.start()
        assert holding.wait(timeout=60)
        deducter = threading.Thread(target=deduct)
        deducter.start()
        try:
            for _ in range(600):  # until the deduction waits for the row lock (at most a minute)
                with connection.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                   " AND wait_event_type = 'Lock' AND query LIKE %s", [f"%{FAST}%"])
                    if cursor.fetchone()[0]:
                        break
                time.sleep(0.1)
            else:
                pytest.fail("the deduction never waited for the balance row lock")
        finally:
            release.set()
            holder.join(timeout=60)
            deducter.join(timeout=60)
        assert outcome["body"]["allowed"] is True and outcome["body"]["granted"] == 110
        assert consumed() == {("grant", 10): 4, ("plan", 100): 0}
        invariants_hold(tokens())
