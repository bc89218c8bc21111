"""The staff dashboard in a real browser (Debian's headless Chromium via
Playwright): a staff user logs in, the figures and the server-drawn chart are
there, the page fetches nothing from another host, and a screenshot is kept in
var/screenshots/admin/dashboard.png."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

BROWSER = "/usr/bin/chromium"

if not os.path.exists(BROWSER):
    pytest.skip(f"{BROWSER} is missing (Debian package `chromium`; .ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (requirements-dev.txt)")

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.utils import timezone  # noqa: E402

from billing.models import Invoice, Payment, Price, Subscription  # noqa: E402
from tests.e2e.conftest import TIMEOUT_MS  # noqa: E402
from tests.factories import CustomerFactory, ProductFactory  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

SHOTS = Path(settings.VAR_DIR) / "screenshots" / "admin"


def _history():
    """Eight monthly customers joining one a month, one leaving, a payment each month."""
    now = timezone.now()
    product = ProductFactory(slug="pro")
    Price.objects.create(version=product.current_version, type="recurring", amount=2500, currency="usd",
                         billing_interval="month")
    for i in range(8):
        start = now - timedelta(days=30 * (10 - i))
        customer = CustomerFactory(external_id=f"shop-{i}")
        ended = now - timedelta(days=10) if i == 0 else None
        Subscription.objects.create(customer=customer, product=product, version=product.current_version,
                                    status="canceled" if ended else "active", unit_amount=2500, currency="usd",
                                    billing_interval="month", created_at=start, current_period_start=start,
                                    ended_at=ended, slot=f"product:{product.pk}")
        for k, when in enumerate(start + timedelta(days=30 * m) for m in range(10 - i)):
            if when > now or (ended and when > ended):
                break
            invoice = Invoice.objects.create(number=f"E-{i}-{k}", customer=customer, billing_key=f"e2e:{i}:{k}",
                                             reason="renewal", status="paid", currency="usd", subtotal=2500,
                                             total=2500, amount_paid=2500, created_at=when, paid_at=when)
            Payment.objects.create(invoice=invoice, customer=customer, kind="charge", status="succeeded",
                                   gateway="test", idempotency_key=f"e2e:{i}:{k}", amount=2500, currency="usd",
                                   created_at=when)


def test_a_staff_user_sees_the_dashboard(browser, live_server):
    _history()
    User.objects.create_superuser("staff", "staff@example.com", "a-long-password")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    elsewhere = []
    page.on("request", lambda r: None if r.url.startswith(live_server.url) else elsewhere.append(r.url))
    try:
        page.goto(f"{live_server.url}/admin/")
        page.fill("#id_username", "staff")
        page.fill("#id_password", "a-long-password")
        page.click("input[type=submit]")
        page.click("#dashboard-link a")
        page.wait_for_url("**/admin/dashboard/")
        # 7 paying subscriptions × 25.00
        assert "$175.00" in page.inner_text("#figures")
        chart = page.locator("#mrr-revenue-chart")
        assert chart.is_visible()
        assert chart.locator("rect.revenue").count() == 12 and chart.locator("circle.mrr").count() == 12
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)
        assert elsewhere == []
    finally:
        context.close()
