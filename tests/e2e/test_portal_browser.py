"""The customer portal in a real browser: Debian's headless Chromium, driven by
Playwright, against the live server. The merchant side (catalog, customer,
card, subscription, usage, the portal link) is made over HTTP with a secret
key; the customer side is clicked through in the browser: balances and the
usage chart, an upgrade previewed and confirmed, cancel and keep, an invoice
PDF downloaded, the card page, and an expired and a tampered link refused.

A full-page screenshot of every page is saved under var/screenshots/portal/
(git-ignored) for a person to look at; the folder is printed."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest

BROWSER = "/usr/bin/chromium"

if not os.path.exists(BROWSER):
    pytest.skip(f"{BROWSER} is missing (Debian package `chromium`; .ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (requirements-dev.txt)")

import requests  # noqa: E402
from django.conf import settings as django_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from billing.models import Customer, Invoice, Subscription  # noqa: E402
from billing.services.api_keys import api_key_create  # noqa: E402
from portal.tokens import portal_token_make  # noqa: E402
from tests.billing.billing_helpers import API, assert_books_reconcile  # noqa: E402
from tests.e2e.conftest import TIMEOUT_MS  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

SCREENSHOTS = Path(django_settings.BASE_DIR) / "var" / "screenshots" / "portal"
RETURN_URL = "https://app.example.com/settings/billing"


@pytest.fixture(scope="module", autouse=True)
def screenshots_folder():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nportal screenshots: {SCREENSHOTS}")


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def api(live_server, settings):
    settings.PUBLIC_BASE_URL = live_server.url
    _, raw = api_key_create(name="portal browser test", type="secret", now=timezone.now())
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {raw}"
    session.base = f"{live_server.url}{API}"
    yield session
    session.close()
    assert_books_reconcile()


def call(api, method, path, body=None, expect=(200, 201)):
    response = api.request(method, f"{api.base}/{path}", json=body, timeout=10)
    assert response.status_code in expect, response.text
    return response.json()


@pytest.fixture
def acme(api):
    """Acme pays for Basic with the test card and used some tokens over the last days."""
    features = [{"slug": "tokens", "type": "metered", "allowance": 1000, "resetInterval": "billing_period"}]
    call(api, "POST", "products", {"name": "Basic", "slug": "basic", "group": "plans", "features": features,
                                   "prices": [{"type": "recurring", "amount": 1000, "billingInterval": "month"}]})
    call(api, "POST", "products", {"name": "Pro", "slug": "pro", "group": "plans",
                                   "features": [{"slug": "tokens", "type": "metered", "allowance": 10000, "resetInterval": "billing_period"},
                                                {"slug": "seats", "type": "metered", "allowanceType": "unlimited"}],
                                   "prices": [{"type": "recurring", "amount": 3000, "billingInterval": "month"}]})
    call(api, "POST", "customers", {"customerId": "acme", "name": "Acme Corp", "email": "billing@acme.test"})
    call(api, "POST", "customers/acme/payment-methods", {"paymentMethod": "pm_card_visa"})
    assert call(api, "POST", "subscribe", {"customer": "acme", "product": "basic"})["subscription"]["status"] == "active"
    now = timezone.now()
    for days_ago, amount in ((0, 120), (1, 80), (2, 45), (5, 60), (9, 30)):
        call(api, "POST", "track", {"customer": "acme", "feature": "tokens", "amount": amount,
                                    "timestamp": (now - timedelta(days=days_ago)).isoformat()})
    return api


def portal_link(api, customer="acme") -> str:
    return call(api, "POST", "portal", {"customer": customer, "returnUrl": RETURN_URL})["url"]


def live_sub(customer="acme") -> Subscription:
    return Subscription.objects.select_related("product").get(customer__external_id=customer, status__in=Subscription.LIVE_STATUSES)


class TestPortalInChromium:
    def test_balances_then_an_upgrade_previewed_and_confirmed(self, acme, page):
        url = portal_link(acme)
        page.goto(url)
        tokens = page.locator('#balances [data-feature="tokens"]')
        assert tokens.locator(".used").inner_text() == "335"
        assert tokens.locator(".granted").inner_text() == "1,000"
        assert tokens.locator(".remaining").inner_text() == "665 remaining"
        assert page.locator('#usage [data-feature="tokens"] rect.bar').count() == 30
        assert page.get_by_role("link", name="Back to app.example.com").get_attribute("href") == RETURN_URL
        shot(page, "01-overview")

        page.get_by_role("link", name="Plans", exact=True).click()
        assert page.locator('[data-plan="basic"]').get_attribute("data-scenario") == "current"
        assert page.locator('[data-plan="pro"]').get_attribute("data-scenario") == "upgrade"
        shot(page, "02-plans")

        page.click("#choose-pro")
        page.wait_for_url(re.compile(r".*/plans/pro/$"))
        rows = page.locator("#lines tbody tr")
        assert rows.count() == 2
        assert rows.nth(0).locator("td").nth(0).inner_text() == "Pro (monthly)"
        assert rows.nth(1).locator("td").nth(0).inner_text() == "Unused time on Basic"
        due = int(page.locator("#due").get_attribute("data-amount"))
        assert 0 < due < 3000
        shot(page, "03-preview-upgrade")

        page.click("#confirm")
        page.wait_for_url(url)
        assert "You are now on Pro" in page.locator("#notice").inner_text()
        assert live_sub().product.slug == "pro"
        upgrade = Invoice.objects.get(reason="upgrade")
        assert upgrade.status == "paid" and abs(upgrade.total - due) <= 1  # quoted a moment earlier
        assert page.locator('#balances [data-feature="seats"]').inner_text().count("Unlimited") == 1
        shot(page, "04-after-upgrade")

    def test_cancel_at_period_end_and_keep(self, acme, page):
        url = portal_link(acme)
        page.goto(url)
        page.click("#cancel-basic")
        page.wait_for_url(re.compile(r".*/cancel/$"))
        shot(page, "05-cancel-confirm")
        page.click("#confirm-cancel")
        page.wait_for_url(url)
        sub = live_sub()
        assert sub.cancel_at_period_end
        assert f"Ends on {sub.current_period_end:%-d %B %Y}" in page.locator("#plans-held").inner_text()
        shot(page, "06-cancelled")
        page.click("#keep-basic")
        page.wait_for_url(url)
        assert "will renew as usual" in page.locator("#notice").inner_text()
        assert not live_sub().cancel_at_period_end
        assert "Renews on" in page.locator("#plans-held").inner_text()

    def test_download_an_invoice_pdf(self, acme, page):
        invoice = Invoice.objects.get()
        page.goto(portal_link(acme))
        page.get_by_role("link", name="Invoices").click()
        assert invoice.number in page.locator("#invoices").inner_text()
        shot(page, "07-invoices")
        page.get_by_role("link", name=invoice.number).click()
        assert page.locator("#invoice-number").inner_text() == f"Invoice {invoice.number}"
        shot(page, "08-invoice")
        with page.expect_download() as info:
            page.click("#download-pdf")
        download = info.value
        assert download.suggested_filename == f"invoice-{invoice.number}.pdf"
        body = Path(download.path()).read_bytes()
        (SCREENSHOTS / download.suggested_filename).write_bytes(body)
        assert body.startswith(b"%PDF-") and invoice.number.encode() in body

    def test_an_upgrade_without_a_card_is_paid_on_the_hosted_checkout_and_comes_back(self, acme, page):
        call(acme, "POST", "customers", {"customerId": "globex", "name": "Globex"})
        url = portal_link(acme, "globex")
        page.goto(url + "payment-method/")
        shot(page, "09-payment-method")
        page.goto(url + "plans/basic/")
        assert "no card on file" in page.locator("form").inner_text()
        page.click("#confirm")
        page.wait_for_url(re.compile(r".*/checkout/pcs_\w+/$"))
        page.fill("#cardNumber", "4242 4242 4242 4242")
        page.click("#pay")
        page.wait_for_url(url)
        assert live_sub("globex").product.slug == "basic"
        assert page.locator('#balances [data-feature="tokens"] .granted').inner_text() == "1,000"

    def test_an_expired_and_a_tampered_link_are_refused(self, acme, page, live_server):
        acme_pk = Customer.objects.get(external_id="acme").pk
        expired = portal_token_make(customer_pk=acme_pk, now=timezone.now() - timedelta(hours=2))
        response = page.goto(f"{live_server.url}/portal/{expired}/")
        assert response.status == 403
        assert page.locator("h1").inner_text() == "This link has expired"
        assert "Acme Corp" not in page.content()
        shot(page, "10-expired")

        token = urlparse(portal_link(acme)).path.split("/")[2]
        response = page.goto(f"{live_server.url}/portal/{token[:-4]}AAAA/invoices/")
        assert response.status == 403
        assert page.locator("h1").inner_text() == "This link is not valid"
        shot(page, "11-tampered")
