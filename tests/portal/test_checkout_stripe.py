"""The hosted checkout with the Stripe gateway, over HTTP against a real localstripe
(tests/billing/localstripe_peer.py; no mock of the ``stripe`` library).

The page collects the card as the portal's card page does (portal/stripe_card.py and
templates/stripe/card_form.html): GET makes a SetupIntent for the checkout's customer and
renders Stripe Elements; what Stripe.js then does in the browser is done here with the
stripe library straight against localstripe, and the page's form is posted with the
``pm_…``, which ``checkout_pay`` saves and charges. tests/e2e/test_checkout_stripe_browser.py
pays one in Chromium.

Also: a malformed ``paymentMethod`` is a 422 that changes nothing (Stripe is not asked),
a charge Stripe holds for 3-D Secure goes to the 3-D Secure page, which hands the
PaymentIntent's client secret (read from Stripe, never stored) to a script that runs
``stripe.confirmCardPayment`` (done here with localstripe's ``_authenticate``, which is what
its fake Stripe.js calls) and then posts "complete" (check again) or "fail" (cancel), and
only the Stripe checkout pages' CSP allows Stripe.js."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from billing.gateways import GatewayError
from billing.models import CheckoutSession, Invoice, Payment, PaymentMethod, Subscription
from portal import checkout as views
from tests.billing.billing_helpers import API, assert_books_reconcile, make_product, subscribe
from tests.billing.test_gateway_stripe import authenticate, subscribe_with
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


def pi_secret(page) -> str:
    return re.search(r'data-client-secret="(pi_\w+?_secret_\w+)"', html(page)).group(1)


@pytest.fixture
def waiting(checkout, direct):
    """The checkout paid with the 3-D Secure card: Stripe holds the charge. Its 3DS path."""
    response = Client().post(checkout, {"paymentMethod": card(direct, THREE_DS)})
    assert response.status_code == 302 and response["Location"] == checkout + "3ds/"
    return checkout + "3ds/"


class TestThreeDSecure:
    def test_the_3ds_page_confirms_the_payment_intent_with_stripe_js(self, checkout, waiting, peer, direct, caplog):
        assert Client().get(checkout)["Location"] == waiting
        page = Client().get(waiting)
        assert page.status_code == 200
        text = html(page)
        payment = Payment.objects.get()
        assert (payment.gateway, payment.status) == ("stripe", "requires_action")
        intent = direct.v1.payment_intents.retrieve(payment.gateway_ref)
        assert intent.status == "requires_action" and session_of(checkout).payment_id == payment.pk
        assert pi_secret(page) == intent.client_secret  # the secret of this payment's PaymentIntent
        assert pi_secret(page).startswith(payment.gateway_ref + "_secret_")
        assert f'<script src="{peer.url}/js.stripe.com/v3/"></script>' in text
        assert f'data-publishable-key="{PUBLISHABLE_KEY}"' in text and 'data-payment-method=""' in text
        assert "stripe.confirmCardPayment(" in text and "confirmCardSetup" not in text
        assert 'id="check-again"' in text and 'id="cancel-authentication"' in text
        assert 'id="complete"' not in text and "test gateway" not in text
        nonce = re.search(r"'nonce-([^']+)'", page["Content-Security-Policy"]).group(1)
        inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", text)
        assert inline and all(f'nonce="{nonce}"' in tag for tag in inline)
        assert not re.search(r"<[^>]+\son[a-z]+=", text)
        policy = csp(page)
        assert policy["script-src"] == f"'self' 'nonce-NONCE' {peer.url}"
        assert policy["frame-src"] == f"'self' {peer.url}" and policy["connect-src"] == f"'self' {peer.url}"
        # the secret is read for the page, never kept or logged
        assert intent.client_secret not in caplog.text
        for row in (*Payment.objects.values(), *CheckoutSession.objects.values()):
            assert "_secret_" not in str(row)

    def test_check_again_after_stripe_authenticated_pays_once_and_the_books_reconcile(self, checkout, waiting,
                                                                                         direct):
        browser = Client(enforce_csrf_checks=True)
        page = browser.get(waiting)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html(page)).group(1)
        ref = Payment.objects.get().gateway_ref
        authenticate(direct, ref)  # confirmCardPayment in the browser: localstripe's fake challenge, completed
        assert direct.v1.payment_intents.retrieve(ref).status == "succeeded"
        done = browser.post(waiting, {"csrfmiddlewaretoken": csrf, "outcome": "complete"})
        assert done.status_code == 200 and 'id="status">Payment complete' in html(done)
        assert set(csp(done)) == {"default-src", "script-src", "style-src", "img-src", "object-src", "base-uri",
                                  "frame-ancestors"}
        session = session_of(checkout)
        assert session.status == "complete" and session.invoice.status == "paid"
        assert session.invoice.amount_paid == 2000 and session.subscription.status == "active"
        payment = Payment.objects.get()
        assert (payment.status, payment.amount, payment.gateway_ref) == ("succeeded", 2000, ref)
        assert_books_reconcile()
        again = browser.post(waiting, {"csrfmiddlewaretoken": csrf, "outcome": "complete"})  # a reload
        assert again.status_code == 302 and again["Location"] == checkout
        assert Payment.objects.count() == 1 and session_of(checkout).invoice.amount_paid == 2000
        assert_books_reconcile()

    def test_check_again_before_stripe_authenticated_changes_nothing(self, checkout, waiting, direct):
        page = Client().post(waiting, {"outcome": "complete"})
        assert page.status_code == 409 and "still waits for authentication" in html(page)
        assert pi_secret(page) and "stripe.confirmCardPayment(" in html(page)  # the challenge again
        assert Payment.objects.get().status == "requires_action"
        assert_unpaid(checkout)

    @pytest.mark.parametrize("at_the_bank", ["failed", "closed"])
    def test_a_failed_or_given_up_authentication_cancels_and_another_card_pays(self, checkout, waiting, direct,
                                                                              at_the_bank):
        ref = Payment.objects.get().gateway_ref
        if at_the_bank == "failed":
            authenticate(direct, ref, success=False)
        page = Client().post(waiting, {"outcome": "fail"})  # what the script posts on result.error
        assert page.status_code == 402 and views.AUTHENTICATION_NOT_TAKEN in html(page)
        assert client_secret(page)  # the card form again
        payment = Payment.objects.get()
        assert (payment.status, payment.failure_code) == ("failed", "authentication_failed")
        assert direct.v1.payment_intents.retrieve(ref).status == "canceled"
        assert_unpaid(checkout)
        assert session_of(checkout).payment_id is None
        assert Client().get(checkout).status_code == 200 and Client().get(waiting)["Location"] == checkout
        assert_books_reconcile()
        pm = confirm_in_browser(direct, client_secret(page), SUCCESS)
        assert Client().post(checkout, {"paymentMethod": pm}).status_code == 200
        assert session_of(checkout).invoice.status == "paid" and session_of(checkout).invoice.amount_paid == 2000
        assert_books_reconcile()

    def test_when_the_cancel_fails_the_payment_still_waits_and_the_page_offers_it_again(self, checkout, waiting,
                                                                                      direct, monkeypatch):
        confirm = views.checkout_confirm

        def unreachable(**kwargs):
            raise GatewayError("The payment gateway did not complete the request.")

        monkeypatch.setattr(views, "checkout_confirm", unreachable)
        response = Client().post(waiting, {"outcome": "fail"})
        assert response.status_code == 302 and response["Location"] == waiting
        payment = Payment.objects.get()
        assert payment.status == "requires_action" and session_of(checkout).payment_id == payment.pk
        monkeypatch.setattr(views, "checkout_confirm", confirm)  # Stripe answers again
        page = Client().post(waiting, {"outcome": "fail"})
        assert page.status_code == 402 and "the payment was not taken" in html(page) and client_secret(page)
        payment.refresh_from_db()
        assert payment.status == "failed"
        assert direct.v1.payment_intents.retrieve(payment.gateway_ref).status == "canceled"
        assert_unpaid(checkout)
        assert_books_reconcile()

    def test_when_stripe_cannot_be_read_the_page_has_no_script_and_a_strict_policy(self, checkout, waiting,
                                                                                  monkeypatch):
        from billing.gateways.stripe import StripeGateway

        def unreachable(self, **kwargs):
            raise GatewayError("The payment gateway did not complete the request.")

        monkeypatch.setattr(StripeGateway, "payment_intent_client_secret", unreachable)
        page = Client().get(waiting)
        assert page.status_code == 502 and views.AUTHENTICATION_UNAVAILABLE in html(page)
        assert "<script" not in html(page) and "js.stripe.com" not in page["Content-Security-Policy"]
        assert 'id="cancel-authentication"' in html(page) and 'id="check-again"' in html(page)
        assert Payment.objects.get().status == "requires_action"

    def test_a_3ds_default_card_charged_by_subscribe_gets_the_same_page(self, peer, sk_client, direct):
        body = subscribe_with(sk_client, direct, THREE_DS)
        assert body["requiredAction"]["code"] == "3ds_required"
        path = "/checkout/" + body["url"].split("/checkout/")[1]
        assert Client().get(path)["Location"] == path + "3ds/"
        page = Client().get(path + "3ds/")
        ref = Payment.objects.get().gateway_ref
        assert page.status_code == 200 and pi_secret(page) == direct.v1.payment_intents.retrieve(ref).client_secret
        assert "stripe.confirmCardPayment(" in html(page) and peer.url in page["Content-Security-Policy"]
        authenticate(direct, ref)
        done = Client().post(path + "3ds/", {"outcome": "complete"})
        assert done.status_code == 200 and Invoice.objects.get().status == "paid"
        assert Payment.objects.count() == 1
        assert_books_reconcile()

    def test_the_test_gateways_3ds_page_is_unchanged(self, peer, sk_client, settings):
        settings.BILLING_GATEWAY = "test"
        make_product(sk_client, "pro", amount=2000)
        body = subscribe(sk_client, "pro", customer="c5")
        path = "/checkout/" + body["url"].split("/checkout/")[1]
        assert Client().post(path, {"cardNumber": THREE_DS})["Location"] == path + "3ds/"
        page = Client().get(path + "3ds/")
        assert page.status_code == 200 and 'id="complete"' in html(page) and 'id="fail"' in html(page)
        assert "This is the test gateway" in html(page) and "<script" not in html(page)
        assert set(csp(page)) == {"default-src", "script-src", "style-src", "img-src", "object-src", "base-uri",
                                  "frame-ancestors"}
        assert "Payment complete" in html(Client().post(path + "3ds/", {"outcome": "complete"}))


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
