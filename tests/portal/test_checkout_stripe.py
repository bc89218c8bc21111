"""The hosted checkout with the Stripe gateway, over HTTP against a real localstripe
(tests/billing/localstripe_peer.py; no mock of the ``stripe`` library).

The page collects the card as the portal's card page does (portal/stripe_card.py and
templates/stripe/card_form.html): GET makes a SetupIntent for the checkout's customer and
renders Stripe Elements; what Stripe.js then does in the browser is done here with the
stripe library straight against localstripe, and the page's form is posted with the
``pm_…``, which ``checkout_pay`` saves and charges. tests/e2e/test_checkout_stripe_browser.py
pays one in Chromium.

Also: a malformed ``paymentMethod`` is a 422 that changes nothing (Stripe is not asked),
a charge Stripe holds for 3-D Secure is canceled and the page says the payment was not
taken, and only the Stripe checkout page's CSP allows Stripe.js."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from billing.gateways import GatewayError
from billing.models import CheckoutSession, Payment, PaymentMethod, Subscription
from portal import checkout as views
from tests.billing.billing_helpers import API, assert_books_reconcile, make_product, subscribe
from tests.portal.test_portal_stripe import (  # noqa: F401  (fixtures)
    PUBLISHABLE_KEY, SUCCESS, card, client_secret, confirm_in_browser, csp, direct, html, localstripe, peer,
)

pytestmark = pytest.mark.django_db

DECLINED_AT_CHARGE, THREE_DS, DECLINED_AT_ATTACH = "4000000000000341", "4000002760003184", "4000000000000002"


@pytest.fixture
def checkout(peer, sk_client):
    """An open checkout of a paid plan for c1, who has no card: its path."""
    make_product(sk_client, "pro", amount=2000)
    sk_client.post(f"{API}/customers", {"customerId": "c1", "name": "Ada"}, format="json")
    body = subscribe(sk_client, "pro", customer="c1")
    return "/checkout/" + body["url"].split("/checkout/")[1]


def session_of(path: str) -> CheckoutSession:
    return CheckoutSession.objects.select_related("invoice", "subscription").get(pk=path.strip("/").split("/")[-1])


def stripe_posts(peer, prefix: str) -> list[str]:
    return [path for path, _ in peer.front.posts if path.startswith(prefix)]


def assert_unpaid(path: str) -> None:
    session = session_of(path)
    assert session.status == "open" and session.invoice.status == "open" and session.invoice.amount_paid == 0
    assert session.subscription.status == "incomplete"


class TestThePage:
    def test_get_renders_stripe_elements_with_a_setup_intent_of_the_checkouts_customer(self, checkout, peer, direct):
        page = Client().get(checkout)
        assert page.status_code == 200
        text = html(page)
        customer = session_of(checkout).customer
        intent = direct.v1.setup_intents.retrieve(client_secret(page).split("_secret_")[0])
        assert intent.customer == customer.gateway_ref and intent.customer.startswith("cus_")
        assert f'<script src="{peer.url}/js.stripe.com/v3/"></script>' in text
        assert f'data-publishable-key="{PUBLISHABLE_KEY}"' in text
        assert f'action="{checkout}"' in text and 'name="paymentMethod"' in text and 'id="pay"' in text
        assert "stripe.confirmCardSetup(" in text and 'name="cardNumber"' not in text and "Test cards" not in text
        nonce = re.search(r"'nonce-([^']+)'", page["Content-Security-Policy"]).group(1)
        inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", text)
        assert inline and all(f'nonce="{nonce}"' in tag for tag in inline)
        assert not re.search(r"<[^>]+\son[a-z]+=", text)

    def test_without_a_publishable_key_there_is_no_form_and_no_script(self, checkout, settings):
        settings.STRIPE_PUBLISHABLE_KEY = ""
        page = Client().get(checkout)
        assert page.status_code == 503 and "<script" not in html(page)
        assert "js.stripe.com" not in page["Content-Security-Policy"]


class TestPaying:
    def test_the_confirmed_card_pays_the_invoice_and_the_plan_starts(self, checkout, peer, direct):
        browser = Client(enforce_csrf_checks=True)
        page = browser.get(checkout)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html(page)).group(1)
        pm = confirm_in_browser(direct, client_secret(page), SUCCESS)
        response = browser.post(checkout, {"csrfmiddlewaretoken": csrf, "paymentMethod": pm})
        assert response.status_code == 200 and 'id="status">Payment complete' in html(response)
        session = session_of(checkout)
        assert session.status == "complete" and session.invoice.status == "paid"
        assert session.invoice.amount_paid == 2000 and session.subscription.status == "active"
        payment = Payment.objects.get(invoice=session.invoice)
        assert (payment.gateway, payment.status, payment.amount) == ("stripe", "succeeded", 2000)
        intent = direct.v1.payment_intents.retrieve(payment.gateway_ref)
        assert (intent.status, intent.amount, intent.payment_method) == ("succeeded", 2000, pm)
        assert PaymentMethod.objects.get(customer=session.customer, is_default=True).gateway_id == pm
        assert_books_reconcile()
        # a reload of the answer re-sends the form: it shows the result and charges nothing more
        again = browser.post(checkout, {"csrfmiddlewaretoken": csrf, "paymentMethod": pm})
        assert again.status_code == 302 and Payment.objects.count() == 1

    def test_with_a_success_url_the_payment_goes_back_to_it(self, peer, sk_client, direct):
        make_product(sk_client, "pro", amount=2000)
        body = subscribe(sk_client, "pro", customer="c9", successUrl="https://shop.example/ok")
        path = "/checkout/" + body["url"].split("/checkout/")[1]
        pm = confirm_in_browser(direct, client_secret(Client().get(path)), SUCCESS)
        response = Client().post(path, {"paymentMethod": pm})
        assert response.status_code == 302 and response["Location"] == "https://shop.example/ok"
        assert session_of(path).invoice.status == "paid"

    def test_a_card_declined_at_the_charge_is_a_402_with_the_message_and_another_card_pays(self, checkout, direct):
        page = Client().post(checkout, {"paymentMethod": card(direct, DECLINED_AT_CHARGE)})
        assert page.status_code == 402 and "Your card was declined. Try another card." in html(page)
        assert client_secret(page)  # a fresh form
        assert_unpaid(checkout)
        assert Payment.objects.get().status == "failed"
        pm = confirm_in_browser(direct, client_secret(page), SUCCESS)
        assert Client().post(checkout, {"paymentMethod": pm}).status_code == 200
        assert session_of(checkout).invoice.status == "paid"
        assert_books_reconcile()

    def test_a_card_stripe_refuses_to_save_is_a_422_on_the_page(self, checkout, direct):
        page = Client().post(checkout, {"paymentMethod": card(direct, DECLINED_AT_ATTACH)})
        assert page.status_code == 422 and "the card was declined" in html(page)
        assert_unpaid(checkout)
        assert not Payment.objects.exists() and not PaymentMethod.objects.exists()

    def test_3ds_is_canceled_and_the_page_says_the_payment_was_not_taken(self, checkout, peer, direct):
        page = Client().post(checkout, {"paymentMethod": card(direct, THREE_DS)})
        assert page.status_code == 402
        assert "Your bank asked to authenticate this payment (3-D Secure)" in html(page)
        assert "the payment was not taken" in html(page)
        assert client_secret(page)  # the form again, for another card
        assert_unpaid(checkout)
        assert session_of(checkout).payment_id is None
        payment = Payment.objects.get()
        assert (payment.gateway, payment.status) == ("stripe", "failed")
        assert direct.v1.payment_intents.retrieve(payment.gateway_ref).status == "canceled"
        assert Client().get(checkout).status_code == 200  # no redirect to the test gateway's 3-D Secure page
        assert_books_reconcile()
        pm = confirm_in_browser(direct, client_secret(page), SUCCESS)
        assert Client().post(checkout, {"paymentMethod": pm}).status_code == 200
        assert session_of(checkout).invoice.status == "paid"
        assert_books_reconcile()

    def test_when_the_cancel_fails_the_3ds_page_says_so_and_offers_it_again(self, checkout, peer, direct,
                                                                            monkeypatch):
        confirm = views.checkout_confirm

        def unreachable(**kwargs):
            raise GatewayError("The payment gateway did not complete the request.")

        monkeypatch.setattr(views, "checkout_confirm", unreachable)
        response = Client().post(checkout, {"paymentMethod": card(direct, THREE_DS)})
        assert response.status_code == 302 and response["Location"] == checkout + "3ds/"
        assert Client().get(checkout)["Location"] == checkout + "3ds/"
        page = Client().get(checkout + "3ds/")
        assert page.status_code == 402 and "Nothing has been charged" in html(page)
        assert 'id="cancel-authentication"' in html(page) and 'id="check-again"' in html(page)
        assert 'id="complete"' not in html(page)
        assert "test gateway" not in html(page)
        payment = Payment.objects.get()
        assert payment.status == "requires_action" and session_of(checkout).payment_id == payment.pk
        monkeypatch.setattr(views, "checkout_confirm", confirm)  # Stripe answers again
        page = Client().post(checkout + "3ds/", {"outcome": "fail"})
        assert page.status_code == 402 and "the payment was not taken" in html(page) and client_secret(page)
        payment.refresh_from_db()
        assert payment.status == "failed"
        assert direct.v1.payment_intents.retrieve(payment.gateway_ref).status == "canceled"
        assert_unpaid(checkout)
        assert_books_reconcile()

    def test_a_trial_checkout_saves_the_card_and_starts_the_trial(self, peer, sk_client, direct):
        make_product(sk_client, "trialpro", amount=2000, freeTrial={"days": 14, "requirePaymentMethod": True})
        body = subscribe(sk_client, "trialpro", customer="c1")
        path = "/checkout/" + body["url"].split("/checkout/")[1]
        page = Client().get(path)
        assert page.status_code == 200 and ">Save card</button>" in html(page)
        pm = confirm_in_browser(direct, client_secret(page), SUCCESS)
        response = Client().post(path, {"paymentMethod": pm})
        assert response.status_code == 200 and "Card saved" in html(response)
        assert Subscription.objects.get().status == "trialing"
        assert PaymentMethod.objects.get(is_default=True).gateway_id == pm


class TestBadInput:
    @pytest.mark.parametrize("value", [
        "", "card_1234", "pm_", "PM_1234", "pm_" + "a" * 253, "pm_abc def", "pm_<script>", "pm_abc/../cus_1",
        "seti_123_secret_456", "4242424242424242",
    ])
    def test_a_malformed_payment_method_is_a_422_that_changes_nothing(self, checkout, peer, value):
        before = list(peer.front.posts)
        page = Client().post(checkout, {"paymentMethod": value})
        assert page.status_code == 422 and "paymentMethod:" in html(page)
        assert_unpaid(checkout)
        assert not Payment.objects.exists() and not PaymentMethod.objects.exists()
        new_posts = [path for path, _ in peer.front.posts[len(before):]]
        # Stripe was asked for no attach and no charge, only for the fresh form's SetupIntent
        assert [p for p in new_posts if p.startswith(("/v1/payment_methods", "/v1/payment_intents"))] == []
        assert "/v1/setup_intents" in new_posts

    def test_a_card_number_is_not_taken_with_the_stripe_gateway(self, checkout, peer):
        page = Client().post(checkout, {"cardNumber": SUCCESS})
        assert page.status_code == 422 and "paymentMethod: no card was sent" in html(page)
        assert_unpaid(checkout) and stripe_posts(peer, "/v1/payment_intents") == []


class TestContentSecurityPolicy:
    def test_only_the_stripe_checkout_page_allows_stripe_js(self, checkout, peer):
        page = csp(Client().get(checkout))
        assert page["script-src"] == f"'self' 'nonce-NONCE' {peer.url}"
        assert page["frame-src"] == f"'self' {peer.url}"
        assert page["connect-src"] == f"'self' {peer.url}"
        assert "unsafe-inline" not in str(page) and "unsafe-eval" not in str(page)

    def test_the_test_gateways_checkout_and_a_finished_one_stay_strict(self, checkout, peer, direct, settings,
                                                                          sk_client):
        strict = {"default-src", "script-src", "style-src", "img-src", "object-src", "base-uri", "frame-ancestors"}
        pm = confirm_in_browser(direct, client_secret(Client().get(checkout)), SUCCESS)
        done = Client().post(checkout, {"paymentMethod": pm})
        assert done.status_code == 200 and set(csp(done)) == strict
        assert csp(done)["script-src"] == "'self' 'nonce-NONCE'"
        assert set(csp(Client().get(checkout))) == strict  # the paid page
        settings.BILLING_GATEWAY = "test"
        body = subscribe(sk_client, "pro", customer="c2")
        page = Client().get("/checkout/" + body["url"].split("/checkout/")[1])
        assert page.status_code == 200 and 'name="cardNumber"' in html(page) and "<script" not in html(page)
        assert set(csp(page)) == strict and csp(page)["script-src"] == "'self' 'nonce-NONCE'"
