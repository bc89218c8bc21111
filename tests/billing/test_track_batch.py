"""POST track/batch: the same outcome as the events sent one by one to track, in one
call. Most tests drive a twin customer with single tracks and compare every row the
two leave behind (balances, buckets, usage events, outbox events) and every answer."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import Balance, BalanceBucket, OutboxEvent, UsageEvent
from billing.services.api_keys import api_key_create
from tests.concurrency import run_concurrently
from tests.conftest import ON_POSTGRES, postgres_only

pytestmark = pytest.mark.django_db

API = "/api/v1/pay"
PLAN = {"name": "Plan", "slug": "plan", "features": [
    {"slug": "tokens", "type": "metered", "allowance": 100, "resetInterval": "month",
     "overageAllowed": True, "overagePrice": 2},
    {"slug": "calls", "type": "metered", "allowanceType": "unlimited"},
]}
OTHER = {"name": "Other", "slug": "other", "features": [{"slug": "exports", "type": "metered", "allowance": 5}]}
TEAM = {"name": "Team", "slug": "team", "features": [
    {"slug": "seats", "type": "seats", "allowance": 3},
    {"slug": "messages", "type": "metered", "allowance": 10, "resetInterval": "month", "perEntity": True},
]}


def post(client, route, body, **headers):
    return client.post(f"{API}/{route}", body, format="json", **headers)


def batch(client, events, **headers):
    return post(client, "track/batch", {"events": events}, **headers)


def setup_customer(client, customer, *, grant=True, entities=()):
    """A customer on the plan (tokens: 100 a month, overage at 2; calls: unlimited)
    with a grant of 30 tokens that expires first, so usage spans two buckets."""
    assert post(client, "subscribe", {"customer": customer, "product": "plan"}).status_code == 200
    if grant:
        soon = (timezone.now() + timedelta(days=5)).isoformat()
        body = {"customer": customer, "feature": "tokens", "grantedBalance": 30, "expiresAt": soon}
        assert post(client, "balances", body).status_code == 201
    if entities:
        assert post(client, "subscribe", {"customer": customer, "product": "team"}).status_code == 200
        for entity in entities:
            body = {"entityId": entity, "featureId": "seats"}
            assert client.post(f"{API}/customers/{customer}/entities", body, format="json").status_code == 201


@pytest.fixture
def client(sk_client):
    for product in (PLAN, OTHER, TEAM):
        assert post(sk_client, "products", product).status_code == 201
    return sk_client


def snapshot(customer):
    """Every row a track leaves behind for ``customer``, without ids and times."""
    balances = sorted(
        (b.feature.slug, b.entity.external_id if b.entity else None, b.granted, b.usage, b.reserved, b.overage,
         b.unlimited, b.included, b.low_notified)
        for b in Balance.objects.filter(customer__external_id=customer).select_related("feature", "entity")
    )
    buckets = sorted(
        (k.balance.feature.slug, k.balance.entity_id is not None, k.kind, k.granted, k.consumed, k.active)
        for k in BalanceBucket.objects.filter(balance__customer__external_id=customer).select_related("balance__feature")
    )
    events = [
        (e.feature.slug, e.entity.external_id if e.entity else None, e.amount, e.idempotency_key, e.properties)
        for e in UsageEvent.objects.filter(customer__external_id=customer).select_related("feature", "entity").order_by("id")
    ]
    outbox = sorted(
        (o.type, sorted((k, v) for k, v in o.data.items() if k != "customerId"))
        for o in OutboxEvent.objects.filter(customer__external_id=customer, type__in=["balance.low", "entitlement.exhausted"])
    )
    return {"balances": balances, "buckets": buckets, "events": events, "outbox": outbox}


def singles(client, customer, events):
    """Send ``events`` to single track for ``customer``; the answers in batch form."""
    out = []
    for event in events:
        response = post(client, "track", {**event, "customer": customer})
        body = response.json()
        if response.status_code == 200:
            out.append({"balance": body["balance"], "usage": body["usage"],
                        "replayed": response.get("Idempotent-Replayed") == "true"})
        else:
            out.append({"error": body["error"]["code"], "status": response.status_code})
    return out


def comparable(results):
    return [{"error": r["error"]["code"]} if "error" in r else
            {"balance": r["balance"], "usage": r["usage"], "replayed": r["replayed"]} for r in results]


def without_status(answers):
    return [{k: v for k, v in a.items() if k != "status"} for a in answers]


POSITIVE = [  # worked example on tokens: grant 30 (expires first) + plan 100; low below 13 (10 % of 130)
    {"feature": "tokens", "amount": 20},                               # grant 20/30          remaining 110
    {"feature": "tokens", "amount": 15, "idempotencyKey": "job-1"},    # grant 30/30, plan 5  remaining 95
    {"feature": "tokens", "amount": 15, "idempotencyKey": "job-1"},    # replay: nothing recorded
    {"feature": "calls", "amount": 7},                                 # unlimited
    {"feature": "tokens", "amount": 70, "properties": {"model": "m"}},  # plan 75             remaining 25
    {"feature": "tokens", "amount": 14},                               # remaining 11: balance.low
    {"feature": "tokens", "amount": 5},                                # remaining 6: no second low
    {"feature": "tokens", "amount": 10, "timestamp": (timezone.now() - timedelta(days=2)).isoformat()},
                                                                       # remaining -4: exhausted, overage 4
    {"feature": "tokens", "amount": 3},                                # overage 7
    {"feature": "calls", "amount": 1},
]


class TestSameAsSingleTracks:
    def test_positive_events_give_the_rows_and_answers_of_single_tracks(self, client):
        setup_customer(client, "a")
        setup_customer(client, "b")
        response = batch(client, [{**e, "customer": "a"} for e in POSITIVE])
        assert response.status_code == 200, response.content
        results = response.json()["results"]
        assert comparable(results) == singles(client, "b", POSITIVE)
        assert snapshot("a") == snapshot("b")
        # the worked example, spelled out
        tokens = Balance.objects.get(customer__external_id="a", feature__slug="tokens")
        assert (tokens.granted, tokens.usage, tokens.overage, tokens.low_notified) == (130, 137, 7, True)
        assert [t for t, _ in snapshot("a")["outbox"]] == ["balance.low", "entitlement.exhausted"]
        assert results[2]["eventId"] == results[1]["eventId"] and results[2]["replayed"] is True
        assert UsageEvent.objects.filter(customer__external_id="a").count() == len(POSITIVE) - 1
        assert len({r["eventId"] for r in results}) == len(POSITIVE) - 1

    def test_give_backs_missing_balances_and_entities_interleaved_with_other_customers(self, client):
        """Customer a's events take the general path (a give-back, a feature it lacks,
        an entity); c's, in the same batch, the set-based one. Both equal their twins."""
        for name in ("a", "b"):
            setup_customer(client, name, entities=("u1", "u2"))
        setup_customer(client, "c")
        setup_customer(client, "d")
        mixed = [
            {"feature": "tokens", "amount": 40},
            {"feature": "tokens", "amount": -10},
            {"feature": "tokens", "amount": -500},                        # clamps at zero usage
            {"feature": "exports", "amount": 2},                          # not included: an empty balance keeps it
            {"feature": "messages", "amount": 4, "entityId": "u1"},       # u1's own balance
            {"feature": "tokens", "amount": 3, "entityId": "u2"},         # no per-entity balance: the customer's
            {"feature": "messages", "amount": 1, "entityId": "ghost"},    # 404 entity
            {"feature": "tokens", "amount": 125, "idempotencyKey": "k"},  # exhausted
            {"feature": "tokens", "amount": 1, "idempotencyKey": "k"},    # replay
        ]
        plain = [{"feature": "tokens", "amount": n} for n in (50, 60, 25)]
        events = []
        for i, e in enumerate(mixed):
            events.append({**e, "customer": "a"})
            if i < len(plain):
                events.append({**plain[i], "customer": "c"})
        results = batch(client, events).json()["results"]
        mine = [r for r, e in zip(results, events) if e["customer"] == "a"]
        theirs = [r for r, e in zip(results, events) if e["customer"] == "c"]
        assert comparable(mine) == without_status(singles(client, "b", mixed))
        assert comparable(theirs) == singles(client, "d", plain)
        assert snapshot("a") == snapshot("b")
        assert snapshot("c") == snapshot("d")
        assert mine[6]["error"]["code"] == "NOT_FOUND" and mine[6]["error"]["details"]["resource"] == "entity"

    def test_a_batch_on_many_customers_is_a_handful_of_statements(self, client):
        for n in range(20):
            setup_customer(client, f"m{n}", grant=False)
        events = [{"customer": f"m{i % 20}", "feature": "tokens", "amount": 1 + i % 3} for i in range(300)]
        with CaptureQueriesContext(connection) as ctx:
            response = batch(client, events)
        assert response.status_code == 200
        assert all("eventId" in r for r in response.json()["results"])
        if ON_POSTGRES:  # set-based: the count does not grow with the events (SQLite takes the general path)
            assert len(ctx.captured_queries) <= 12, [q["sql"][:80] for q in ctx.captured_queries]
        usage = {b.customer.external_id: b.usage for b in Balance.objects.filter(feature__slug="tokens").select_related("customer")}
        assert usage == {f"m{c}": sum(1 + i % 3 for i in range(300) if i % 20 == c) for c in range(20)}
        assert UsageEvent.objects.count() == 300


