"""The test gateway's hosted checkout in a real browser: Debian's headless Chromium,
driven by Playwright, against the live server. Subscriptions are made over HTTP with a
secret key; the checkout url they return is opened in the browser and paid with the
test cards (success, decline, 3-D Secure, and a card saved for a trial).
After every test the books reconcile."""

from __future__ import annotations

import os
import re

import pytest

BROWSER = "/usr/bin/chromium"

if not os.path.exists(BROWSER):
    pytest.skip(f"{BROWSER} is missing (Debian package `chromium`; .ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (requirements-dev.txt)")

import requests  # noqa: E402
from django.utils import timezone  # noqa: E402

from billing.models import CheckoutSession, Invoice, Payment, Subscription  # noqa: E402
from billing.services.api_keys import api_key_create  # noqa: E402
from tests.billing.billing_helpers import API, assert_books_reconcile  # noqa: E402
from tests.e2e.conftest import TIMEOUT_MS  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

SUCCESS = "4242 4242 4242 4242"
DECLINED = "4000 0000 0000 0002"
THREE_DS = "4000 0027 6000 3184"


@pytest.fixture
def page(browser):
    # A phone-sized viewport: the page must work there too.
    context = browser.new_context(viewport={"width": 390, "height": 844})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def api(live_server, settings):
    """A requests session on the live server holding a fresh secret key; checkout
    urls point at the live server."""
    settings.PUBLIC_BASE_URL = live_server.url
    _, raw = api_key_create(name="browser test", type="secret", now=timezone.now())
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {raw}"
    session.base = f"{live_server.url}{API}"
    yield session
    session.close()
    assert_books_reconcile()


def make_product(api, slug="pro", amount=2000, **extra):
    body = {"name": slug.title(), "slug": slug, "group": "plans",
            "prices": [{"type": "recurring", "amount": amount, "billingInterval": "month"}],
            "features": [{"slug": "tokens", "type": "metered", "allowance": 1000, "resetInterval": "billing_period"}],
            **extra}
    response = api.post(f"{api.base}/products", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def subscribe(api, product="pro", customer="c1", **extra):
    response = api.post(f"{api.base}/subscribe", json={"customer": customer, "product": product, **extra}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["url"] and body["subscription"]["status"] == "incomplete", body
    return body


def pay(page, card):
    page.fill("#cardNumber", card)
    page.click("#pay")
    page.wait_for_load_state()


def status_of(body) -> str:
    return Subscription.objects.get(pk=body["subscription"]["id"]).status


class TestCheckoutInChromium:
    def test_the_success_card_pays_and_returns_to_the_success_url(self, api, page, live_server):
        make_product(api)
        body = subscribe(api, successUrl=f"{live_server.url}/healthz")
        assert body["url"].startswith(live_server.url)
        page.goto(body["url"])
        assert page.locator("#total").inner_text() == "2000"
        assert page.get_by_label("Card number").is_visible()
        pay(page, SUCCESS)
        page.wait_for_url(f"{live_server.url}/healthz")
        assert status_of(body) == "active"
        invoice = Invoice.objects.get(pk=body["invoice"]["id"])
        assert (invoice.status, invoice.amount_paid) == ("paid", 2000)
        assert CheckoutSession.objects.get().status == "complete"

    def test_without_a_success_url_the_page_says_payment_complete_and_a_reload_charges_nothing(self, api, page):
        make_product(api)
        body = subscribe(api)
        page.goto(body["url"])
        pay(page, SUCCESS)
        assert page.locator("#status").inner_text() == "Payment complete"
        assert status_of(body) == "active"
        page.reload()  # re-sends the form
        assert page.locator("#status").inner_text() == "Payment complete"
        page.goto(body["url"])
        assert page.locator("#status").inner_text() == "Payment complete" and page.locator("#pay").count() == 0
        page.goto(body["url"] + "3ds/")
        assert page.url == body["url"]
        assert Payment.objects.filter(kind="charge").count() == 1

    def test_a_declined_card_shows_the_error_activates_nothing_and_a_retry_succeeds(self, api, page):
        make_product(api)
        body = subscribe(api)
        page.goto(body["url"])
        pay(page, DECLINED)
        assert "declined" in page.locator("#error").inner_text()
        assert status_of(body) == "incomplete"
        assert not Subscription.objects.filter(status="active").exists()
        assert Invoice.objects.get(pk=body["invoice"]["id"]).status == "open"
        assert page.locator("#cardNumber").input_value() == ""
        pay(page, SUCCESS)
        assert page.locator("#status").inner_text() == "Payment complete"
        assert status_of(body) == "active"
        assert Invoice.objects.get(pk=body["invoice"]["id"]).status == "paid"
        assert sorted(Payment.objects.values_list("status", flat=True)) == ["failed", "succeeded"]

    def test_a_3ds_card_lands_on_the_confirm_page_and_completing_it_activates(self, api, page, live_server):
        make_product(api)
        body = subscribe(api, successUrl=f"{live_server.url}/healthz")
        page.goto(body["url"])
        pay(page, THREE_DS)
        page.wait_for_url(re.compile(r".*/3ds/$"))
        assert page.locator("#amount").inner_text() == "2000"
        assert status_of(body) == "incomplete"
        page.click("#complete")
        page.wait_for_url(f"{live_server.url}/healthz")
        assert status_of(body) == "active"
        assert Invoice.objects.get(pk=body["invoice"]["id"]).status == "paid"

    def test_failing_3ds_shows_an_error_activates_nothing_and_another_card_then_pays(self, api, page):
        make_product(api)
        body = subscribe(api)
        page.goto(body["url"])
        pay(page, THREE_DS)
        page.wait_for_url(re.compile(r".*/3ds/$"))
        page.click("#fail")
        page.wait_for_load_state()
        assert "Authentication failed" in page.locator("#error").inner_text()
        assert status_of(body) == "incomplete"
        assert Invoice.objects.get(pk=body["invoice"]["id"]).status == "open"
        assert Payment.objects.get().status == "failed"
        pay(page, SUCCESS)
        assert page.locator("#status").inner_text() == "Payment complete"
        assert status_of(body) == "active"

    def test_a_trial_that_requires_a_card_saves_it_and_starts_trialing(self, api, page):
        make_product(api, freeTrial={"days": 7, "requirePaymentMethod": True})
        body = subscribe(api)
        assert body["invoice"] is None
        page.goto(body["url"])
        assert page.locator("#pay").inner_text() == "Save card"
        pay(page, SUCCESS)
        assert page.locator("#status").inner_text() == "Card saved"
        sub = Subscription.objects.get(pk=body["subscription"]["id"])
        assert sub.status == "trialing" and sub.trial_end is not None
        assert sub.customer.payment_methods.filter(is_default=True).exists()
        assert not Invoice.objects.exists() and not Payment.objects.exists()
