"""listPlans, getPricingTable, listProductVersions and migrateCustomers through the
HTTP layer. After every test the books reconcile (see billing_helpers)."""

from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from billing.models import Balance, Invoice, OutboxEvent, Subscription
from tests.billing.billing_helpers import (
    API,
    add_card,
    assert_books_reconcile,
    cycle,
    make_product,
    make_topup,
    subscribe,
)
from tests.conftest import postgres_only
from tests.concurrency import run_concurrently

pytestmark = pytest.mark.django_db

TOKENS = [{"slug": "tokens", "type": "metered", "allowance": 1000, "resetInterval": "billing_period"}]


@pytest.fixture(autouse=True)
def books_reconcile():
    yield
    assert_books_reconcile()


def plans(client, customer=None, expect=200):
    response = client.get(f"{API}/plans", {"customer": customer} if customer else {})
    assert response.status_code == expect, response.content
    return response.json()


def pricing(client, customer=None, expect=200):
    response = client.get(f"{API}/pricing-table", {"customer": customer} if customer else {})
    assert response.status_code == expect, response.content
    return response.json()


def by_slug(body, key=lambda row: row["product"]["slug"]):
    return {key(row): row for row in body["data"]}


def track(client, amount, customer="c1", feature="tokens"):
    response = client.post(f"{API}/track", {"customer": customer, "feature": feature, "amount": amount}, format="json")
    assert response.status_code == 200, response.content


def tokens(customer="c1"):
    return Balance.objects.get(customer__external_id=customer, feature__slug="tokens", entity__isnull=True)


@pytest.fixture
def ladder(sk_client):
    """free < basic < pro in group "plans", a plan of another group, a plan of no
    group, an add-on and a top-up."""
    make_product(sk_client, "free", prices=[{"type": "recurring", "amount": 0, "billingInterval": "month"}])
    make_product(sk_client, "basic", amount=1000)
    make_product(sk_client, "pro", amount=3000, freeTrial={"days": 14, "requirePaymentMethod": False})
    make_product(sk_client, "support", amount=500, group="support")
    make_product(sk_client, "solo", amount=700, group="")
    make_product(sk_client, "sso-addon", amount=900, isAddOn=True, features=[{"slug": "sso", "type": "boolean"}])
    make_topup(sk_client)


class TestListPlans:
    def test_without_a_customer_every_main_plan_is_new_and_eligible(self, sk_client, ladder):
        body = plans(sk_client)
        assert [row["product"]["slug"] for row in body["data"]] == ["free", "basic", "pro", "support", "solo"]
        assert {(row["scenario"], row["eligible"]) for row in body["data"]} == {("new", True)}
        assert {slug: row["trialAvailable"] for slug, row in by_slug(body).items()} == {
            "free": False, "basic": False, "pro": True, "support": False, "solo": False}

    def test_each_product_is_in_the_wire_form_of_get_products(self, sk_client, ladder):
        pro = by_slug(plans(sk_client))["pro"]["product"]
        assert pro == sk_client.get(f"{API}/products/pro").json()
        assert pro["prices"][0]["amount"] == 3000 and pro["features"][0]["slug"] == "tokens"

    def test_scenarios_follow_the_customers_live_plan(self, sk_client, ladder):
        add_card(sk_client)
        subscribe(sk_client, "basic")
        rows = by_slug(plans(sk_client, "c1"))
        assert {slug: (row["scenario"], row["eligible"]) for slug, row in rows.items()} == {
            "free": ("downgrade", True),
            "basic": ("current", False),
            "pro": ("upgrade", True),
            "support": ("new", True),  # another group
            "solo": ("new", True),  # no group
        }
        # Upgrades start no trial (quote_attach trials only new subscriptions).
        assert rows["pro"]["trialAvailable"] is False

    def test_the_scenario_is_the_one_preview_attach_gives(self, sk_client, ladder):
        add_card(sk_client)
        subscribe(sk_client, "basic")
        for row in plans(sk_client, "c1")["data"]:
            if row["scenario"] == "current":
                continue
            slug = row["product"]["slug"]
            preview = sk_client.post(f"{API}/preview-attach", {"customer": "c1", "product": slug}, format="json").json()
            assert row["scenario"] == preview["scenario"], slug

    def test_a_yearly_plan_is_compared_by_its_monthly_value(self, sk_client):
        make_product(sk_client, "monthly", amount=1000)
        make_product(sk_client, "yearly", amount=11000, interval="year")  # 916.67 a month
        add_card(sk_client)
        subscribe(sk_client, "monthly")
        assert by_slug(plans(sk_client, "c1"))["yearly"]["scenario"] == "downgrade"

    def test_a_trial_is_offered_once(self, sk_client, ladder):
        sk_client.post(f"{API}/customers", {"customerId": "c1"}, format="json")
        assert by_slug(plans(sk_client, "c1"))["pro"]["trialAvailable"] is True
        assert subscribe(sk_client, "pro")["subscription"]["status"] == "trialing"
        assert by_slug(plans(sk_client, "c1"))["pro"]["scenario"] == "current"
        sk_client.post(f"{API}/cancel", {"customer": "c1", "product": "pro", "immediately": True}, format="json")
        row = by_slug(plans(sk_client, "c1"))["pro"]
        assert (row["scenario"], row["trialAvailable"]) == ("new", False)

    def test_an_unknown_customer_is_404(self, sk_client, ladder):
        body = plans(sk_client, "nobody", expect=404)
        assert body["error"]["details"]["resource"] == "customer"

    def test_a_publishable_key_may_list_plans(self, sk_client, pk_client, ladder):
        add_card(sk_client)
        subscribe(sk_client, "basic")
        assert by_slug(plans(pk_client, "c1"))["basic"]["scenario"] == "current"


