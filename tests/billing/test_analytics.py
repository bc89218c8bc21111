"""Analytics on a fixed data set, every figure worked out by hand.

NOW = 2025-06-15 12:00 UTC, so the 30-day window is (2025-05-16 12:00, NOW].

USD subscriptions (customer: product, price, what happens):

    a   A   monthly 2000 × 1, since 01-10; a "once" coupon, used up (cycles left 0)
    a   D   weekly 1000 × 1, since 03-03 (same customer as A, another slot)
    b   B   monthly 1500 × 3, since 02-01
    c   C   yearly 120000 × 1, since 2024-12-01
    e   E   monthly 2000, trial 05-18 → 06-01, converted (active)
    f   F   monthly 2000, trial 05-20 → 06-03, expired at trial end (no card)
    g   G   monthly 2000, since 01-15, canceled, ended 06-05
    h   H   monthly 2000, since 04-01, 25 % coupon forever
    i   I   monthly 2000, since 02-01, paused 06-10
    l   L   monthly 2000, trialing until 06-20
    m   M   free (0), since 01-01
    n   N   monthly graduated tiers (2 × 1000, then 500) × 5, since 02-15
    o   O1  monthly 3000, since 01-01, replaced 06-07 by O2 (plan change, same slot)
    o   O2  monthly 6000, since 06-07
    x   X   incomplete since 06-12 (checkout never paid)

EUR: k   K   monthly 5000 × 2, since 03-01, fixed coupon 1000 per period, 2 cycles left
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from billing.models import Coupon, Customer, Invoice, Payment, Price, Subscription, WebhookEndpoint
from billing.selectors.analytics import analytics_summary, mrr_at, revenue_timeline
from credits.models import Wallet
from ledger import accounts
from ledger.services import credit, debit, entry_post
from tests.factories import CustomerFactory, ProductFactory

API = "/api/v1/pay"
NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


def at(month, day, hour=0, minute=0, second=0, year=2025):
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def plan(slug, amount, interval="month", currency="usd", tiers=None):
    product = ProductFactory(slug=slug, created_at=at(1, 1, year=2024), updated_at=at(1, 1, year=2024))
    Price.objects.create(version=product.current_version, type="recurring", amount=amount, currency=currency,
                         billing_interval=interval, tiers=tiers, tiers_mode="graduated" if tiers else "")
    return product


def sub(customer, product, *, created, status="active", quantity=1, slot=None, **extra):
    price = product.current_version.prices.get()
    fields = dict(customer=customer, product=product, version=product.current_version, status=status,
                  quantity=quantity, unit_amount=price.amount, currency=price.currency,
                  billing_interval=price.billing_interval, created_at=created, current_period_start=created,
                  slot=slot or f"product:{product.pk}")
    fields.update(extra)
    return Subscription.objects.create(**fields)


def coupon(code, type, value, duration, currency=""):
    return Coupon.objects.create(code=code, type=type, value=value, duration=duration, currency=currency,
                                 duration_months=3 if duration == "repeating" else None,
                                 created_at=at(1, 1), updated_at=at(1, 1))


_invoices = iter(range(1, 1000))


def payment(customer, amount, when, *, currency="usd", kind="charge", status="succeeded", invoice=None):
    if invoice is None:
        n = next(_invoices)
        invoice = Invoice.objects.create(number=f"T-{n}", customer=customer, billing_key=f"test:{n}:{customer.pk}",
                                         reason="renewal", status="paid", currency=currency, subtotal=amount,
                                         total=amount, amount_paid=amount, created_at=when, paid_at=when)
    Payment.objects.create(invoice=invoice, customer=customer, kind=kind, status=status, gateway="test",
                           idempotency_key=f"{invoice.pk}:{kind}:{when.isoformat()}", amount=amount,
                           currency=currency, created_at=when)
    return invoice


@pytest.fixture
def books(db):
    c = {name: CustomerFactory(external_id=name, created_at=at(1, 1), updated_at=at(1, 1)) for name in "abcefghilmnoxk"}
    monthly, weekly, seats, yearly = plan("monthly", 2000), plan("weekly", 1000, "week"), plan("seats", 1500), \
        plan("yearly", 120000, "year")
    tiered = plan("tiered", 0, tiers=[{"upTo": 2, "unitAmount": 1000, "flatAmount": 0},
                                      {"upTo": None, "unitAmount": 500, "flatAmount": 0}])
    free, basic, pro = plan("free", 0), plan("basic", 3000), plan("pro", 6000)
    euro = plan("euro", 5000, currency="eur")

    sub(c["a"], monthly, created=at(1, 10), coupon=coupon("ONCE", "percentage", 50, "once"), coupon_cycles_left=0)
    sub(c["a"], weekly, created=at(3, 3))
    sub(c["b"], seats, created=at(2, 1), quantity=3)
    sub(c["c"], yearly, created=at(12, 1, year=2024))
    sub(c["e"], monthly, created=at(5, 18), trial_end=at(6, 1))
    sub(c["f"], monthly, created=at(5, 20), trial_end=at(6, 3), status="expired", ended_at=at(6, 3))
    sub(c["g"], monthly, created=at(1, 15), status="canceled", canceled_at=at(6, 5), ended_at=at(6, 5))
    sub(c["h"], monthly, created=at(4, 1), coupon=coupon("QUARTER", "percentage", 25, "forever"))
    sub(c["i"], monthly, created=at(2, 1), status="paused", paused_at=at(6, 10))
    sub(c["l"], monthly, created=at(6, 6), trial_end=at(6, 20), status="trialing")
    sub(c["m"], free, created=at(1, 1))
    sub(c["n"], tiered, created=at(2, 15), quantity=5)
    sub(c["o"], basic, created=at(1, 1), slot="group:plans", status="canceled", canceled_at=at(6, 7),
        ended_at=at(6, 7))
    sub(c["o"], pro, created=at(6, 7), slot="group:plans")
    sub(c["x"], monthly, created=at(6, 12), status="incomplete", current_period_start=None)
    sub(c["k"], euro, created=at(3, 1), quantity=2,
        coupon=coupon("TENEUR", "fixed", 1000, "repeating", currency="eur"), coupon_cycles_left=2)

    # Payments (cash): one before the timeline, two on month boundaries, a
    # partial refund, a failed charge and one in euros.
    payment(c["b"], 4500, at(3, 31, 23, 59, 59))            # March: outside a 3-month timeline
    payment(c["a"], 2000, at(4, 10))                        # April
    payment(c["b"], 4500, at(5, 1))                         # May (its first instant)
    g_invoice = payment(c["g"], 2000, at(5, 10))            # May
    payment(c["e"], 2000, at(6, 1))                         # June
    payment(c["g"], 500, at(6, 5), kind="refund", invoice=g_invoice)  # June, a refund
    Invoice.objects.filter(pk=g_invoice.pk).update(amount_refunded=500)
    payment(c["h"], 1500, at(6, 2), status="failed")        # not money
    payment(c["k"], 9000, at(6, 1), currency="eur")         # euros
    return c


class TestMrr:
    def test_mrr_sums_the_monthly_value_of_paying_subscriptions_rounded_once(self, books):
        # A 2000 (its once coupon is used up)
        # D 1000 × 52/12 = 4333.333…
        # B 1500 × 3 = 4500
        # C 120000 / 12 = 10000
        # E 2000 (trial converted on 06-01)
        # H 2000 × 75 % = 1500
        # N tiers: 2 × 1000 + 3 × 500 = 3500
        # O2 6000
        # not: F (expired trial), G and O1 (ended), I (paused), L (trialing), M (free), X (incomplete)
        # 2000 + 4333.333… + 4500 + 10000 + 2000 + 1500 + 3500 + 6000 = 33833.333… → 33833
        # EUR: K (5000 × 2 − 1000) = 9000
        assert mrr_at(at=NOW) == {"usd": 33833, "eur": 9000}

    def test_mrr_in_the_past_counts_what_was_paying_then(self, books):
        # 2025-04-30 end: A 2000 + D 4333.33… + B 4500 + C 10000 + G 2000 + H 1500
        #   + I 2000 (paused later) + N 3500 + O1 3000 = 32833.333… → 32833
        assert mrr_at(at=at(4, 30, 23, 59, 59))["usd"] == 32833
        # 2025-01-05: only C 10000 + M (free: 0) + O1 3000 = 13000
        assert mrr_at(at=at(1, 5))["usd"] == 13000


class TestSummary:
    def test_every_figure_in_the_default_currency(self, books):
        result = analytics_summary(now=NOW)
        usd = result.figures
        assert result.currency == "usd"
        assert usd.mrr == 33833
        assert usd.arr == 405996                 # 12 × 33833
        # A, D, B, C, E, H, N, O2
        assert usd.active_subscriptions == 8
        # a (A and D), b, c, e, h, n, o
        assert usd.paying_customers == 7
        assert usd.arpu == 4833                  # 33833 / 7 = 4833.29 → 4833 (half up)
        # paying at 05-16 12:00: A, D, B, C, G, H, I, N, O1 = 9 (E still in trial, F too)
        # ended in the window: G (06-05) and O1 (06-07), but O1 was replaced by O2 at that instant → 1
        assert (usd.active_at_window_start, usd.churned) == (9, 1)
        assert usd.churn_rate == Decimal("0.1111")  # 1 / 9 = 0.11111…
        # trials ending in the window: E (06-01, converted), F (06-03, expired); L ends 06-20, after NOW
        assert (usd.trials_ended, usd.trials_converted) == (2, 1)
        assert usd.trial_conversion_rate == Decimal("0.5000")

    def test_the_second_currency_has_its_own_figures(self, books):
        eur = analytics_summary(now=NOW).by_currency["eur"]
        # K: 5000 × 2 = 10000 − 1000 (fixed coupon, 2 cycles left) = 9000
        assert (eur.mrr, eur.arr, eur.active_subscriptions, eur.arpu) == (9000, 108000, 1, 9000)
        # paying at the window start and still paying: 0 / 1
        assert eur.churn_rate == Decimal("0.0000")
        assert eur.trial_conversion_rate is None     # no trial ended: undefined, not 0

    def test_the_top_level_currency_can_be_chosen(self, books):
        result = analytics_summary(now=NOW, currency="eur")
        assert (result.currency, result.figures.mrr) == ("eur", 9000)
        assert set(result.by_currency) == {"usd", "eur"}

    @override_settings(BILLING_DEFAULT_CURRENCY="gbp")
    def test_a_currency_without_rows_gives_zeros(self, books):
        gbp = analytics_summary(now=NOW).figures
        assert (gbp.mrr, gbp.arr, gbp.active_subscriptions, gbp.arpu) == (0, 0, 0, 0)
        assert gbp.churn_rate is None and gbp.trial_conversion_rate is None


class TestSetBased:
    def test_the_number_of_queries_does_not_grow_with_flat_priced_subscriptions(self, books):
        def queries():
            with CaptureQueriesContext(connection) as ctx:
                analytics_summary(now=NOW)
                revenue_timeline(now=NOW, months=3)
            return len(ctx.captured_queries)

        before = queries()
        product = Subscription.objects.get(customer__external_id="a", billing_interval="month").product
        for i in range(25):
            sub(CustomerFactory(created_at=at(1, 1), updated_at=at(1, 1)), product, created=at(2, 1))
        assert queries() == before
        assert mrr_at(at=NOW)["usd"] == 33833 + 25 * 2000


class TestTimeline:
    def test_revenue_is_cash_per_calendar_month_and_mrr_is_at_each_months_end(self, books):
        points = revenue_timeline(now=NOW, months=3)
        # April: 2000 (the 4500 at 03-31 23:59:59 is March)
        # May: 4500 (at 05-01 00:00) + 2000 = 6500
        # June: 2000 − 500 (refund); the failed 1500 and the 9000 EUR are left out = 1500
        # MRR: April end 32833; May end the same (nothing started or ended in May:
        #   E and F were trialing); June at NOW 33833
        assert [(p.month, p.revenue, p.mrr) for p in points] == [
            ("2025-04", 2000, 32833),
            ("2025-05", 6500, 32833),
            ("2025-06", 1500, 33833),
        ]

    def test_a_charge_held_as_unapplied_cash_and_its_refund_are_not_revenue(self, books):
        customer = Customer.objects.get(external_id="a")
        invoice = payment(customer, 700, at(6, 2), status="succeeded")
        Invoice.objects.filter(pk=invoice.pk).update(status="void")
        charge = Payment.objects.get(invoice=invoice)
        Payment.objects.filter(pk=charge.pk).update(unapplied=True)
        Payment.objects.create(invoice=invoice, customer=customer, kind="refund", status="pending", gateway="test",
                               idempotency_key=f"{invoice.pk}:refund:1", amount=700, currency="usd",
                               refund_of=charge, created_at=at(6, 2))
        assert revenue_timeline(now=NOW, months=1)[0].revenue == 1500  # June as before: the 700 is not in it
        Payment.objects.filter(refund_of=charge).update(status="succeeded")
        assert revenue_timeline(now=NOW, months=1)[0].revenue == 1500

    def test_the_euro_timeline(self, books):
        points = revenue_timeline(now=NOW, months=2, currency="eur")
        # May end: K 9000; June: 9000 charged, MRR 9000
        assert [(p.month, p.revenue, p.mrr) for p in points] == [("2025-05", 0, 9000), ("2025-06", 9000, 9000)]

    def test_twelve_months_reach_back_into_last_year(self, books):
        points = revenue_timeline(now=NOW, months=12)
        assert [p.month for p in points][:2] == ["2024-07", "2024-08"]
        assert points[-1].month == "2025-06"
        # 2024-12 end: C (since 12-01) 10000
        assert {p.month: p.mrr for p in points}["2024-12"] == 10000


class TestApi:
    def test_analytics_route(self, books, sk_client, monkeypatch):
        monkeypatch.setattr("billing.api.views.analytics.timezone.now", lambda: NOW)
        body = sk_client.get(f"{API}/analytics").json()
        assert {k: body[k] for k in ("mrr", "arr", "activeSubscriptions", "churnRate", "arpu",
                                      "trialConversionRate", "currency")} == {
            "mrr": 33833, "arr": 405996, "activeSubscriptions": 8, "churnRate": 0.1111, "arpu": 4833,
            "trialConversionRate": 0.5, "currency": "usd"}
        assert body["byCurrency"]["eur"]["mrr"] == 9000
        assert body["byCurrency"]["eur"]["trialConversionRate"] is None

    def test_revenue_timeline_route(self, books, sk_client, monkeypatch):
        monkeypatch.setattr("billing.api.views.analytics.timezone.now", lambda: NOW)
        response = sk_client.get(f"{API}/analytics/revenue-timeline", {"months": 3})
        assert response.status_code == 200
        assert response.json() == {"currency": "usd", "data": [
            {"month": "2025-04", "revenue": 2000, "mrr": 32833},
            {"month": "2025-05", "revenue": 6500, "mrr": 32833},
            {"month": "2025-06", "revenue": 1500, "mrr": 33833},
        ]}

    def test_twelve_months_by_default(self, sk_client):
        data = sk_client.get(f"{API}/analytics/revenue-timeline").json()["data"]
        assert len(data) == 12 and all(p == {**p, "revenue": 0, "mrr": 0} for p in data)

    @pytest.mark.parametrize("months", ["0", "37", "-1", "12.5", "abc", "١٢"])
    def test_months_out_of_range_is_a_422_naming_the_field(self, sk_client, months):
        response = sk_client.get(f"{API}/analytics/revenue-timeline", {"months": months})
        assert response.status_code == 422
        body = response.json()
        assert body["error"]["code"] == "VALIDATION_ERROR"
        assert body["error"]["details"][0]["field"] == "months"

    def test_a_bad_currency_is_a_422(self, sk_client):
        response = sk_client.get(f"{API}/analytics", {"currency": "US"})
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "currency"

    def test_a_publishable_key_is_refused(self, pk_client):
        assert pk_client.get(f"{API}/analytics").status_code == 403


class TestDashboard:
    URL = "/admin/dashboard/"

    @pytest.fixture
    def console(self, books, monkeypatch):
        monkeypatch.setattr("billing.admin_dashboard.timezone.now", lambda: NOW)
        entry_post(lines=[debit(accounts.RECEIVABLE, 2900, "usd"), credit(accounts.REVENUE, 2900, "usd")],
                   memo="Invoice T-1", posted_at=at(6, 1))
        WebhookEndpoint.objects.create(url="https://hooks.example.com/broken", secret="whsec_x", status="disabled",
                                       disabled_reason="failing for 3 days", disabled_at=at(6, 14),
                                       failing_since=at(6, 11), created_at=at(1, 1), updated_at=at(6, 14))
        WebhookEndpoint.objects.create(url="https://hooks.example.com/fine", secret="whsec_y", created_at=at(1, 1),
                                       updated_at=at(1, 1))
        Wallet.objects.create(customer=books["g"], frozen=True, frozen_at=at(6, 12), frozen_by="staff:alice",
                              updated_at=at(6, 12))
        Wallet.objects.create(customer=books["h"], frozen=False, updated_at=at(6, 12))
        return books

    def test_staff_see_the_figures_chart_ledger_webhooks_and_wallets(self, admin_client, console):
        response = admin_client.get(self.URL)
        assert response.status_code == 200
        page = response.content.decode()
        figures = page[page.index('id="figures"'):page.index('id="chart"')]
        # MRR 33833 cents, ARR 405996, 8 active, churn 1/9, ARPU 4833, trials 1/2
        for text in ("$338.33", "$4,059.96", ">8<", "11.11 %", "1 of 9 ended", "$48.33", "50.00 %", "1 of 2 trials",
                     "€90.00", "€1,080.00"):
            assert text in figures, text
        chart = page[page.index('<svg xmlns'):page.index("</svg>", page.index('id="mrr-revenue-chart"'))]
        assert chart.count('class="revenue"') == 12 and chart.count('class="mrr"') == 12
        assert "2025-06 MRR $338.33" in chart and "2025-05 revenue $65.00" in chart
        # drawn on the server: no script of ours, nothing fetched from elsewhere
        assert "2024-07" in chart and "<script" not in page[page.index('id="content-main"'):]
        assert 'src="http' not in page and 'href="http' not in page.replace('href="http://www.w3.org', "")
        ledger_part = page[page.index('id="trial-balance"'):page.index('id="failing-webhooks"')]
        assert "4001" in ledger_part and "2900" in ledger_part
        webhooks = page[page.index('id="failing-webhooks"'):page.index('id="frozen-wallets"')]
        assert "hooks.example.com/broken" in webhooks and "failing for 3 days" in webhooks
        assert "hooks.example.com/fine" not in webhooks
        wallets = page[page.index('id="frozen-wallets"'):]
        assert ">g<" in wallets and "staff:alice" in wallets and ">h<" not in wallets

    def test_the_admin_index_links_to_it(self, admin_client):
        assert f'href="{self.URL}"' in admin_client.get("/admin/").content.decode()

    def test_staff_without_ledger_rights_do_not_see_the_trial_balance(self, client, console):
        user = User.objects.create_user("bob", password="pw", is_staff=True)
        client.force_login(user)
        page = client.get(self.URL).content.decode()
        assert "You may not view ledger lines." in page and "4001" not in page
        assert "$338.33" in page

    def test_others_are_sent_to_the_login_page(self, client, db):
        assert client.get(self.URL)["Location"].startswith("/admin/login/")
        client.force_login(User.objects.create_user("carol", password="pw"))  # not staff
        response = client.get(self.URL)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