class TestPerEventErrors:
    def test_bad_events_are_refused_alone_and_the_others_applied(self, client):
        setup_customer(client, "a", grant=False)
        events = [
            {"customer": "a", "feature": "tokens", "amount": 5},
            {"customer": "a", "feature": "no-such-feature", "amount": 1},
            {"customer": "a", "feature": "tokens", "amount": 0},
            {"customer": "nobody", "feature": "tokens", "amount": 1},
            {"customer": "a", "feature": "tokens", "amount": 2.5},
            "not an object",
            {"customer": "a", "feature": "tokens", "amount": 6},
        ]
        response = batch(client, events)
        assert response.status_code == 200
        results = response.json()["results"]
        assert [("error" in r) for r in results] == [False, True, True, True, True, True, False]
        assert results[1]["error"]["code"] == "NOT_FOUND" and results[1]["error"]["details"]["resource"] == "feature"
        assert results[3]["error"]["code"] == "NOT_FOUND" and results[3]["error"]["details"]["resource"] == "customer"
        for i in (2, 4):
            assert results[i]["error"]["code"] == "VALIDATION_ERROR"
            assert [d["field"] for d in results[i]["error"]["details"]] == ["amount"]
        assert results[5]["error"]["code"] == "VALIDATION_ERROR"
        assert (results[0]["usage"], results[6]["usage"], results[6]["balance"]) == (5, 11, 89)
        assert list(UsageEvent.objects.order_by("id").values_list("amount", flat=True)) == [5, 6]