class TestPricingTable:
    def test_prices_and_features_read_as_people_write_them(self, sk_client):
        make_product(sk_client, "starter", amount=None, features=[
            {"slug": "tokens", "type": "metered", "allowance": 100, "resetInterval": "month"}])
        make_product(sk_client, "pro", amount=2000, features=[
            {"slug": "tokens", "type": "metered", "allowance": 1000, "resetInterval": "billing_period",
             "overageAllowed": True, "overagePrice": 2},
            {"slug": "api-calls", "type": "metered", "allowanceType": "unlimited"},
            {"slug": "sso", "name": "SSO", "type": "boolean"},
            {"slug": "seats", "type": "seats", "allowance": 5},
        ])
        make_product(sk_client, "tokyo", amount=150000, interval="year", group="jp",
                     prices=[{"type": "recurring", "amount": 150000, "currency": "jpy", "billingInterval": "year"}])
        make_product(sk_client, "metered", amount=0, group="tiers", tiers=[
            {"upTo": 10, "unitAmount": 500, "flatAmount": 100}, {"upTo": None, "unitAmount": 400}])
        make_topup(sk_client, slug="credits-pack", amount=999, allowance=5000)
        euros = {"prices": [{"type": "one_off", "amount": 999, "currency": "eur"}]}
        sk_client.patch(f"{API}/products/credits-pack", euros, format="json")
        rows = by_slug(pricing(sk_client), key=lambda row: row["product"])
        assert {slug: row["formattedPrice"] for slug, row in rows.items()} == {
            "starter": "Free",
            "pro": "$20.00 / month",
            "tokyo": "¥150,000 / year",  # zero-decimal: 150000 minor units are ¥150,000
            "metered": "From $6.00 / month",  # one unit: 500 + flat 100
            "credits-pack": "€9.99 one-off",
        }
        assert rows["pro"]["features"] == [
            "1,000 tokens per month, then $0.02 each", "Unlimited api calls", "SSO", "5 seats"]
        assert rows["starter"]["features"] == ["100 tokens per month"]
        assert rows["credits-pack"]["features"] == ["5,000 tokens"]
        assert rows["pro"]["name"] == "Pro"

    def test_plans_come_first_then_add_ons_then_one_off_purchases(self, sk_client, ladder):
        assert [row["product"] for row in pricing(sk_client)["data"]] == [
            "free", "basic", "pro", "support", "solo", "sso-addon", "credits-pack"]

    def test_each_row_carries_the_customers_scenario(self, sk_client, ladder):
        add_card(sk_client)
        subscribe(sk_client, "pro")
        subscribe(sk_client, "sso-addon")
        rows = by_slug(pricing(sk_client, "c1"), key=lambda row: row["product"])
        assert {slug: row["scenario"] for slug, row in rows.items()} == {
            "free": "downgrade", "basic": "downgrade", "pro": "current", "support": "new", "solo": "new",
            "sso-addon": "current", "credits-pack": "new"}

    def test_an_unknown_customer_is_404_and_a_publishable_key_may_call_it(self, sk_client, pk_client, ladder):
        assert pricing(pk_client, "nobody", expect=404)["error"]["code"] == "NOT_FOUND"
        assert len(pricing(pk_client)["data"]) == 7


@pytest.fixture
def pro_v2(sk_client):
    """c1 subscribed to pro v1 (1000 tokens, $20) has used 300 tokens; pro is then
    changed to v2 (5000 tokens, $25, plus SSO). Returns (v1 id, v2 id, subscription id)."""
    v1 = make_product(sk_client, "pro", amount=2000)["versionId"]
    add_card(sk_client)
    sub = subscribe(sk_client, "pro")["subscription"]["id"]
    track(sk_client, 300)
    v2 = sk_client.patch(f"{API}/products/pro", {
        "prices": [{"type": "recurring", "amount": 2500}],
        "features": [{"slug": "tokens", "type": "metered", "allowance": 5000, "resetInterval": "billing_period"},
                     {"slug": "sso", "name": "SSO", "type": "boolean"}],
    }, format="json").json()
    assert v2["version"] == 2
    return v1, v2["versionId"], sub


