"""Coupons through the HTTP layer: create, list, get, update, archive,
validate; percentage, fixed and trial-extension coupons at subscribe; once,
repeating and forever across renewals driven by ``run_billing_cycle --now``;
and, on PostgreSQL, ``maxRedemptions`` under concurrent subscribes.

After every test the books reconcile (see billing_helpers)."""

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from billing.models import AuditEvent, CheckoutSession, Coupon, CouponRedemption, Invoice, Subscription
from tests.billing.billing_helpers import (
    API,
    add_card,
    assert_books_reconcile,
    cycle,
    make_product,
    subscribe,
)
from tests.conftest import postgres_only

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def books_reconcile():
    yield
    assert_books_reconcile()


def create_coupon(client, code="SAVE25", expect=201, **body):
    body = {"code": code, "type": "percentage", "value": 25, "duration": "once", **body}
    response = client.post(f"{API}/coupons", body, format="json")
    assert response.status_code == expect, response.content
    return response.json()


def error_fields(response) -> list[str]:
    return [d["field"] for d in response.json()["error"]["details"]]


def invoice_totals(customer="c1") -> list[int]:
    """Totals of the customer's invoices, oldest first."""
    return list(Invoice.objects.filter(customer__external_id=customer).order_by("created_at", "id").values_list("total", flat=True))


def live_sub(customer="c1") -> Subscription:
    return Subscription.objects.get(customer__external_id=customer, status__in=("active", "trialing", "past_due"))


def renew(times: int, customer="c1") -> None:
    """Run the billing cycle just after the live subscription's period end, ``times`` times."""
    for _ in range(times):
        cycle(live_sub(customer).current_period_end + timedelta(seconds=1))


# --- create / list / get / update / archive ----------------------------------