class TestIdempotency:
    def test_a_key_records_once_within_a_batch_across_batches_and_with_single_track(self, client):
        setup_customer(client, "a", grant=False)
        single = post(client, "track", {"customer": "a", "feature": "tokens", "amount": 4, "idempotencyKey": "s"}).json()
        first = batch(client, [
            {"customer": "a", "feature": "tokens", "amount": 5, "idempotencyKey": "k1"},
            {"customer": "a", "feature": "tokens", "amount": 5, "idempotencyKey": "k1"},
            {"customer": "a", "feature": "tokens", "amount": 3, "idempotencyKey": "k2"},
            {"customer": "a", "feature": "tokens", "amount": 4, "idempotencyKey": "s"},
        ]).json()["results"]
        second = batch(client, [
            {"customer": "a", "feature": "tokens", "amount": 5, "idempotencyKey": "k1"},
            {"customer": "a", "feature": "tokens", "amount": 1, "idempotencyKey": "k3"},
        ]).json()["results"]
        assert [r["replayed"] for r in first] == [False, True, False, True]
        assert first[1]["eventId"] == first[0]["eventId"] and first[3]["eventId"] == single["eventId"]
        assert second[0]["eventId"] == first[0]["eventId"] and second[0]["replayed"] is True
        assert second[0]["usage"] == 12  # a replay answers the balance as it stands
        assert sorted(UsageEvent.objects.values_list("idempotency_key", "amount")) == [("k1", 5), ("k2", 3), ("k3", 1), ("s", 4)]
        assert Balance.objects.get(customer__external_id="a", feature__slug="tokens").usage == 13
        again = post(client, "track", {"customer": "a", "feature": "tokens", "amount": 5, "idempotencyKey": "k1"})
        assert again.json()["eventId"] == first[0]["eventId"] and again["Idempotent-Replayed"] == "true"

    def test_the_idempotency_key_header_replays_the_whole_call(self, client):
        setup_customer(client, "a", grant=False)
        events = [{"customer": "a", "feature": "tokens", "amount": 2}, {"customer": "a", "feature": "calls"}]
        first = batch(client, events, HTTP_IDEMPOTENCY_KEY="batch-1")
        again = batch(client, events, HTTP_IDEMPOTENCY_KEY="batch-1")
        assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        assert UsageEvent.objects.count() == 2
        other = batch(client, events[:1], HTTP_IDEMPOTENCY_KEY="batch-1")
        assert other.status_code == 422 and other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
        assert UsageEvent.objects.count() == 2


