"""check / track / locks / balances / entities / spend caps, through the HTTP layer."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import Balance, BalanceBucket, BalanceLock, OutboxEvent, UsageEvent

pytestmark = pytest.mark.django_db

API = "/api/v1/pay"


def make_product(client, slug="plan", features=None, **extra):
    body = {"name": slug.title(), "slug": slug, "features": features or [
        {"slug": "tokens", "type": "metered", "allowance": 100, "resetInterval": "month"},
        {"slug": "sso", "type": "boolean"},
    ], **extra}
    response = client.post(f"{API}/products", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def subscribe(client, customer="c1", product="plan"):
    response = client.post(f"{API}/subscribe", {"customer": customer, "product": product}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def check(client, **body):
    body.setdefault("customer", "c1")
    body.setdefault("feature", "tokens")
    return client.post(f"{API}/check", body, format="json")


def track(client, **body):
    body.setdefault("customer", "c1")
    body.setdefault("feature", "tokens")
    return client.post(f"{API}/track", body, format="json")


def balance_of(client, customer="c1", feature="tokens"):
    return client.get(f"{API}/customers/{customer}").json()["balances"][feature]


def token_buckets():
    return BalanceBucket.objects.filter(balance__feature__slug="tokens")


@pytest.fixture
def plan(sk_client):
    make_product(sk_client)
    subscribe(sk_client)
    return sk_client


class TestAttachAndCustomer:
    def test_subscribing_to_a_free_product_grants_its_balances_and_flags(self, plan):
        body = plan.get(f"{API}/customers/c1").json()
        assert body["flags"] == {"sso": True}
        tokens = body["balances"]["tokens"]
        assert (tokens["granted"], tokens["usage"], tokens["remaining"], tokens["unlimited"]) == (100, 0, 100, False)
        assert tokens["nextResetAt"] is not None
        assert [s["product"] for s in body["subscriptions"]] == ["plan"]

    def test_subscribing_twice_is_409(self, plan):
        response = plan.post(f"{API}/subscribe", {"customer": "c1", "product": "plan"}, format="json")
        assert response.status_code == 409

    def test_auto_enable_products_attach_when_a_customer_is_created(self, sk_client):
        make_product(sk_client, "free", autoEnable=True)
        sk_client.post(f"{API}/customers", {"customerId": "new"}, format="json")
        assert balance_of(sk_client, "new")["granted"] == 100

    def test_a_one_off_free_product_grants_top_up_credits_and_no_subscription(self, sk_client):
        make_product(sk_client, "gift", prices=[{"type": "one_off", "amount": 0}],
                     features=[{"slug": "tokens", "type": "metered", "allowance": 50}])
        body = subscribe(sk_client, product="gift")
        assert body["subscription"] is None
        assert balance_of(sk_client)["granted"] == 50
        assert BalanceBucket.objects.get().kind == "topup"


class TestCheck:
    def test_read_only_check_says_yes_and_changes_nothing(self, plan):
        body = check(plan, requiredBalance=100).json()
        assert (body["allowed"], body["code"], body["balance"], body["granted"], body["usage"]) == (True, "ok", 100, 100, 0)
        assert not check(plan, requiredBalance=101).json()["allowed"]
        assert check(plan, requiredBalance=101).json()["code"] == "insufficient_balance"
        assert balance_of(plan)["usage"] == 0 and not UsageEvent.objects.exists()

    def test_a_boolean_feature_is_allowed_when_included(self, plan):
        assert check(plan, feature="sso").json()["allowed"] is True

    def test_a_feature_not_included_says_so(self, plan):
        make_product(plan, "other", features=[{"slug": "exports", "type": "boolean"}])
        body = check(plan, feature="exports").json()
        assert (body["allowed"], body["code"]) == (False, "feature_not_included")
        assert check(plan, feature="no-such-feature").json()["code"] == "feature_not_included"

    def test_an_unknown_customer_is_404(self, plan):
        assert check(plan, customer="nobody").status_code == 404

    def test_send_event_deducts_atomically_and_refuses_past_the_balance(self, plan):
        body = check(plan, requiredBalance=60, sendEvent=True).json()
        assert (body["allowed"], body["balance"], body["usage"]) == (True, 40, 60)
        refused = check(plan, requiredBalance=41, sendEvent=True).json()
        assert (refused["allowed"], refused["code"], refused["balance"]) == (False, "insufficient_balance", 40)
        assert list(UsageEvent.objects.values_list("amount", flat=True)) == [60]

    def test_a_publishable_key_may_check_but_not_deduct(self, plan, pk_client):
        assert check(pk_client).json()["allowed"] is True
        response = check(pk_client, sendEvent=True)
        assert response.status_code == 403
        assert balance_of(plan)["usage"] == 0

    @pytest.mark.parametrize("body, field", [
        ({"requiredBalance": 0}, "requiredBalance"), ({"requiredBalance": 1.5}, "requiredBalance"),
        ({"requiredBalance": "3"}, "requiredBalance"), ({"sendEvent": "yes"}, "sendEvent"),
        ({"feature": "Not a slug"}, "feature"), ({"lock": {"enabled": True, "expiresAt": "soon"}}, "lock.expiresAt"),
    ])
    def test_bad_input_is_422_and_changes_nothing(self, plan, body, field):
        response = check(plan, **body)
        assert response.status_code == 422
        assert field in [d["field"] for d in response.json()["error"]["details"]]
        assert balance_of(plan)["usage"] == 0


class TestOverageAndSpendCaps:
    @pytest.fixture
    def metered(self, sk_client):
        make_product(sk_client, "payg", features=[{"slug": "tokens", "type": "metered", "allowance": 10,
                                                   "resetInterval": "month", "overageAllowed": True, "overagePrice": 5}])
        subscribe(sk_client, product="payg")
        return sk_client

    def test_overage_keeps_the_feature_allowed_and_is_recorded(self, metered):
        body = check(metered, requiredBalance=15, sendEvent=True).json()
        assert (body["allowed"], body["usage"], body["balance"]) == (True, 15, -5)
        assert Balance.objects.get().overage == 5
        cap = metered.get(f"{API}/spend-caps", {"customer": "c1", "feature": "tokens"}).json()
        assert cap == {"cap": None, "spent": 25, "remaining": None, "currency": "usd"}

    def test_a_spend_cap_stops_overage(self, metered):
        response = metered.put(f"{API}/spend-caps", {"customer": "c1", "feature": "tokens", "cap": 20}, format="json")
        assert response.status_code == 200 and response.json()["cap"] == 20
        assert check(metered, requiredBalance=14, sendEvent=True).json()["allowed"]  # 4 over × 5 = 20 ≤ 20
        refused = check(metered, requiredBalance=1, sendEvent=True).json()
        assert (refused["allowed"], refused["code"]) == (False, "spend_cap_reached")
        assert balance_of(metered)["usage"] == 14

    def test_a_product_default_cap_applies_until_the_customer_sets_one(self, metered):
        assert metered.put(f"{API}/products/payg/spend-cap", {"feature": "tokens", "cap": 5}, format="json").status_code == 200
        assert check(metered, requiredBalance=12, sendEvent=True).json()["code"] == "spend_cap_reached"  # 2 × 5 = 10 > 5
        metered.put(f"{API}/spend-caps", {"customer": "c1", "feature": "tokens", "cap": 100}, format="json")
        assert check(metered, requiredBalance=12, sendEvent=True).json()["allowed"]
        metered.put(f"{API}/spend-caps", {"customer": "c1", "feature": "tokens", "cap": None}, format="json")
        assert metered.get(f"{API}/spend-caps", {"customer": "c1", "feature": "tokens"}).json()["cap"] == 5


class TestTrack:
    def test_usage_past_the_balance_is_recorded_in_full(self, plan):
        body = track(plan, amount=130).json()
        assert (body["balance"], body["usage"]) == (-30, 130)
        assert body["eventId"].startswith("uev_")
        assert Balance.objects.get(feature__slug="tokens").overage == 30

    def test_negative_amounts_give_units_back_never_below_zero_usage(self, plan):
        track(plan, amount=10)
        assert track(plan, amount=-4).json()["usage"] == 6
        assert track(plan, amount=-50).json()["usage"] == 0
        assert list(UsageEvent.objects.order_by("id").values_list("amount", flat=True)) == [10, -4, -6]

    def test_a_repeated_idempotency_key_is_recorded_once(self, plan):
        first = track(plan, amount=7, idempotencyKey="job-1")
        second = track(plan, amount=7, idempotencyKey="job-1")
        assert first.json()["eventId"] == second.json()["eventId"]
        assert second["Idempotent-Replayed"] == "true"
        assert balance_of(plan)["usage"] == 7 and UsageEvent.objects.count() == 1

    def test_properties_and_timestamp_are_stored(self, plan):
        at = timezone.now() - timedelta(days=2)
        track(plan, amount=3, properties={"model": "gpt"}, timestamp=at.isoformat())
        event = UsageEvent.objects.get()
        assert event.properties == {"model": "gpt"} and abs((event.timestamp - at).total_seconds()) < 1

    @pytest.mark.parametrize("body, field", [
        ({"amount": 0}, "amount"), ({"amount": 2.5}, "amount"), ({"amount": 2**63}, "amount"),
        ({"timestamp": "1999-01-01T00:00:00Z"}, "timestamp"), ({"timestamp": "2999-01-01T00:00:00Z"}, "timestamp"),
        ({"properties": [1]}, "properties"),
    ])
    def test_bad_input_is_422_and_records_nothing(self, plan, body, field):
        response = track(plan, **body)
        assert response.status_code == 422
        assert field in [d["field"] for d in response.json()["error"]["details"]]
        assert not UsageEvent.objects.exists()

    def test_tracking_a_feature_the_customer_lacks_keeps_the_usage(self, plan):
        make_product(plan, "other", features=[{"slug": "exports", "type": "metered", "allowance": 1}])
        body = track(plan, feature="exports", amount=2).json()
        assert body["usage"] == 2
        assert check(plan, feature="exports").json()["code"] == "feature_not_included"

    def test_an_unknown_feature_is_404(self, plan):
        assert track(plan, feature="nope").status_code == 404


class TestBucketOrder:
    """Worked example. Buckets of c1's tokens:
        plan  100, resets at the end of the month   (~30 days)
        grant  50, expires in 10 days                -> soonest: spent first
        grant  40, expires in 20 days                -> second
        topup  comes last (none here: grants and plan only, then a top-up)
    """

    def test_usage_fills_the_bucket_that_ends_soonest_first(self, plan):
        soon = (timezone.now() + timedelta(days=10)).isoformat()
        later = (timezone.now() + timedelta(days=20)).isoformat()
        plan.post(f"{API}/balances", {"customer": "c1", "feature": "tokens", "grantedBalance": 40, "expiresAt": later}, format="json")
        plan.post(f"{API}/balances", {"customer": "c1", "feature": "tokens", "grantedBalance": 50, "expiresAt": soon}, format="json")
        assert balance_of(plan)["granted"] == 190
        track(plan, amount=70)
        # 70 = 50 (grant expiring in 10 days, full) + 20 (grant expiring in 20 days)
        consumed = {(b.kind, b.granted): b.consumed for b in token_buckets()}
        assert consumed == {("grant", 50): 50, ("grant", 40): 20, ("plan", 100): 0}
        track(plan, amount=100)
        # 100 = 20 (rest of the 40-grant) + 80 of the plan's 100
        consumed = {(b.kind, b.granted): b.consumed for b in token_buckets()}
        assert consumed == {("grant", 50): 50, ("grant", 40): 40, ("plan", 100): 80}
        track(plan, amount=-30)
        # give-back runs in reverse: the plan (last filled) gets its 30 back first
        consumed = {(b.kind, b.granted): b.consumed for b in token_buckets()}
        assert consumed == {("grant", 50): 50, ("grant", 40): 40, ("plan", 100): 50}

    def test_top_ups_are_spent_last(self, sk_client):
        make_product(sk_client, "plan", features=[{"slug": "tokens", "type": "metered", "allowance": 10, "resetInterval": "month"}])
        make_product(sk_client, "pack", prices=[{"type": "one_off", "amount": 0}], features=[{"slug": "tokens", "type": "metered", "allowance": 100}])
        subscribe(sk_client, product="pack")
        subscribe(sk_client, product="plan")
        track(sk_client, amount=15)
        # the plan's 10 first (it resets), then 5 of the top-up
        assert {b.kind: b.consumed for b in BalanceBucket.objects.all()} == {"plan": 10, "topup": 5}


class TestLocks:
    def lock(self, client, n, seconds=60):
        expires = int((timezone.now() + timedelta(seconds=seconds)).timestamp() * 1000)
        return check(client, requiredBalance=n, lock={"enabled": True, "expiresAt": expires}).json()

    def finalize(self, client, lock_id, action="confirm", **extra):
        return client.post(f"{API}/locks/finalize", {"lockId": lock_id, "action": action, **extra}, format="json")

    def test_a_lock_reserves_units_that_others_cannot_use(self, plan):
        body = self.lock(plan, 70)
        assert body["allowed"] and body["lockId"].startswith("plck_") and body["balance"] == 30
        assert not check(plan, requiredBalance=31, sendEvent=True).json()["allowed"]
        assert not self.lock(plan, 31)["allowed"]

    def test_confirm_with_a_smaller_value_gives_the_rest_back(self, plan):
        lock_id = self.lock(plan, 70)["lockId"]
        body = self.finalize(plan, lock_id, overrideValue=25).json()
        assert (body["status"], body["consumed"], body["released"], body["balance"], body["overdraft"]) == ("consumed", 25, 45, 75, False)

    def test_confirm_defaults_to_the_reserved_amount(self, plan):
        body = self.finalize(plan, self.lock(plan, 70)["lockId"]).json()
        assert (body["consumed"], body["released"], body["balance"]) == (70, 0, 30)

    def test_confirm_above_the_reservation_records_all_and_reports_the_overdraft(self, plan):
        lock_id = self.lock(plan, 70)["lockId"]
        track(plan, amount=20)
        body = self.finalize(plan, lock_id, overrideValue=95).json()
        # granted 100, usage 20 + 95 = 115: 15 overdrawn, nothing dropped
        assert (body["consumed"], body["balance"], body["overdraft"]) == (95, -15, True)
        assert balance_of(plan)["usage"] == 115

    def test_release_gives_everything_back_and_a_second_finalize_is_409(self, plan):
        lock_id = self.lock(plan, 70)["lockId"]
        assert self.finalize(plan, lock_id, "release").json()["balance"] == 100
        again = self.finalize(plan, lock_id, "confirm")
        assert again.status_code == 409 and again.json()["error"]["details"]["status"] == "released"

    def test_an_unknown_lock_is_404(self, plan):
        assert self.finalize(plan, "plck_nope").status_code == 404

    def test_an_expired_lock_cannot_be_confirmed_and_the_job_releases_it(self, plan):
        lock_id = self.lock(plan, 70)["lockId"]
        BalanceLock.objects.filter(pk=lock_id).update(expires_at=timezone.now() - timedelta(seconds=1))
        assert self.finalize(plan, lock_id).status_code == 409
        call_command("run_billing_cycle", stdout=open("/dev/null", "w"))
        assert BalanceLock.objects.get(pk=lock_id).status == "expired"
        assert balance_of(plan)["remaining"] == 100
        event = OutboxEvent.objects.get(type="lock.expired")
        assert event.data["lockId"] == lock_id and event.data["released"] == 70


class TestEvents:
    def test_exhaustion_and_low_balance_are_written_once_per_crossing(self, plan):
        balance_events = OutboxEvent.objects.exclude(type="customer.created")
        check(plan, requiredBalance=85, sendEvent=True)  # 15 left: not yet low (threshold 10)
        assert not balance_events.exists()
        check(plan, requiredBalance=6, sendEvent=True)  # 9 left: low
        check(plan, requiredBalance=1, sendEvent=True)  # 8 left: still low, no second event
        assert list(balance_events.values_list("type", flat=True)) == ["balance.low"]
        track(plan, amount=8)  # 0 left: exhausted
        assert list(balance_events.order_by("created_at").values_list("type", flat=True)) == ["balance.low", "entitlement.exhausted"]
        assert OutboxEvent.objects.get(type="entitlement.exhausted").data["customerId"] == "c1"


class TestEntities:
    @pytest.fixture
    def seats(self, sk_client):
        make_product(sk_client, "team", features=[
            {"slug": "seats", "type": "seats", "allowance": 2},
            {"slug": "messages", "type": "metered", "allowance": 10, "resetInterval": "month", "perEntity": True},
        ])
        subscribe(sk_client, product="team")
        return sk_client

    def add(self, client, entity_id):
        return client.post(f"{API}/customers/c1/entities", {"entityId": entity_id, "featureId": "seats", "name": entity_id}, format="json")

    def test_each_entity_uses_a_seat_until_none_is_left(self, seats):
        assert self.add(seats, "u1").status_code == 201
        assert self.add(seats, "u2").status_code == 201
        third = self.add(seats, "u3")
        assert third.status_code == 402 and third.json()["error"]["code"] == "INSUFFICIENT_BALANCE"
        assert [e["id"] for e in seats.get(f"{API}/customers/c1/entities").json()["data"]] == ["u1", "u2"]
        assert seats.delete(f"{API}/customers/c1/entities/u1").status_code == 204
        assert self.add(seats, "u3").status_code == 201

    def test_a_duplicate_entity_is_409(self, seats):
        self.add(seats, "u1")
        assert self.add(seats, "u1").status_code == 409

    def test_per_entity_features_give_every_entity_its_own_balance(self, seats):
        self.add(seats, "u1")
        self.add(seats, "u2")
        assert check(seats, feature="messages", entityId="u1", requiredBalance=10, sendEvent=True).json()["allowed"]
        assert not check(seats, feature="messages", entityId="u1", sendEvent=True).json()["allowed"]
        assert check(seats, feature="messages", entityId="u2", requiredBalance=10).json()["allowed"]
        assert check(seats, feature="messages", entityId="nobody").status_code == 404


class TestCycleAndAggregates:
    def test_allowances_reset_once_per_period_and_the_cycle_is_idempotent(self, plan):
        track(plan, amount=60)
        reset_at = token_buckets().get().next_reset_at
        moment = (reset_at + timedelta(minutes=1)).isoformat()
        call_command("run_billing_cycle", "--now", moment, stdout=open("/dev/null", "w"))
        assert balance_of(plan)["usage"] == 0
        track(plan, amount=5)
        call_command("run_billing_cycle", "--now", moment, stdout=open("/dev/null", "w"))
        assert balance_of(plan)["usage"] == 5  # the second run for the same moment changes nothing
        assert token_buckets().get().next_reset_at > reset_at

    def test_expired_grants_take_their_unused_units_away(self, plan):
        expires = timezone.now() + timedelta(days=1)
        plan.post(f"{API}/balances", {"customer": "c1", "feature": "tokens", "grantedBalance": 50, "expiresAt": expires.isoformat()}, format="json")
        track(plan, amount=30)  # all from the grant (it expires first)
        call_command("run_billing_cycle", "--now", (expires + timedelta(seconds=1)).isoformat(), stdout=open("/dev/null", "w"))
        body = balance_of(plan)
        assert (body["granted"], body["usage"], body["remaining"]) == (100, 0, 100)

    def test_usage_aggregates_by_day(self, plan):
        now = timezone.now()
        for days_ago, amount in [(0, 3), (0, 4), (2, 5)]:
            track(plan, amount=amount, timestamp=(now - timedelta(days=days_ago)).isoformat())
        body = plan.get(f"{API}/events/aggregate", {"customer": "c1", "feature": "tokens", "range": "7d", "groupBy": "day"}).json()
        assert body["total"] == 12
        values = {d["period"]: d["value"] for d in body["data"]}
        assert values[now.date().isoformat()] == 7 and values[(now - timedelta(days=2)).date().isoformat()] == 5
        assert sum(values.values()) == 12

    @pytest.mark.parametrize("params, field", [({"range": "0d"}, "range"), ({"range": "1y"}, "range"), ({"groupBy": "hour"}, "groupBy")])
    def test_bad_aggregate_parameters_are_422(self, plan, params, field):
        response = plan.get(f"{API}/events/aggregate", {"customer": "c1", "feature": "tokens", **params})
        assert response.status_code == 422 and response.json()["error"]["details"][0]["field"] == field


class TestEngineInTheAdmin:
    def test_every_engine_changelist_renders_and_refuses_edits(self, plan, admin_client):
        check(plan, requiredBalance=95, sendEvent=True)  # writes a usage event and a balance.low event
        balance = Balance.objects.get(feature__slug="tokens")
        for model in ["balance", "balancelock", "usageevent", "entity", "spendcap", "productspendcap", "overagerecord", "outboxevent"]:
            assert admin_client.get(f"/admin/billing/{model}/").status_code == 200, model
            assert admin_client.get(f"/admin/billing/{model}/add/").status_code == 403, model
        page = admin_client.get(f"/admin/billing/balance/{balance.pk}/change/")
        assert page.status_code == 200 and b"tokens" in page.content


class TestStaffAttach:
    def test_staff_attach_a_free_product_through_the_service_and_it_is_audited(self, sk_client, admin_client):
        make_product(sk_client)
        make_product(sk_client, "pro", prices=[{"type": "recurring", "amount": 2900}])
        sk_client.post(f"{API}/customers", {"customerId": "c1"}, format="json")
        from billing.models import AuditEvent, Customer, Product

        customer = Customer.objects.get(external_id="c1")
        url = f"/admin/billing/customer/{customer.pk}/attach/"
        page = admin_client.get(url).content.decode()
        assert "Plan (plan)" in page and "(pro)" not in page  # paid products are not offered
        response = admin_client.post(url, {"product": Product.objects.get(slug="plan").pk})
        assert response.status_code == 302
        assert balance_of(sk_client)["granted"] == 100
        event = AuditEvent.objects.get(actor_type="staff", action__contains="attach")
        assert event.target_id == "c1"
        again = admin_client.post(url, {"product": Product.objects.get(slug="plan").pk})
        assert again.status_code == 200 and b"already has this product" in again.content
        assert balance_of(sk_client)["granted"] == 100
