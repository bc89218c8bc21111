"""The hosted checkout with the Stripe gateway in a real browser: Debian's headless Chromium,
driven by Playwright, against the live server, with localstripe as Stripe and its fake
Stripe.js (as in test_portal_stripe_browser.py, whose fixtures this reuses).

A subscription made over the API without a card answers a checkout url; the page loads
Stripe.js under its Content-Security-Policy, the card is typed into the fake card field
(16 digits, no spaces), the page's script confirms the SetupIntent and posts the pm_…, and
the checkout charges it: the done page, the invoice paid, the plan active, and the books
reconcile. The 3-D Secure card (4000 0027 6000 3184) goes on to the 3-D Secure page, whose
script runs confirmCardPayment; localstripe's fake challenge is completed there and the
checkout ends paid. Any CSP violation, script error or 4xx/5xx response fails the test."""

from __future__ import annotations

import os

import pytest

BROWSER = "/usr/bin/chromium"

if not os.path.exists(BROWSER):
    pytest.skip(f"{BROWSER} is missing (Debian package `chromium`; .ci/run installs it)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (requirements-dev.txt)")

from billing.models import CheckoutSession, Invoice, Payment, PaymentMethod, Subscription  # noqa: E402
from tests.billing.billing_helpers import assert_books_reconcile  # noqa: E402
from tests.e2e.test_checkout_browser import api, make_product, subscribe  # noqa: E402,F401  (api: a fixture)
from tests.e2e.test_portal_stripe_browser import direct, localstripe, page, peer, shot, type_card  # noqa: E402,F401

pytestmark = pytest.mark.django_db(transaction=True)


class TestStripeCheckoutInChromium:
    def test_a_card_typed_into_stripe_elements_pays_the_checkout(self, peer, api, page, direct):
        make_product(api)
        body = subscribe(api)
        response = page.goto(body["url"])
        assert response.status == 200
        assert peer.url in response.headers["content-security-policy"]
        assert page.locator("#total").inner_text() == "2000"
        page.locator('#card-element input[placeholder="number"]').wait_for()  # Stripe.js loaded and mounted
        type_card(page, "4242424242424242")
        shot(page, "15-stripe-checkout-form")

        page.click("#pay")
        page.locator("#status").wait_for()
        assert page.locator("#status").inner_text() == "Payment complete"
        assert page.url == body["url"]
        shot(page, "16-stripe-checkout-paid")

        invoice = Invoice.objects.get(pk=body["invoice"]["id"])
        assert (invoice.status, invoice.amount_paid) == ("paid", 2000)
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "active"
        assert CheckoutSession.objects.get().status == "complete"
        payment = Payment.objects.get(invoice=invoice)
        assert (payment.gateway, payment.status, payment.amount) == ("stripe", "succeeded", 2000)
        intent = direct.v1.payment_intents.retrieve(payment.gateway_ref)
        assert (intent.status, intent.amount) == ("succeeded", 2000)
        saved = PaymentMethod.objects.get(is_default=True)
        assert (saved.gateway, saved.last4, saved.gateway_id) == ("stripe", "4242", intent.payment_method)
        assert_books_reconcile()
        assert page.problems == []  # no CSP violation, no script error, no failed request

    def test_a_3ds_card_is_authenticated_with_stripe_js_and_pays_the_checkout(self, peer, api, page, direct):
        """4000 0027 6000 3184: localstripe's fake Stripe.js first challenges the card's SetupIntent
        (confirmCardSetup), then localstripe holds the off-session charge (requires_action), the
        3-D Secure page's script runs confirmCardPayment with the PaymentIntent's client secret,
        localstripe's fake Stripe.js shows its challenge, and "Complete authentication" there
        authenticates the PaymentIntent; the page then posts "check again" and the server,
        reading the PaymentIntent's status, marks the invoice paid."""
        make_product(api)
        body = subscribe(api)
        page.goto(body["url"])
        page.locator('#card-element input[placeholder="number"]').wait_for()
        type_card(page, "4000002760003184")
        page.click("#pay")
        challenge = page.get_by_role("button", name="Complete authentication")  # localstripe's fake 3-D Secure
        challenge.wait_for()  # saving the card: the SetupIntent's challenge, on the checkout page
        assert page.url == body["url"]
        challenge.click()

        page.wait_for_url(body["url"] + "3ds/")
        challenge.wait_for()  # the payment's: confirmCardPayment with the PaymentIntent's client secret
        payment = Payment.objects.get()
        assert (payment.gateway, payment.status) == ("stripe", "requires_action")
        assert direct.v1.payment_intents.retrieve(payment.gateway_ref).status == "requires_action"
        shot(page, "17-stripe-checkout-3ds-challenge")

        challenge.click()
        page.locator("#status").wait_for()
        assert page.locator("#status").inner_text() == "Payment complete"
        shot(page, "18-stripe-checkout-3ds-paid")

        invoice = Invoice.objects.get(pk=body["invoice"]["id"])
        assert (invoice.status, invoice.amount_paid) == ("paid", 2000)
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "active"
        assert CheckoutSession.objects.get().status == "complete"
        payment.refresh_from_db()
        assert (payment.status, payment.amount, Payment.objects.count()) == ("succeeded", 2000, 1)
        assert direct.v1.payment_intents.retrieve(payment.gateway_ref).status == "succeeded"
        assert_books_reconcile()
        assert page.problems == []  # no CSP violation, no script error, no failed request