class TestEnvelope:
    @pytest.mark.parametrize("body", [
        {}, {"events": {}}, {"events": "x"}, {"events": None}, {"events": []},
        {"events": [{"customer": "a", "feature": "tokens"}] * 1001}, [],
    ])
    def test_a_malformed_envelope_is_422_for_the_whole_call_and_changes_nothing(self, client, body):
        setup_customer(client, "a", grant=False)
        response = post(client, "track/batch", body)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and [d["field"] for d in error["details"]] == ["events"]
        assert not UsageEvent.objects.exists()

    def test_1000_events_are_accepted(self, client):
        setup_customer(client, "a", grant=False)
        response = batch(client, [{"customer": "a", "feature": "calls"}] * 1000)
        assert response.status_code == 200 and len(response.json()["results"]) == 1000
        assert Balance.objects.get(customer__external_id="a", feature__slug="calls").usage == 1000

    def test_a_publishable_key_is_refused(self, client, pk_client):
        setup_customer(client, "a", grant=False)
        response = batch(pk_client, [{"customer": "a", "feature": "tokens"}])
        assert response.status_code == 403 and not UsageEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    pytestmark = postgres_only

    def test_batches_single_tracks_and_checks_on_one_balance_count_everything_once(self):
        """One balance of 200 tokens, no overage. 4 batches of 25 tracks of 1 (two of
        them repeat each other's keys), 8 single tracks of 1, and 40 checks with
        sendEvent of 5, all at once. track records past the balance (the work was
        done), so the invariants are exact accounting: every recorded unit once,
        one usage event per success, buckets and overage consistent, and checks
        never spending what was not there."""
        _, raw = api_key_create(name="race", type="secret", now=timezone.now())
        from rest_framework.test import APIClient

        def client_for():
            c = APIClient()
            c.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
            return c

        setup = client_for()
        product = {"name": "Lim", "slug": "lim", "features": [
            {"slug": "tokens", "type": "metered", "allowance": 200, "resetInterval": "month"}]}
        assert post(setup, "products", product).status_code == 201
        assert post(setup, "subscribe", {"customer": "hot", "product": "lim"}).status_code == 200

        def work(i):
            c = client_for()
            if i < 4:
                keys = [f"b{i % 2}-{n}" for n in range(25)]  # batches 0 and 2 share keys, as do 1 and 3
                events = [{"customer": "hot", "feature": "tokens", "idempotencyKey": k} for k in keys]
                response = batch(c, events)
                assert response.status_code == 200, response.content
                return ("batch", response.json()["results"])
            if i < 12:
                response = post(c, "track", {"customer": "hot", "feature": "tokens"})
                assert response.status_code == 200, response.content
                return ("track", response.json()["eventId"])
            response = post(c, "check", {"customer": "hot", "feature": "tokens", "requiredBalance": 5, "sendEvent": True})
            assert response.status_code == 200, response.content
            return ("check", response.json()["allowed"])

        outcomes = run_concurrently(52, work)
        batch_results = [r for kind, rs in outcomes if kind == "batch" for r in rs]
        assert all("eventId" in r for r in batch_results)
        recorded_by_batches = {r["eventId"] for r in batch_results}
        assert len(recorded_by_batches) == 50  # 100 events, 50 distinct keys
        assert sum(not r["replayed"] for r in batch_results) == 50
        tracks = [v for kind, v in outcomes if kind == "track"]
        allowed = sum(1 for kind, v in outcomes if kind == "check" and v)
        refused = sum(1 for kind, v in outcomes if kind == "check" and not v)

        balance = Balance.objects.get(customer__external_id="hot", feature__slug="tokens")
        assert balance.usage == 50 + len(tracks) + 5 * allowed
        assert UsageEvent.objects.count() == 50 + len(tracks) + allowed
        assert sum(UsageEvent.objects.values_list("amount", flat=True)) == balance.usage
        assert {f"uev_{pk}" for pk in UsageEvent.objects.filter(idempotency_key__isnull=False).values_list("pk", flat=True)} == recorded_by_batches
        assert 5 * allowed <= balance.granted  # checks never spent what was not there
        if refused:
            assert balance.remaining < 5  # a refusal was right: less than 5 left, and it only went down
        consumed = sum(balance.buckets.values_list("consumed", flat=True))
        assert consumed == min(balance.usage, balance.granted)
        assert balance.overage == max(0, balance.usage - balance.granted)
        assert OutboxEvent.objects.filter(type="entitlement.exhausted").count() == (1 if balance.remaining <= 0 else 0)


class TestSchema:
    def test_the_openapi_schema_describes_the_route(self, client):
        response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
        operation = response.json()["paths"]["/api/v1/pay/track/batch"]["post"]
        assert operation["operationId"] == "trackBatch"