def migrate(client, from_version_id, product="pro", expect=200):
    response = client.post(f"{API}/products/{product}/migrate", {"fromVersionId": from_version_id}, format="json")
    assert response.status_code == expect, response.content
    return response.json()


def versions(client, product="pro"):
    body = client.get(f"{API}/products/{product}/versions").json()
    return [(v["id"], v["version"], v["subscribers"]) for v in body["versions"]]


class TestVersions:
    def test_versions_list_their_live_subscribers(self, sk_client, pro_v2):
        v1, v2, _ = pro_v2
        body = sk_client.get(f"{API}/products/pro/versions").json()
        assert set(body) == {"versions"}
        assert [set(v) for v in body["versions"]] == [{"id", "version", "createdAt", "subscribers"}] * 2
        assert versions(sk_client) == [(v1, 1, 1), (v2, 2, 0)]
        sk_client.post(f"{API}/customers", {"customerId": "c2"}, format="json")
        add_card(sk_client, customer="c2")
        subscribe(sk_client, "pro", customer="c2")
        assert versions(sk_client) == [(v1, 1, 1), (v2, 2, 1)]


class TestMigrate:
    def test_a_subscriber_keeps_their_usage_and_gets_the_new_allowance(self, sk_client, pro_v2):
        v1, v2, sub_id = pro_v2
        assert (tokens().granted, tokens().usage) == (1000, 300)
        assert migrate(sk_client, v1) == {"migrated": 1}
        sub = Subscription.objects.get(pk=sub_id)
        assert (sub.version_id, sub.status, sub.unit_amount) == (v2, "active", 2500)
        balance = tokens()
        assert (balance.granted, balance.usage, balance.remaining) == (5000, 300, 4700)
        assert balance.buckets.filter(active=True).count() == 1
        flags = sk_client.get(f"{API}/customers/c1").json()["flags"]
        assert flags["sso"] is True
        assert versions(sk_client) == [(v1, 1, 0), (v2, 2, 1)]
        event = OutboxEvent.objects.filter(type="subscription.updated").get()
        data = event.data
        assert (data["subscriptionId"], data["versionId"], data["previousVersionId"]) == (sub_id, v2, v1)

    def test_nothing_is_charged_now_and_the_next_renewal_bills_the_new_price(self, sk_client, pro_v2):
        v1, _, sub_id = pro_v2
        migrate(sk_client, v1)
        assert Invoice.objects.count() == 1  # the first period, at the old price
        end = Subscription.objects.get(pk=sub_id).current_period_end
        cycle(end + timedelta(minutes=1))
        renewal = Invoice.objects.get(reason="renewal")
        assert (renewal.total, renewal.status) == (2500, "paid")
        balance = tokens()
        assert (balance.granted, balance.usage) == (5000, 0)  # reset for the new period

    def test_a_second_migration_moves_nothing(self, sk_client, pro_v2):
        v1, _, _ = pro_v2
        assert migrate(sk_client, v1) == {"migrated": 1}
        assert migrate(sk_client, v1) == {"migrated": 0}
        assert OutboxEvent.objects.filter(type="subscription.updated").count() == 1
        assert tokens().granted == 5000

    def test_usage_beyond_the_new_allowance_stays_as_overage(self, sk_client):
        v1 = make_product(sk_client, "pro", amount=2000)["versionId"]
        add_card(sk_client)
        subscribe(sk_client, "pro")
        track(sk_client, 800)
        sk_client.patch(f"{API}/products/pro", {"features": [
            {"slug": "tokens", "type": "metered", "allowance": 500, "resetInterval": "billing_period",
             "overageAllowed": True, "overagePrice": 1}]}, format="json")
        migrate(sk_client, v1)
        balance = tokens()
        assert (balance.granted, balance.usage, balance.overage) == (500, 800, 300)

    def test_a_feature_the_new_version_drops_is_withdrawn(self, sk_client):
        features = TOKENS + [{"slug": "sso", "type": "boolean"}]
        v1 = make_product(sk_client, "pro", amount=2000, features=features)["versionId"]
        add_card(sk_client)
        subscribe(sk_client, "pro")
        track(sk_client, 100)
        sk_client.patch(f"{API}/products/pro", {"features": TOKENS}, format="json")
        migrate(sk_client, v1)
        flags = sk_client.get(f"{API}/customers/c1").json()["flags"]
        assert flags.get("sso", False) is False
        assert (tokens().granted, tokens().usage) == (1000, 100)

    def test_a_paused_subscriber_resumes_with_the_new_allowance(self, sk_client, pro_v2):
        v1, v2, sub_id = pro_v2
        update = {"customer": "c1", "product": "pro"}
        pause = sk_client.post(f"{API}/subscriptions/update", {**update, "pause": True}, format="json")
        assert pause.status_code == 200
        assert migrate(sk_client, v1) == {"migrated": 1}
        assert tokens().included is False  # still paused: nothing is granted
        resume = sk_client.post(f"{API}/subscriptions/update", {**update, "pause": False}, format="json")
        assert resume.status_code == 200
        assert Subscription.objects.get(pk=sub_id).version_id == v2
        assert tokens().granted == 5000  # the new allowance, once

    def test_a_resumed_subscriber_after_migration_is_not_granted_the_old_allowance_again(self, sk_client, pro_v2):
        v1, _, _ = pro_v2
        migrate(sk_client, v1)
        update = {"customer": "c1", "product": "pro"}
        sk_client.post(f"{API}/subscriptions/update", {**update, "pause": True}, format="json")
        sk_client.post(f"{API}/subscriptions/update", {**update, "pause": False}, format="json")
        assert tokens().granted == 5000

    def test_only_live_subscriptions_move(self, sk_client, pro_v2):
        v1, _, _ = pro_v2
        sk_client.post(f"{API}/cancel", {"customer": "c1", "immediately": True}, format="json")
        assert migrate(sk_client, v1) == {"migrated": 0}
        assert Subscription.objects.get().version_id == v1

    def test_the_current_version_is_refused(self, sk_client, pro_v2):
        _, v2, _ = pro_v2
        body = migrate(sk_client, v2, expect=422)
        assert body["error"]["details"][0]["field"] == "fromVersionId"

    def test_a_version_of_another_product_is_refused(self, sk_client, pro_v2):
        other = make_product(sk_client, "basic", amount=1000)["versionId"]
        body = migrate(sk_client, other, expect=422)
        assert body["error"]["details"][0]["field"] == "fromVersionId"
        assert Subscription.objects.get().version.version == 1

    def test_an_unknown_version_or_product_is_404(self, sk_client, pro_v2):
        v1, _, _ = pro_v2
        assert migrate(sk_client, "pver_nope", expect=404)["error"]["details"]["resource"] == "version"
        assert migrate(sk_client, v1, product="nope", expect=404)["error"]["details"]["resource"] == "product"

    def test_a_missing_from_version_id_is_422(self, sk_client, pro_v2):
        body = migrate(sk_client, None, expect=422)
        assert body["error"]["details"][0]["field"] == "fromVersionId"

    def test_a_publishable_key_may_not_migrate(self, pk_client, pro_v2):
        v1, _, _ = pro_v2
        assert migrate(pk_client, v1, expect=403)["error"]["code"] == "FORBIDDEN"
        assert Subscription.objects.get().version.version == 1

    def test_the_migration_is_audited(self, sk_client, pro_v2):
        from billing.models import AuditEvent

        v1, _, _ = pro_v2
        migrate(sk_client, v1)
        event = AuditEvent.objects.get(action="product.migrate")
        assert event.target_type == "product" and event.target_id.startswith("pprod_")