class TestCreateCoupon:
    def test_a_coupon_is_created_with_its_terms_on_the_wire(self, sk_client):
        expires = timezone.now() + timedelta(days=30)
        body = create_coupon(sk_client, name="Launch", duration="repeating", durationMonths=3, maxRedemptions=100,
                             expiresAt=expires.isoformat())
        assert body["id"].startswith("pcpn_")
        assert {k: body[k] for k in ("code", "name", "type", "value", "currency", "duration", "durationMonths",
                                     "maxRedemptions", "timesRedeemed", "archived")} == {
            "code": "SAVE25", "name": "Launch", "type": "percentage", "value": 25, "currency": None,
            "duration": "repeating", "durationMonths": 3, "maxRedemptions": 100, "timesRedeemed": 0, "archived": False}
        assert body["expiresAt"].startswith(expires.strftime("%Y-%m-%dT%H:%M:%S"))
        assert body["createdAt"]

    def test_expires_at_also_takes_epoch_milliseconds(self, sk_client):
        expires = timezone.now().replace(microsecond=0) + timedelta(days=1)
        body = create_coupon(sk_client, expiresAt=int(expires.timestamp() * 1000))
        assert Coupon.objects.get(pk=body["id"]).expires_at == expires

    def test_a_fixed_coupon_keeps_its_currency(self, sk_client):
        body = create_coupon(sk_client, code="FIVE", type="fixed", value=500, currency="USD", duration="forever")
        assert (body["type"], body["value"], body["currency"], body["duration"]) == ("fixed", 500, "usd", "forever")

    def test_a_code_is_taken_once(self, sk_client):
        create_coupon(sk_client)
        response = sk_client.post(f"{API}/coupons", {"code": "SAVE25", "type": "fixed", "value": 1, "currency": "usd"}, format="json")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "CONFLICT"
        assert Coupon.objects.count() == 1

    @pytest.mark.parametrize("change, field", [
        ({"code": None}, "code"),
        ({"code": ""}, "code"),
        ({"code": "a/b"}, "code"),
        ({"code": "x" * 65}, "code"),
        ({"code": "validate"}, "code"),
        ({"code": 12}, "code"),
        ({"type": "bogus"}, "type"),
        ({"type": None}, "type"),
        ({"value": 0}, "value"),
        ({"value": "10"}, "value"),
        ({"value": 10.5}, "value"),
        ({"value": True}, "value"),
        ({"value": 101}, "value"),
        ({"value": 10**16}, "value"),
        ({"type": "fixed", "value": 500}, "currency"),
        ({"type": "fixed", "value": 500, "currency": "dollars"}, "currency"),
        ({"type": "trial_extension", "value": 10_000}, "value"),
        ({"duration": "sometimes"}, "duration"),
        ({"duration": "repeating"}, "durationMonths"),
        ({"duration": "repeating", "durationMonths": 0}, "durationMonths"),
        ({"duration": "once", "durationMonths": 3}, "durationMonths"),
        ({"maxRedemptions": 0}, "maxRedemptions"),
        ({"maxRedemptions": 2**40}, "maxRedemptions"),
        ({"expiresAt": "next tuesday"}, "expiresAt"),
        ({"expiresAt": "2001-01-01T00:00:00Z"}, "expiresAt"),
        ({"expiresAt": -5}, "expiresAt"),
        ({"expiresAt": True}, "expiresAt"),
        ({"name": 5}, "name"),
    ])
    def test_bad_input_is_a_422_naming_the_field_and_creates_nothing(self, sk_client, change, field):
        body = {"code": "SAVE", "type": "percentage", "value": 10, **change}
        body = {k: v for k, v in body.items() if not (k == "code" and v is None)}
        response = sk_client.post(f"{API}/coupons", body, format="json")
        assert response.status_code == 422, response.content
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert field in error_fields(response)
        assert not Coupon.objects.exists()

    def test_a_publishable_key_cannot_create_one(self, pk_client):
        response = pk_client.post(f"{API}/coupons", {"code": "X", "type": "percentage", "value": 5}, format="json")
        assert response.status_code == 403
        assert not Coupon.objects.exists()

    def test_a_retry_with_the_same_idempotency_key_replays_and_creates_once(self, sk_client):
        body = {"code": "ONCE", "type": "percentage", "value": 5}
        first = sk_client.post(f"{API}/coupons", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        again = sk_client.post(f"{API}/coupons", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        assert (first.status_code, again.status_code) == (201, 201)
        assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
        assert Coupon.objects.count() == 1


class TestListAndGetCoupons:
    def test_the_list_is_newest_first_and_pages_with_a_cursor(self, sk_client):
        ids = [create_coupon(sk_client, code=f"C{i}")["id"] for i in range(5)]
        seen, cursor = [], None
        for _ in range(5):
            url = f"{API}/coupons?limit=2" + (f"&cursor={cursor}" if cursor else "")
            body = sk_client.get(url).json()
            seen += [c["id"] for c in body["data"]]
            cursor = body["nextCursor"]
            if cursor is None:
                break
        assert seen == ids[::-1]

    def test_the_list_filters_on_archived(self, sk_client):
        kept = create_coupon(sk_client, code="KEEP")
        gone = create_coupon(sk_client, code="GONE")
        sk_client.post(f"{API}/coupons/{gone['id']}/archive")
        assert [c["code"] for c in sk_client.get(f"{API}/coupons?archived=true").json()["data"]] == ["GONE"]
        assert [c["id"] for c in sk_client.get(f"{API}/coupons?archived=false").json()["data"]] == [kept["id"]]
        assert len(sk_client.get(f"{API}/coupons").json()["data"]) == 2

    @pytest.mark.parametrize("query, field", [("archived=yes", "archived"), ("cursor=%%%", "cursor"),
                                              ("cursor=eyJiZWZvcmUiOiAxfQ", "cursor"), ("limit=0", "limit")])
    def test_bad_query_parameters_are_a_422_naming_them(self, sk_client, query, field):
        response = sk_client.get(f"{API}/coupons?{query}")
        assert response.status_code == 422
        assert error_fields(response) == [field]

    def test_a_coupon_is_found_by_id_or_by_code(self, sk_client):
        created = create_coupon(sk_client)
        assert sk_client.get(f"{API}/coupons/{created['id']}").json() == created
        assert sk_client.get(f"{API}/coupons/SAVE25").json() == created

    def test_an_unknown_coupon_is_a_404(self, sk_client):
        response = sk_client.get(f"{API}/coupons/NOPE")
        assert response.status_code == 404
        assert response.json()["error"]["details"]["resource"] == "coupon"


class TestUpdateCoupon:
    def test_name_expiry_and_max_redemptions_change(self, sk_client):
        created = create_coupon(sk_client, maxRedemptions=5)
        expires = timezone.now().replace(microsecond=0) + timedelta(days=7)
        response = sk_client.patch(f"{API}/coupons/SAVE25", {"name": "Spring", "expiresAt": int(expires.timestamp() * 1000),
                                                             "maxRedemptions": 50}, format="json")
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["id"], body["name"], body["maxRedemptions"], body["value"]) == (created["id"], "Spring", 50, 25)
        assert Coupon.objects.get().expires_at == expires
        cleared = sk_client.patch(f"{API}/coupons/{created['id']}", {"maxRedemptions": None, "expiresAt": None}, format="json").json()
        assert (cleared["maxRedemptions"], cleared["expiresAt"]) == (None, None)

    @pytest.mark.parametrize("field, value", [("value", 50), ("type", "fixed"), ("currency", "usd"), ("duration", "forever"),
                                              ("durationMonths", 2), ("code", "OTHER")])
    def test_the_discount_itself_cannot_change(self, sk_client, field, value):
        create_coupon(sk_client)
        response = sk_client.patch(f"{API}/coupons/SAVE25", {field: value}, format="json")
        assert response.status_code == 422
        assert error_fields(response) == [field]
        coupon = Coupon.objects.get()
        assert (coupon.code, coupon.type, coupon.value, coupon.duration) == ("SAVE25", "percentage", 25, "once")

    def test_max_redemptions_cannot_go_below_the_redemptions_made(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        create_coupon(sk_client, maxRedemptions=5)
        for customer in ("c1", "c2"):
            add_card(sk_client, customer=customer)
            subscribe(sk_client, "pro", customer=customer, coupon="SAVE25")
        response = sk_client.patch(f"{API}/coupons/SAVE25", {"maxRedemptions": 1}, format="json")
        assert response.status_code == 422 and error_fields(response) == ["maxRedemptions"]
        assert sk_client.patch(f"{API}/coupons/SAVE25", {"maxRedemptions": 2}, format="json").status_code == 200

    @pytest.mark.parametrize("body, field", [({"maxRedemptions": 0}, "maxRedemptions"), ({"expiresAt": "soon"}, "expiresAt"),
                                             ({"name": ["x"]}, "name"), ({"maxRedemptions": "3"}, "maxRedemptions")])
    def test_bad_updates_are_a_422_naming_the_field(self, sk_client, body, field):
        create_coupon(sk_client)
        response = sk_client.patch(f"{API}/coupons/SAVE25", body, format="json")
        assert response.status_code == 422 and error_fields(response) == [field]

    def test_updating_an_unknown_coupon_is_a_404(self, sk_client):
        assert sk_client.patch(f"{API}/coupons/NOPE", {"name": "x"}, format="json").status_code == 404


class TestArchiveCoupon:
    def test_an_archived_coupon_is_kept_but_no_longer_redeemable(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        created = create_coupon(sk_client)
        response = sk_client.post(f"{API}/coupons/{created['id']}/archive")
        assert response.status_code == 200 and response.json()["archived"] is True
        assert sk_client.post(f"{API}/coupons/SAVE25/archive").json()["archived"] is True  # twice is harmless
        refused = sk_client.post(f"{API}/subscribe", {"customer": "c1", "product": "pro", "coupon": "SAVE25"}, format="json")
        assert refused.status_code == 422 and error_fields(refused) == ["coupon"]
        assert not Invoice.objects.exists() and not Subscription.objects.exists()

    def test_create_update_and_archive_are_audited(self, sk_client):
        created = create_coupon(sk_client)
        sk_client.patch(f"{API}/coupons/SAVE25", {"name": "n"}, format="json")
        sk_client.post(f"{API}/coupons/SAVE25/archive")
        events = list(AuditEvent.objects.filter(action__startswith="coupon.").order_by("id").values_list("action", "target_type", "target_id"))
        assert events == [("coupon.create", "coupon", created["id"]), ("coupon.update", "coupon", created["id"]),
                          ("coupon.archive", "coupon", created["id"])]


# --- validate -----------------------------------------------------------------


class TestValidateCoupon:
    @pytest.fixture
    def shop(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        sk_client.post(f"{API}/customers", {"customerId": "c1"}, format="json")

    def validate(self, client, code, amount=2000, expect=200, **extra):
        body = {"code": code, "customer": "c1", "product": "pro", "amount": amount, **extra}
        response = client.post(f"{API}/coupons/validate", body, format="json")
        assert response.status_code == expect, response.content
        return response.json()

    def test_a_percentage_coupon_takes_its_share(self, sk_client, shop):
        create_coupon(sk_client)
        body = self.validate(sk_client, "SAVE25")
        # 2000 × 25 % = 500 → 1500
        assert body == {"valid": True, "discountAmount": 500, "finalAmount": 1500, "currency": "usd"}

    def test_a_fixed_coupon_never_takes_more_than_the_amount(self, sk_client, shop):
        create_coupon(sk_client, code="BIG", type="fixed", value=5000, currency="usd")
        body = self.validate(sk_client, "BIG", amount=1200)
        assert (body["valid"], body["discountAmount"], body["finalAmount"]) == (True, 1200, 0)

    def test_a_publishable_key_may_validate(self, sk_client, pk_client, shop):
        create_coupon(sk_client)
        assert self.validate(pk_client, "SAVE25")["valid"] is True

    def test_an_unknown_code_is_not_valid(self, sk_client, shop):
        body = self.validate(sk_client, "NOPE")
        assert body == {"valid": False, "discountAmount": 0, "finalAmount": 2000, "currency": "usd", "reason": "unknown coupon"}

    def test_an_archived_coupon_is_not_valid(self, sk_client, shop):
        create_coupon(sk_client)
        sk_client.post(f"{API}/coupons/SAVE25/archive")
        body = self.validate(sk_client, "SAVE25")
        assert (body["valid"], body["reason"], body["finalAmount"]) == (False, "coupon is archived", 2000)

    def test_an_expired_coupon_is_not_valid(self, sk_client, shop):
        create_coupon(sk_client, expiresAt=(timezone.now() + timedelta(days=1)).isoformat())
        Coupon.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        body = self.validate(sk_client, "SAVE25")
        assert (body["valid"], body["reason"]) == (False, "coupon has expired")

    def test_a_fully_redeemed_coupon_is_not_valid(self, sk_client, shop):
        create_coupon(sk_client, maxRedemptions=1)
        add_card(sk_client)
        subscribe(sk_client, "pro", coupon="SAVE25")
        body = self.validate(sk_client, "SAVE25")
        assert (body["valid"], body["reason"], body["discountAmount"]) == (False, "coupon has been fully redeemed", 0)

    def test_a_fixed_coupon_in_another_currency_is_not_valid(self, sk_client, shop):
        create_coupon(sk_client, code="EUR5", type="fixed", value=500, currency="eur")
        body = self.validate(sk_client, "EUR5")
        assert body["valid"] is False and "eur" in body["reason"]

    def test_a_trial_extension_is_valid_and_takes_nothing_off(self, sk_client, shop):
        create_coupon(sk_client, code="TRIAL7", type="trial_extension", value=7)
        assert self.validate(sk_client, "TRIAL7") == {"valid": True, "discountAmount": 0, "finalAmount": 2000, "currency": "usd"}

    @pytest.mark.parametrize("field", ["code", "customer", "product", "amount"])
    def test_a_missing_field_is_a_422_naming_it(self, sk_client, shop, field):
        body = {"code": "SAVE25", "customer": "c1", "product": "pro", "amount": 2000}
        del body[field]
        response = sk_client.post(f"{API}/coupons/validate", body, format="json")
        assert response.status_code == 422 and error_fields(response) == [field]

    @pytest.mark.parametrize("field, value", [("amount", -1), ("amount", "2000"), ("amount", 10**16), ("code", 5),
                                              ("customer", "a/b"), ("product", None)])
    def test_a_bad_field_is_a_422_naming_it(self, sk_client, shop, field, value):
        body = {"code": "SAVE25", "customer": "c1", "product": "pro", "amount": 2000, field: value}
        response = sk_client.post(f"{API}/coupons/validate", body, format="json")
        assert response.status_code == 422 and error_fields(response) == [field]

    def test_an_unknown_customer_or_product_is_a_404(self, sk_client, shop):
        create_coupon(sk_client)
        assert self.validate(sk_client, "SAVE25", expect=404, customer="nobody")["error"]["details"]["resource"] == "customer"
        assert self.validate(sk_client, "SAVE25", expect=404, product="nothing")["error"]["details"]["resource"] == "product"

    def test_validating_redeems_nothing(self, sk_client, shop):
        create_coupon(sk_client, maxRedemptions=1)
        for _ in range(3):
            assert self.validate(sk_client, "SAVE25")["valid"] is True
        assert Coupon.objects.get().times_redeemed == 0


# --- applied at subscribe -------------------------------------------------------


def lines_of(invoice) -> list[tuple[str, int]]:
    return [(line["kind"], line["amount"]) for line in invoice["lines"]]


class TestCouponsAtSubscribe:
    def test_a_percentage_coupon_discounts_the_first_invoice(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        create_coupon(sk_client)
        body = subscribe(sk_client, "pro", coupon="SAVE25")
        invoice = body["invoice"]
        # 2000 − 25 % (500) = 1500, charged to the card
        assert lines_of(invoice) == [("plan", 2000), ("discount", -500)]
        assert (invoice["subtotal"], invoice["discount"], invoice["total"], invoice["amountPaid"]) == (2000, 500, 1500, 1500)
        assert body["subscription"]["status"] == "active"
        assert sk_client.get(f"{API}/coupons/SAVE25").json()["timesRedeemed"] == 1
        assert CouponRedemption.objects.get().subscription_id == body["subscription"]["id"]

    def test_a_fixed_coupon_takes_its_amount_off(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        create_coupon(sk_client, code="OFF300", type="fixed", value=300, currency="usd")
        invoice = subscribe(sk_client, "pro", coupon="OFF300")["invoice"]
        assert lines_of(invoice) == [("plan", 2000), ("discount", -300)]
        assert (invoice["total"], invoice["status"]) == (1700, "paid")

    def test_a_coupon_worth_more_than_the_price_makes_it_free_without_a_charge(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        create_coupon(sk_client, code="ALL", type="fixed", value=9000, currency="usd")
        body = subscribe(sk_client, "pro", coupon="ALL")  # no card needed: nothing is due
        assert (body["invoice"]["total"], body["invoice"]["status"], body["url"]) == (0, "paid", None)
        assert body["subscription"]["status"] == "active"

    def test_the_preview_shows_the_discount_the_subscribe_bills(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        create_coupon(sk_client)
        preview = sk_client.post(f"{API}/preview-attach", {"customer": "c1", "product": "pro", "coupon": "SAVE25"}, format="json").json()
        assert [(l["kind"], l["amount"]) for l in preview["lineItems"]] == [("plan", 2000), ("discount", -500)]
        assert (preview["total"], preview["dueNow"]) == (1500, 1500)
        assert subscribe(sk_client, "pro", coupon="SAVE25")["invoice"]["total"] == preview["total"]

    def test_a_trial_extension_adds_days_to_the_free_trial(self, sk_client):
        make_product(sk_client, "pro", amount=2000, freeTrial={"days": 7, "requirePaymentMethod": True})
        add_card(sk_client)
        create_coupon(sk_client, code="TRIAL7", type="trial_extension", value=7)
        before = timezone.now()
        body = subscribe(sk_client, "pro", coupon="TRIAL7")
        assert body["subscription"]["status"] == "trialing" and body["invoice"] is None
        sub = live_sub()
        # 7 days of the product + 7 of the coupon = 14 days
        assert timedelta(days=14) <= sub.trial_end - before <= timedelta(days=14, seconds=30)
        assert Coupon.objects.get().times_redeemed == 1
        cycle(sub.trial_end - timedelta(days=1))  # still in the trial the product alone would have ended
        assert live_sub().status == "trialing" and not Invoice.objects.exists()
        cycle(sub.trial_end + timedelta(seconds=1))
        assert live_sub().status == "active"
        assert invoice_totals() == [2000]  # a trial extension takes nothing off the price

    def test_an_unusable_coupon_refuses_the_subscribe_and_changes_nothing(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        response = sk_client.post(f"{API}/subscribe", {"customer": "c1", "product": "pro", "coupon": "NOPE"}, format="json")
        assert response.status_code == 422 and error_fields(response) == ["coupon"]
        assert not Subscription.objects.exists() and not Invoice.objects.exists()

    def test_the_last_redemption_is_taken_once(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        create_coupon(sk_client, maxRedemptions=1)
        add_card(sk_client, customer="c1")
        add_card(sk_client, customer="c2")
        subscribe(sk_client, "pro", customer="c1", coupon="SAVE25")
        response = sk_client.post(f"{API}/subscribe", {"customer": "c2", "product": "pro", "coupon": "SAVE25"}, format="json")
        assert response.status_code == 422 and error_fields(response) == ["coupon"]
        assert Coupon.objects.get().times_redeemed == 1
        assert not Subscription.objects.filter(customer__external_id="c2").exists()


    def test_an_abandoned_checkout_gives_its_redemption_back(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        create_coupon(sk_client, maxRedemptions=1)
        body = subscribe(sk_client, "pro", coupon="SAVE25")  # no card: a checkout url
        assert body["url"] and Coupon.objects.get().times_redeemed == 1
        cycle(CheckoutSession.objects.get().expires_at + timedelta(seconds=1))
        assert Invoice.objects.get().status == "void"
        assert Coupon.objects.get().times_redeemed == 0

    def test_an_abandoned_upgrade_checkout_gives_back_the_coupon_it_redeemed(self, sk_client):
        make_product(sk_client, "basic", amount=1000)
        make_product(sk_client, "pro", amount=3000)
        create_coupon(sk_client, code="FREEBASIC", type="fixed", value=1000, currency="usd", duration="forever")
        create_coupon(sk_client, code="UPGRADE")
        subscribe(sk_client, "basic", coupon="FREEBASIC")  # nothing due: active without a card
        body = subscribe(sk_client, "pro", coupon="UPGRADE")  # due now, no card: a checkout url
        assert body["url"] and body["invoice"]["discount"] > 0
        cycle(CheckoutSession.objects.get().expires_at + timedelta(seconds=1))
        assert Invoice.objects.get(pk=body["invoice"]["id"]).status == "void"
        assert Coupon.objects.get(code="UPGRADE").times_redeemed == 0
        assert Coupon.objects.get(code="FREEBASIC").times_redeemed == 1  # still in use by the basic plan

    def test_a_coupon_given_back_by_an_abandoned_checkout_can_be_used_again(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        create_coupon(sk_client, maxRedemptions=1)
        first = subscribe(sk_client, "pro", coupon="SAVE25")  # no card: a checkout url
        assert first["url"] and CouponRedemption.objects.count() == 1
        cycle(CheckoutSession.objects.get().expires_at + timedelta(seconds=1))
        # The redemption is undone with the void: counted back and its row removed.
        assert Coupon.objects.get().times_redeemed == 0 == CouponRedemption.objects.count()
        assert Subscription.objects.get(pk=first["subscription"]["id"]).status == "expired"
        assert sk_client.get(f"{API}/coupons/SAVE25").json()["timesRedeemed"] == 0
        add_card(sk_client, customer="c2")
        body = subscribe(sk_client, "pro", customer="c2", coupon="SAVE25")
        assert (body["invoice"]["total"], body["invoice"]["status"]) == (1500, "paid")
        assert Coupon.objects.get().times_redeemed == 1
        assert CouponRedemption.objects.get().subscription_id == body["subscription"]["id"]

    @pytest.mark.parametrize("coupon", [
        {"code": "TRIAL7", "type": "trial_extension", "value": 7},
        {"code": "SAVE25", "type": "percentage", "value": 25, "duration": "repeating", "durationMonths": 3},
    ])
    def test_an_abandoned_trial_checkout_gives_its_redemption_back(self, sk_client, coupon):
        make_product(sk_client, "pro", amount=2000, freeTrial={"days": 7, "requirePaymentMethod": True})
        create_coupon(sk_client, maxRedemptions=1, **coupon)
        body = subscribe(sk_client, "pro", coupon=coupon["code"])  # no card: a checkout to save one
        assert body["url"] and body["invoice"] is None and body["subscription"]["status"] == "incomplete"
        assert Coupon.objects.get().times_redeemed == 1 == CouponRedemption.objects.count()
        cycle(CheckoutSession.objects.get().expires_at + timedelta(seconds=1))
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "expired"
        assert Coupon.objects.get().times_redeemed == 0 == CouponRedemption.objects.count()
        # Another customer can take the one redemption now.
        add_card(sk_client, customer="c2")
        again = subscribe(sk_client, "pro", customer="c2", coupon=coupon["code"])
        assert again["subscription"]["status"] == "trialing"
        assert Coupon.objects.get().times_redeemed == 1

    def test_a_completed_checkout_keeps_its_redemption_when_the_cycle_runs(self, sk_client):
        make_product(sk_client, "pro", amount=2000, freeTrial={"days": 7, "requirePaymentMethod": True})
        add_card(sk_client)
        create_coupon(sk_client, code="TRIAL7", type="trial_extension", value=7, maxRedemptions=1)
        subscribe(sk_client, "pro", coupon="TRIAL7")  # a card: the trial starts at once, no checkout
        cycle(timezone.now() + timedelta(days=2))
        assert live_sub().status == "trialing"
        assert Coupon.objects.get().times_redeemed == 1 == CouponRedemption.objects.count()

# --- durations across renewals ---------------------------------------------------


class TestCouponDurations:
    @pytest.fixture
    def pro(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)

    def test_once_discounts_only_the_first_invoice(self, sk_client, pro):
        create_coupon(sk_client, duration="once")
        subscribe(sk_client, "pro", coupon="SAVE25")
        renew(2)
        assert invoice_totals() == [1500, 2000, 2000]

    def test_repeating_discounts_n_invoices_in_all(self, sk_client, pro):
        # durationMonths 3: the first invoice and the next 2 renewals
        create_coupon(sk_client, duration="repeating", durationMonths=3)
        subscribe(sk_client, "pro", coupon="SAVE25")
        renew(4)
        assert invoice_totals() == [1500, 1500, 1500, 2000, 2000]
        assert live_sub().coupon_cycles_left == 0

    def test_repeating_one_month_is_the_same_as_once(self, sk_client, pro):
        create_coupon(sk_client, duration="repeating", durationMonths=1)
        subscribe(sk_client, "pro", coupon="SAVE25")
        renew(2)
        assert invoice_totals() == [1500, 2000, 2000]

    def test_forever_discounts_every_renewal(self, sk_client, pro):
        create_coupon(sk_client, code="OFF300", type="fixed", value=300, currency="usd", duration="forever")
        subscribe(sk_client, "pro", coupon="OFF300")
        renew(4)
        assert invoice_totals() == [1700] * 5
        assert all(i.status == "paid" and i.discount == 300 for i in Invoice.objects.all())

    def test_a_forever_coupon_still_applies_after_it_expired_or_was_archived(self, sk_client, pro):
        # Expiry and archiving stop new redemptions, not the discount already granted.
        create_coupon(sk_client, duration="forever", expiresAt=(timezone.now() + timedelta(days=1)).isoformat())
        subscribe(sk_client, "pro", coupon="SAVE25")
        sk_client.post(f"{API}/coupons/SAVE25/archive")
        renew(2)
        assert invoice_totals() == [1500, 1500, 1500]

    def test_a_renewal_past_the_repeating_cycles_is_not_rediscounted_on_a_second_run(self, sk_client, pro):
        create_coupon(sk_client, duration="repeating", durationMonths=2)
        subscribe(sk_client, "pro", coupon="SAVE25")
        at = live_sub().current_period_end + timedelta(seconds=1)
        cycle(at)
        cycle(at)  # the same moment again: nothing billed, no cycle used
        renew(1)
        assert invoice_totals() == [1500, 1500, 2000]

    def test_with_a_trial_the_repeating_cycles_start_at_the_first_paid_invoice(self, sk_client):
        make_product(sk_client, "pro", amount=2000, freeTrial={"days": 7, "requirePaymentMethod": True})
        add_card(sk_client)
        create_coupon(sk_client, duration="repeating", durationMonths=2)
        assert subscribe(sk_client, "pro", coupon="SAVE25")["invoice"] is None
        renew(4)  # the trial end, then three renewals
        assert invoice_totals() == [1500, 1500, 2000, 2000]

    def test_a_forever_coupon_follows_a_downgrade_at_the_period_end(self, sk_client):
        make_product(sk_client, "basic", amount=1000)
        make_product(sk_client, "pro", amount=3000)
        add_card(sk_client)
        create_coupon(sk_client, duration="forever")
        subscribe(sk_client, "pro", coupon="SAVE25")
        subscribe(sk_client, "basic")  # scheduled for the period end
        renew(2)
        assert live_sub().product.slug == "basic"
        # pro 3000 − 750; then basic 1000 − 250, twice
        assert invoice_totals() == [2250, 750, 750]


    def test_a_forever_coupon_follows_an_upgrade(self, sk_client):
        make_product(sk_client, "basic", amount=1000)
        make_product(sk_client, "pro", amount=3000)
        add_card(sk_client)
        create_coupon(sk_client, duration="forever")
        subscribe(sk_client, "basic", coupon="SAVE25")
        upgrade = subscribe(sk_client, "pro")["invoice"]
        renew(2)
        assert live_sub().product.slug == "pro" and live_sub().coupon.code == "SAVE25"
        # basic 1000 − 250; the upgrade (3000 less the unused basic time, no new coupon); then pro 3000 − 750, twice
        assert invoice_totals() == [750, upgrade["total"], 2250, 2250]

    def test_a_repeating_coupon_given_with_an_upgrade_covers_the_renewals_after_it(self, sk_client):
        make_product(sk_client, "basic", amount=1000)
        make_product(sk_client, "pro", amount=3000)
        add_card(sk_client)
        create_coupon(sk_client, duration="repeating", durationMonths=2)
        subscribe(sk_client, "basic")
        upgrade = subscribe(sk_client, "pro", coupon="SAVE25")["invoice"]
        assert [line["kind"] for line in upgrade["lines"]] == ["plan", "proration", "discount"]
        renew(2)
        # the upgrade invoice and one renewal discounted (2 in all), then the full 3000
        assert invoice_totals()[2:] == [2250, 3000]

# --- hostile input --------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(["", "\x00", "a/b", "percentage", "fixed", "trial_extension", "once", "repeating",
                                           "forever", "usd", "2030-01-01T00:00:00Z", "validate"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                      max_leaves=8)
FIELDS = ["code", "name", "type", "value", "currency", "duration", "durationMonths", "maxRedemptions", "expiresAt"]


class TestFuzzedCouponBodies:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=st.dictionaries(st.sampled_from(FIELDS), values, max_size=len(FIELDS)))
    def test_create_never_fails_with_a_5xx_and_a_refusal_creates_nothing(self, sk_client, body):
        before = Coupon.objects.count()
        response = sk_client.post(f"{API}/coupons", json.dumps(body, allow_nan=True), content_type="application/json")
        assert response.status_code < 500, response.content
        if response.status_code >= 400:
            assert Coupon.objects.count() == before
            assert response.json()["error"]["code"]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=st.dictionaries(st.sampled_from(["code", "customer", "product", "amount"]), values, max_size=4))
    def test_validate_never_fails_with_a_5xx(self, sk_client, body):
        response = sk_client.post(f"{API}/coupons/validate", json.dumps(body, allow_nan=True), content_type="application/json")
        assert response.status_code < 500, response.content


# --- PostgreSQL: concurrent redemptions ------------------------------------------


def _client_for(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


class TestConcurrentRedemptions:
    pytestmark = [*postgres_only, pytest.mark.django_db(transaction=True)]

    def test_12_concurrent_subscribes_never_exceed_max_redemptions_of_5(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        create_coupon(sk_client, maxRedemptions=5)
        customers = [f"c{i}" for i in range(12)]
        for customer in customers:
            add_card(sk_client, customer=customer)
        barrier = threading.Barrier(len(customers))
        results, errors, lock = [], [], threading.Lock()

        def work(customer):
            try:
                barrier.wait()
                response = _client_for(sk_client.raw_key).post(
                    f"{API}/subscribe", {"customer": customer, "product": "pro", "coupon": "SAVE25"}, format="json")
                with lock:
                    results.append((response.status_code, response.json()))
            except Exception as exc:  # surfaced below
                with lock:
                    errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=work, args=(c,)) for c in customers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        codes = sorted(status for status, _ in results)
        assert codes == [200] * 5 + [422] * 7, results
        assert all(body["error"]["details"][0]["field"] == "coupon" for status, body in results if status == 422)
        coupon = Coupon.objects.get()
        assert coupon.times_redeemed == 5 == CouponRedemption.objects.count()
        discounted = Invoice.objects.filter(discount__gt=0)
        assert discounted.count() == 5 == Invoice.objects.count()
        assert all((i.discount, i.total, i.status) == (500, 1500, "paid") for i in discounted)
        assert Subscription.objects.filter(status="active").count() == 5
        assert_books_reconcile()
