"""The portal's card page with the Stripe gateway in a real browser: Debian's headless
Chromium, driven by Playwright, against the live server, with localstripe as Stripe
(tests/billing/localstripe_peer.py) and its fake Stripe.js (STRIPE_JS_URL = localstripe's
/js.stripe.com/v3/, which calls the API at its own origin).

The page loads Stripe.js under its Content-Security-Policy, mounts the card field, and its
script confirms the SetupIntent with the card typed and posts the pm_… to the portal; the
portal saves it as the default card (at localstripe too) and the overview says so. The fake
card field is five plain inputs (number, exp_month, exp_year, cvc, postal_code); its number
must be the 16 digits without spaces. Any CSP violation reported in the browser fails the test.

Screenshots go to var/screenshots/portal/ (git-ignored), as for the other portal pages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BROWSER = "/usr/bin/chromium"

if not os.path.exists(BROWSER):
    pytest.skip(f"{BROWSER} is missing (Debian package `chromium`; .ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (requirements-dev.txt)")

import requests  # noqa: E402
from django.conf import settings as django_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from billing.models import Customer, PaymentMethod  # noqa: E402
from billing.services.api_keys import api_key_create  # noqa: E402
from tests.billing.billing_helpers import API  # noqa: E402
from tests.billing.localstripe_peer import running_localstripe  # noqa: E402
from tests.e2e.conftest import TIMEOUT_MS  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

SCREENSHOTS = Path(django_settings.BASE_DIR) / "var" / "screenshots" / "portal"


@pytest.fixture(scope="module")
def localstripe():
    yield from running_localstripe()


@pytest.fixture
def peer(localstripe, settings, live_server):
    settings.PUBLIC_BASE_URL = live_server.url
    return localstripe.use_as_gateway(settings, stripe_js=True)


@pytest.fixture
def direct(localstripe):
    return localstripe.direct_client()


@pytest.fixture
def portal_url(peer, live_server):
    """A customer with no card, and its portal link, made over the merchant API."""
    _, raw = api_key_create(name="portal stripe browser test", type="secret", now=timezone.now())
    with requests.Session() as api:
        api.headers["Authorization"] = f"Bearer {raw}"
        base = f"{live_server.url}{API}"
        initech = {"customerId": "initech", "name": "Initech", "email": "ap@initech.test"}
        created = api.post(f"{base}/customers", json=initech, timeout=10)
        assert created.status_code == 201, created.text
        made = api.post(f"{base}/portal", json={"customer": "initech"}, timeout=10)
        assert made.status_code in (200, 201), made.text
        return made.json()["url"]


@pytest.fixture
def page(browser):
    """A page that records every console error, page error (a CSP violation is one) and 4xx/5xx response."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.problems = []
    # "Failed to load resource" comes with no url (Chromium's /favicon.ico is one, which Playwright does
    # not report as a response): failed loads of the page's own resources are taken from "response".
    page.on("console", lambda msg: msg.type == "error" and not msg.text.startswith("Failed to load resource")
            and page.problems.append(msg.text))
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    page.on("response", lambda r: r.status >= 400 and page.problems.append(f"{r.status} {r.url}"))
    yield page
    context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    print(f"\nscreenshot: {SCREENSHOTS / name}.png")


def type_card(page, number: str) -> None:
    field = page.locator("#card-element")
    field.locator('input[placeholder="number"]').fill(number)
    field.locator('input[placeholder="exp_month"]').fill("12")
    field.locator('input[placeholder="exp_year"]').fill("34")
    field.locator('input[placeholder="cvc"]').fill("123")
    field.locator('input[placeholder="postal_code"]').fill("75001")


class TestStripeCardPageInChromium:
    def test_a_card_typed_into_stripe_elements_becomes_the_default(self, portal_url, page, direct):
        response = page.goto(portal_url + "payment-method/")
        assert response.status == 200
        assert f"script-src 'self' 'nonce-" in response.headers["content-security-policy"]
        page.locator('#card-element input[placeholder="number"]').wait_for()  # Stripe.js loaded and mounted
        assert "You have no card on file" in page.locator("#card-on-file").inner_text()
        type_card(page, "4242424242424242")
        shot(page, "12-stripe-card-form")

        page.click("#save-card")
        page.wait_for_url(portal_url)
        assert "Visa card ending 4242" in page.locator("#notice").inner_text()
        shot(page, "13-stripe-card-saved")

        customer = Customer.objects.get(external_id="initech")
        saved = PaymentMethod.objects.get(customer=customer, is_default=True)
        assert (saved.gateway, saved.brand, saved.last4) == ("stripe", "visa", "4242")
        at_stripe = direct.v1.customers.retrieve(customer.gateway_ref)
        assert at_stripe.invoice_settings.default_payment_method == saved.gateway_id
        pm = direct.v1.payment_methods.retrieve(saved.gateway_id)
        assert (pm.customer, pm.card.last4) == (customer.gateway_ref, "4242")
        assert page.problems == []  # no CSP violation, no script error

    def test_a_card_stripe_declines_shows_stripes_message_and_saves_nothing(self, portal_url, page, direct):
        page.goto(portal_url + "payment-method/")
        type_card(page, "4000000000000002")
        page.click("#save-card")
        errors = page.locator("#card-errors")
        errors.wait_for(state="visible")
        assert "declined" in errors.inner_text()
        assert page.url == portal_url + "payment-method/"
        assert page.locator("#save-card").is_enabled()
        shot(page, "14-stripe-card-declined")
        assert not PaymentMethod.objects.exists()
        customer = Customer.objects.get(external_id="initech")
        assert direct.v1.customers.retrieve(customer.gateway_ref).invoice_settings.default_payment_method is None
        # the 402 from localstripe is the only console error: none from the page's policy
        assert [p for p in page.problems if "Content Security Policy" in p or "Refused" in p] == []