class TestMigrateRaces:
    pytestmark = [*postgres_only, pytest.mark.django_db(transaction=True)]

    def test_two_migrations_and_usage_at_once_move_each_subscriber_once_and_lose_no_usage(self, sk_client):
        customers = [f"c{i}" for i in range(5)]
        v1 = make_product(sk_client, "plan", features=[
            {"slug": "tokens", "type": "metered", "allowance": 40, "resetInterval": "month"}])["versionId"]
        for customer in customers:
            subscribe(sk_client, "plan", customer=customer)
            track(sk_client, 10, customer=customer)
        sk_client.patch(f"{API}/products/plan", {"features": [
            {"slug": "tokens", "type": "metered", "allowance": 100, "resetInterval": "month"}]}, format="json")
        def work(i):
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {sk_client.raw_key}")
            if i < 2:
                return migrate(client, v1, product="plan")["migrated"]
            track(client, 1, customer=customers[i % len(customers)])
            return 0

        results = run_concurrently(12, work)
        assert sum(results) == len(customers)
        assert OutboxEvent.objects.filter(type="subscription.updated").count() == len(customers)
        assert not Subscription.objects.filter(version_id=v1).exists()
        tracked = {c: 10 + sum(1 for i in range(2, 12) if customers[i % len(customers)] == c) for c in customers}
        for customer in customers:
            balance = tokens(customer)
            assert (balance.granted, balance.usage) == (100, tracked[customer]), customer
            assert sum(b.consumed for b in balance.buckets.filter(active=True)) == balance.usage
