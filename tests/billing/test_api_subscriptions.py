"""subscribe / preview / update / cancel / invoices through the HTTP layer, on the
offline test gateway. After every test the books reconcile (see billing_helpers)."""

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from billing.models import Balance, CheckoutSession, Invoice, OutboxEvent, Payment, Subscription
from tests.billing.billing_helpers import (
    API,
    add_card,
    assert_books_reconcile,
    cycle,
    make_product,
    make_topup,
    subscribe,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def books_reconcile():
    yield
    assert_books_reconcile()


def tokens(customer="c1"):
    return Balance.objects.get(customer__external_id=customer, feature__slug="tokens", entity__isnull=True)


class TestSubscribePaid:
    def test_a_saved_card_is_charged_at_once_and_the_plan_activates(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        body = subscribe(sk_client, "pro")
        assert body["subscription"]["status"] == "active"
        assert body["url"] is None and body["requiredAction"] is None
        invoice = body["invoice"]
        assert (invoice["status"], invoice["total"], invoice["amountPaid"]) == ("paid", 2000, 2000)
        assert [(l["number"], l["kind"], l["amount"]) for l in invoice["lines"]] == [(1, "plan", 2000)]
        assert tokens().granted == 1000
        types = list(OutboxEvent.objects.order_by("id").values_list("type", flat=True))
        for t in ("invoice.created", "payment.succeeded", "invoice.paid", "subscription.activated"):
            assert t in types

    def test_without_a_card_the_answer_is_a_checkout_url_and_nothing_is_active(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        body = subscribe(sk_client, "pro")
        assert body["url"].startswith("http") and "/checkout/pcs_" in body["url"]
        assert body["subscription"]["status"] == "incomplete"
        assert body["invoice"]["status"] == "open"
        assert not Balance.objects.filter(customer__external_id="c1", feature__slug="tokens", included=True).exists()

    def test_paying_the_checkout_with_the_success_card_activates(self, sk_client, client):
        make_product(sk_client, "pro", amount=2000)
        body = subscribe(sk_client, "pro", successUrl="https://shop.example/ok")
        path = body["url"].split("8000", 1)[-1] if "8000" in body["url"] else "/checkout/" + body["url"].split("/checkout/")[1]
        page = client.get(path)
        assert page.status_code == 200 and b"2000" in page.content
        done = client.post(path, {"cardNumber": "4242 4242 4242 4242"})
        assert done.status_code == 302 and done["Location"] == "https://shop.example/ok"
        sub = Subscription.objects.get(pk=body["subscription"]["id"])
        assert sub.status == "active"
        assert Invoice.objects.get(pk=body["invoice"]["id"]).status == "paid"
        assert tokens().granted == 1000

    def test_a_declined_saved_card_returns_required_action_and_activates_nothing(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client, pm="pm_card_chargeDeclined")
        body = subscribe(sk_client, "pro")
        assert body["requiredAction"]["code"] == "payment_failed"
        assert "/checkout/" in body["url"]
        assert body["subscription"]["status"] == "incomplete"
        assert Payment.objects.get().status == "failed"
        assert not Subscription.objects.filter(status="active").exists()

    def test_a_3ds_card_returns_required_action_and_the_confirm_page_completes_it(self, sk_client, client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client, pm="pm_card_authenticationRequired")
        body = subscribe(sk_client, "pro")
        assert body["requiredAction"]["code"] == "3ds_required"
        assert body["subscription"]["status"] == "incomplete"
        path = "/checkout/" + body["url"].split("/checkout/")[1]
        assert client.get(path)["Location"].endswith("/3ds/")
        done = client.post(path + "3ds/", {"outcome": "complete"})
        assert done.status_code == 200 and b"Payment complete" in done.content
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "active"

    def test_a_declined_card_on_the_checkout_page_shows_an_error_and_keeps_it_open(self, sk_client, client):
        make_product(sk_client, "pro", amount=2000)
        body = subscribe(sk_client, "pro")
        path = "/checkout/" + body["url"].split("/checkout/")[1]
        page = client.post(path, {"cardNumber": "4000000000000002"})
        assert page.status_code == 402 and b"declined" in page.content
        assert CheckoutSession.objects.get().status == "open"
        ok = client.post(path, {"cardNumber": "4242424242424242"})
        assert ok.status_code == 200
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "active"

    def test_subscribing_twice_is_a_conflict(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        subscribe(sk_client, "pro")
        body = subscribe(sk_client, "pro", expect=409)
        assert body["error"]["code"] == "CONFLICT"
        assert Invoice.objects.count() == 1

    def test_an_add_on_lives_beside_the_main_plan(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        make_product(sk_client, "extra", amount=500, isAddOn=True, features=[{"slug": "sso", "type": "boolean"}])
        add_card(sk_client)
        subscribe(sk_client, "pro")
        body = subscribe(sk_client, "extra")
        assert body["subscription"]["status"] == "active"
        assert Subscription.objects.filter(status="active").count() == 2

    def test_a_publishable_key_gets_only_a_checkout_url_even_with_a_saved_card(self, sk_client, pk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        body = subscribe(pk_client, "pro")
        assert body["url"] and body["subscription"]["status"] == "incomplete"
        assert not Payment.objects.exists()

    def test_a_topup_with_quantity_charges_and_grants_credits(self, sk_client):
        make_topup(sk_client, amount=500, allowance=100)
        add_card(sk_client)
        body = subscribe(sk_client, "credits-pack", quantity=3)
        assert body["subscription"] is None
        assert (body["invoice"]["total"], body["invoice"]["lines"][0]["quantity"]) == (1500, 3)
        balance = tokens()
        assert balance.granted == 300
        assert balance.buckets.get().kind == "topup"


class TestPreviewAttach:
    def test_preview_returns_the_lines_the_real_call_bills(self, sk_client):
        make_product(sk_client, "basic", amount=1000)
        make_product(sk_client, "pro", amount=3000)
        add_card(sk_client)
        subscribe(sk_client, "basic")
        preview = sk_client.post(f"{API}/preview-attach", {"customer": "c1", "product": "pro"}, format="json").json()
        assert preview["scenario"] == "upgrade"
        real = subscribe(sk_client, "pro")["invoice"]
        # The clock moved between the two calls by well under a second: the
        # credit for unused time may differ by at most one minor unit.
        assert [l["title"] for l in preview["lineItems"]] == [l["description"] for l in real["lines"]]
        assert abs(preview["total"] - real["total"]) <= 1
        assert preview["lineItems"][0]["amount"] == real["lines"][0]["amount"] == 3000

    def test_preview_of_a_new_plan_is_its_price(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        sk_client.post(f"{API}/customers", {"customerId": "c1"}, format="json")
        preview = sk_client.post(f"{API}/preview-attach", {"customer": "c1", "product": "pro"}, format="json").json()
        assert (preview["scenario"], preview["total"], preview["dueNow"], preview["currency"]) == ("new", 2000, 2000, "usd")
        assert preview["nextCycleAt"]


class TestUpgradeAndDowngrade:
    def test_an_upgrade_charges_the_new_price_less_unused_time_and_starts_a_new_period(self, sk_client):
        make_product(sk_client, "basic", amount=1000)
        make_product(sk_client, "pro", amount=3000)
        add_card(sk_client)
        old = subscribe(sk_client, "basic")["subscription"]
        body = subscribe(sk_client, "pro")
        lines = body["invoice"]["lines"]
        assert [l["kind"] for l in lines] == ["plan", "proration"]
        # Seconds after the start almost all of the old 1000 is unused.
        assert -1000 <= lines[1]["amount"] <= -999
        assert body["invoice"]["total"] == 3000 + lines[1]["amount"]
        assert body["subscription"]["product"] == "pro" and body["subscription"]["status"] == "active"
        assert Subscription.objects.get(pk=old["id"]).status == "canceled"

    def test_a_downgrade_waits_for_the_period_end_then_bills_the_cheaper_plan(self, sk_client):
        make_product(sk_client, "basic", amount=1000)
        make_product(sk_client, "pro", amount=3000)
        add_card(sk_client)
        sub = subscribe(sk_client, "pro")["subscription"]
        body = subscribe(sk_client, "basic")
        assert body["invoice"] is None and body["subscription"]["product"] == "pro"
        end = Subscription.objects.get(pk=sub["id"]).current_period_end
        cycle(end + timedelta(seconds=1))
        live = Subscription.objects.get(customer__external_id="c1", status="active")
        assert live.product.slug == "basic" and live.current_period_start == end
        renewal = Invoice.objects.get(reason="renewal")
        assert (renewal.total, renewal.status, renewal.period_start) == (1000, "paid", end)

    def test_the_preview_of_a_downgrade_says_when_it_takes_effect(self, sk_client):
        make_product(sk_client, "basic", amount=1000)
        make_product(sk_client, "pro", amount=3000)
        add_card(sk_client)
        sub = subscribe(sk_client, "pro")["subscription"]
        preview = sk_client.post(f"{API}/preview-attach", {"customer": "c1", "product": "basic"}, format="json").json()
        assert (preview["scenario"], preview["dueNow"], preview["lineItems"]) == ("downgrade", 0, [])
        # The cheaper plan starts (and is first billed) when the current period ends.
        end = Subscription.objects.get(pk=sub["id"]).current_period_end
        assert preview["nextCycleAt"] is not None
        assert datetime.fromisoformat(preview["nextCycleAt"].replace("Z", "+00:00")) == end


class TestUpdateAndCancel:
    @pytest.fixture
    def pro(self, sk_client):
        make_product(sk_client, "pro", amount=3000, features=[
            {"slug": "seats", "type": "seats", "allowance": 1},
            {"slug": "tokens", "type": "metered", "allowance": 1000, "resetInterval": "billing_period"}])
        add_card(sk_client)
        return subscribe(sk_client, "pro")["subscription"]

    def update(self, client, **body):
        return client.post(f"{API}/subscriptions/update", {"customer": "c1", "product": "pro", **body}, format="json")

    def test_cancel_at_period_end_then_uncancel(self, sk_client, pro):
        body = self.update(sk_client, cancelAction="cancel_end_of_cycle").json()
        assert body["subscription"]["cancelAtPeriodEnd"] is True
        body = self.update(sk_client, cancelAction="uncancel").json()
        assert body["subscription"]["cancelAtPeriodEnd"] is False

    def test_cancel_at_period_end_ends_it_at_the_end_without_a_charge(self, sk_client, pro):
        self.update(sk_client, cancelAction="cancel_end_of_cycle")
        end = Subscription.objects.get(pk=pro["id"]).current_period_end
        cycle(end + timedelta(minutes=1))
        assert Subscription.objects.get(pk=pro["id"]).status == "canceled"
        assert Invoice.objects.count() == 1
        assert tokens().included is False

    def test_cancel_immediately_refunds_the_unused_part(self, sk_client, pro):
        body = sk_client.post(f"{API}/cancel", {"customer": "c1", "immediately": True}, format="json")
        assert body.status_code == 200, body.content
        assert body.json()["subscription"]["status"] == "canceled"
        refund = Payment.objects.get(kind="refund")
        assert 2999 <= refund.amount <= 3000
        assert Invoice.objects.get().amount_refunded == refund.amount

    def test_pause_withholds_the_features_and_resume_gives_them_back(self, sk_client, pro):
        assert self.update(sk_client, pause=True).json()["subscription"]["status"] == "paused"
        assert tokens().included is False
        assert self.update(sk_client, pause=False).json()["subscription"]["status"] == "active"
        assert tokens().granted == 1000

    def test_a_paused_subscription_is_not_renewed(self, sk_client, pro):
        self.update(sk_client, pause=True)
        end = Subscription.objects.get(pk=pro["id"]).current_period_end
        cycle(end + timedelta(days=1))
        assert Invoice.objects.count() == 1

    def test_more_seats_are_charged_prorated_and_granted(self, sk_client, pro):
        body = self.update(sk_client, quantity=3).json()
        assert body["subscription"]["quantity"] == 3
        invoice = body["invoice"]
        # 2 more seats × 3000 for (almost) the whole period.
        assert 5999 <= invoice["total"] <= 6000 and invoice["status"] == "paid"
        assert Balance.objects.get(customer__external_id="c1", feature__slug="seats").granted == 3

    def test_fewer_seats_are_refunded_prorated(self, sk_client, pro):
        self.update(sk_client, quantity=3)
        body = self.update(sk_client, quantity=2).json()
        assert body["subscription"]["quantity"] == 2
        assert 2999 <= body["refund"] <= 3000
        assert Payment.objects.filter(kind="refund").get().amount == body["refund"]

    def test_preview_update_matches_the_update(self, sk_client, pro):
        preview = sk_client.post(f"{API}/subscriptions/preview-update", {"customer": "c1", "product": "pro", "quantity": 2}, format="json").json()
        real = self.update(sk_client, quantity=2).json()["invoice"]
        assert abs(preview["total"] - real["total"]) <= 1
        assert [l["title"] for l in preview["lineItems"]] == [l["description"] for l in real["lines"]]

    def test_an_update_naming_two_changes_is_refused_and_changes_nothing(self, sk_client, pro):
        response = self.update(sk_client, quantity=2, pause=True)
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "cancelAction"
        assert Subscription.objects.get(pk=pro["id"]).quantity == 1


class TestTrials:
    def test_a_trial_without_card_requirement_starts_at_once_and_ends_without_a_card(self, sk_client):
        make_product(sk_client, "pro", amount=2000, freeTrial={"days": 14, "requirePaymentMethod": False})
        body = subscribe(sk_client, "pro")
        assert body["subscription"]["status"] == "trialing" and body["invoice"] is None
        trial_end = Subscription.objects.get().trial_end
        cycle(trial_end + timedelta(seconds=1))
        assert Subscription.objects.get().status == "expired"
        assert not Invoice.objects.exists()

    def test_a_trial_with_a_card_converts_to_paid_at_its_end(self, sk_client):
        make_product(sk_client, "pro", amount=2000, freeTrial={"days": 7, "requirePaymentMethod": True})
        body = subscribe(sk_client, "pro")
        assert body["url"] and body["subscription"]["status"] == "incomplete"
        add_card(sk_client)
        session = CheckoutSession.objects.get()
        from django.test import Client

        Client().post(f"/checkout/{session.pk}/", {"cardNumber": "4242424242424242"})
        sub = Subscription.objects.get()
        assert sub.status == "trialing"
        cycle(sub.trial_end + timedelta(seconds=1))
        sub.refresh_from_db()
        assert sub.status == "active"
        invoice = Invoice.objects.get()
        assert (invoice.total, invoice.status, invoice.period_start) == (2000, "paid", sub.trial_end)


class TestInvoicesApi:
    def test_list_and_get_invoices_with_filters(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        invoice = subscribe(sk_client, "pro")["invoice"]
        listed = sk_client.get(f"{API}/invoices?customer=c1&status=paid").json()
        assert [i["id"] for i in listed["data"]] == [invoice["id"]]
        assert sk_client.get(f"{API}/invoices?status=open").json()["data"] == []
        got = sk_client.get(f"{API}/invoices/{invoice['id']}").json()
        assert got["number"].startswith("INV-") and got["lines"][0]["unitAmount"] == 2000
        assert sk_client.get(f"{API}/invoices/pinv_nope").status_code == 404
        assert sk_client.get(f"{API}/invoices?status=bogus").status_code == 422

    def test_list_subscriptions_by_status(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        subscribe(sk_client, "pro")
        data = sk_client.get(f"{API}/subscriptions?status=active").json()["data"]
        assert [s["product"] for s in data] == ["pro"]

    def test_unknown_payment_methods_are_refused(self, sk_client):
        sk_client.post(f"{API}/customers", {"customerId": "c1"}, format="json")
        response = sk_client.post(f"{API}/customers/c1/payment-methods", {"paymentMethod": "pm_bogus"}, format="json")
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "paymentMethod"
        customer = sk_client.get(f"{API}/customers/c1").json()
        assert customer["paymentMethods"] == []


class TestPaidButSlotTaken:
    def test_a_checkout_paid_after_the_customer_took_another_plan_is_refunded_and_starts_nothing(self, sk_client, client):
        make_product(sk_client, "pro", amount=2000)
        make_product(sk_client, "free", amount=0, features=[{"slug": "tokens", "type": "metered", "allowance": 10, "resetInterval": "month"}])
        body = subscribe(sk_client, "pro")
        subscribe(sk_client, "free")  # the same group: takes the slot
        path = "/checkout/" + body["url"].split("/checkout/")[1]
        page = client.post(path, {"cardNumber": "4242424242424242"})
        assert page.status_code == 409 and b"refunded" in page.content
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "expired"
        invoice = Invoice.objects.get(pk=body["invoice"]["id"])
        assert (invoice.status, invoice.amount_paid, invoice.amount_refunded) == ("paid", 2000, 2000)
        assert Subscription.objects.get(status="active").product.slug == "free"
