"""Worked examples of the money rules: proration, tiers, coupons and overage.

Each test writes its arithmetic out so a reader can check it by hand.
Amounts are minor units (cents). The clock is fixed: the first period starts
T0 = 2025-04-01 00:00 UTC and a monthly plan's period is April, 30 days
(2,592,000 seconds), ending 2025-05-01. Every rounding is done once, half up.

The services are called with ``now=`` (billing.services.subscriptions,
billing.rating, billing.services.coupons); the overage example runs end to
end over HTTP and ``run_billing_cycle --now``. After every test the books
reconcile (see billing_helpers).
"""

from datetime import datetime, timedelta, timezone

import pytest

from billing.models import Customer, Invoice, Product, Subscription
from billing.rating import tiered_amount
from billing.services.coupons import coupon_create, coupon_discount
from billing.services.subscriptions import (
    period_amount,
    prorate,
    quote_attach,
    quote_update,
    subscribe,
    subscription_update,
)
from tests.billing.billing_helpers import API, add_card, assert_books_reconcile, cycle, make_product

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 4, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)
MAY_1 = datetime(2025, 5, 1, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def books_reconcile():
    yield
    assert_books_reconcile()


def product(client, slug, amount, **extra) -> Product:
    make_product(client, slug, amount=amount, **extra)
    return Product.objects.get(slug=slug)


def customer(client, external_id="c1") -> Customer:
    add_card(client, customer=external_id)  # pm_card_visa: every charge succeeds
    return Customer.objects.get(external_id=external_id)


def subscribed(cust, prod, now=T0, quantity=1, coupon=None) -> Subscription:
    result = subscribe(customer=cust, product=prod, quantity=quantity, now=now, coupon_code=coupon)
    assert result.required_action is None and result.invoice.status == "paid"
    return Subscription.objects.get(pk=result.subscription.pk)


def line_amounts(lines) -> list[tuple[str, int]]:
    return [(line.kind, line.amount) for line in lines]


# --- proration --------------------------------------------------------------------


class TestProration:
    def test_prorate_rounds_once_half_up(self):
        # 3000 × 20/30 = 2000 exactly
        assert prorate(3000, 20, 30) == 2000
        # 1000 × 1/3 = 333.33… → 333
        assert prorate(1000, 1, 3) == 333
        # 2000 × 1/3 = 666.66… → 667
        assert prorate(2000, 1, 3) == 667
        # 5 × 1/2 = 2.5 → 3 (half up, not half even)
        assert prorate(5, 1, 2) == 3

    def test_upgrade_ten_days_in_pays_the_new_price_less_the_unused_old_time(self, sk_client):
        """Upgrade 10 days into a 30-day period from 3000 to 9000:
        unused = 3000 × 20/30 = 2000 → due 9000 − 2000 = 7000; a new period starts at the upgrade."""
        basic, pro = product(sk_client, "basic", 3000), product(sk_client, "pro", 9000)
        cust = customer(sk_client)
        old = subscribed(cust, basic)
        assert (old.current_period_start, old.current_period_end) == (T0, MAY_1)
        now = T0 + 10 * DAY
        quote = quote_attach(customer=cust, product=pro, quantity=1, now=now)
        assert quote.scenario == "upgrade"
        assert line_amounts(quote.lines) == [("plan", 9000), ("proration", -2000)]
        assert quote.total == 7000
        # The real call bills exactly the quoted lines.
        result = subscribe(customer=cust, product=pro, quantity=1, now=now)
        assert (result.invoice.total, result.invoice.amount_paid) == (7000, 7000)
        new = Subscription.objects.get(pk=result.subscription.pk)
        assert (new.product_id, new.current_period_start, new.current_period_end) == (pro.pk, now, datetime(2025, 5, 11, tzinfo=timezone.utc))

    def test_upgrade_one_second_in_is_computed_to_the_second_and_rounded_once(self, sk_client):
        """One second into the period:
        unused = 3000 × 2,591,999 / 2,592,000 = 2999.9988… → 3000 → due 9000 − 3000 = 6000."""
        basic, pro = product(sk_client, "basic", 3000), product(sk_client, "pro", 9000)
        cust = customer(sk_client)
        subscribed(cust, basic)
        quote = quote_attach(customer=cust, product=pro, quantity=1, now=T0 + timedelta(seconds=1))
        assert line_amounts(quote.lines) == [("plan", 9000), ("proration", -3000)]
        assert quote.total == 6000

    def test_upgrade_twelve_hours_in(self, sk_client):
        """12 h into 30 days: unused = 3000 × 29.5/30 = 3000 × 2,548,800 / 2,592,000 = 2950 → due 9000 − 2950 = 6050."""
        basic, pro = product(sk_client, "basic", 3000), product(sk_client, "pro", 9000)
        cust = customer(sk_client)
        subscribed(cust, basic)
        assert quote_attach(customer=cust, product=pro, quantity=1, now=T0 + timedelta(hours=12)).total == 6050

    def test_a_downgrade_bills_nothing_now_and_waits_for_the_period_end(self, sk_client):
        """Downgrade 10 days in from 9000 to 3000: due now 0; the cheaper plan starts 2025-05-01 at 3000."""
        basic, pro = product(sk_client, "basic", 3000), product(sk_client, "pro", 9000)
        cust = customer(sk_client)
        subscribed(cust, pro)
        quote = quote_attach(customer=cust, product=basic, quantity=1, now=T0 + 10 * DAY)
        assert (quote.scenario, quote.lines, quote.due_now, quote.period[0]) == ("downgrade", [], 0, MAY_1)
        subscribe(customer=cust, product=basic, quantity=1, now=T0 + 10 * DAY)
        cycle(MAY_1)
        renewal = Invoice.objects.get(reason="renewal")
        assert (renewal.total, renewal.period_start) == (3000, MAY_1)

    def test_more_seats_mid_period_are_charged_for_the_rest_of_it(self, sk_client):
        """2 → 3 seats at 3000 each, 15 days into 30:
        (3 × 3000 − 2 × 3000) × 15/30 = 3000 × 1/2 = 1500."""
        seats = product(sk_client, "team", 3000)
        cust = customer(sk_client)
        sub = subscribed(cust, seats, quantity=2)
        quote = quote_update(sub=sub, now=T0 + 15 * DAY, quantity=3)
        assert (quote.action, quote.total, quote.refund) == ("quantity", 1500, 0)
        result = subscription_update(customer=cust, product=seats, now=T0 + 15 * DAY, quantity=3)
        assert (result.invoice.total, result.subscription.quantity) == (1500, 3)

    def test_fewer_seats_mid_period_are_refunded_for_the_rest_of_it(self, sk_client):
        """3 → 1 seats at 3000 each, 20 days into 30: refund (9000 − 3000) × 10/30 = 6000 × 1/3 = 2000."""
        seats = product(sk_client, "team", 3000)
        cust = customer(sk_client)
        sub = subscribed(cust, seats, quantity=3)
        assert quote_update(sub=sub, now=T0 + 20 * DAY, quantity=1).refund == 2000
        result = subscription_update(customer=cust, product=seats, now=T0 + 20 * DAY, quantity=1)
        assert result.refund == 2000
        assert Invoice.objects.get().amount_refunded == 2000

    def test_cancelling_at_once_refunds_the_unused_part(self, sk_client):
        """Cancel 20 days into a 30-day period of 3000: refund = 3000 × 10/30 = 1000."""
        basic = product(sk_client, "basic", 3000)
        cust = customer(sk_client)
        sub = subscribed(cust, basic)
        assert quote_update(sub=sub, now=T0 + 20 * DAY, cancel_action="cancel_immediately").refund == 1000
        result = subscription_update(customer=cust, product=basic, now=T0 + 20 * DAY, cancel_action="cancel_immediately")
        assert (result.refund, result.subscription.status) == (1000, "canceled")


# --- tiers ----------------------------------------------------------------------------

TIERS = [
    {"upTo": 10, "unitAmount": 100, "flatAmount": 0},
    {"upTo": 50, "unitAmount": 80, "flatAmount": 500},
    {"upTo": None, "unitAmount": 50, "flatAmount": 0},
]


class TestTiers:
    """Tiers: units 1-10 at 100; 11-50 at 80 plus a flat 500 once reached; 51+ at 50."""

    def test_graduated_prices_each_unit_by_its_own_tier(self):
        # 60 units: 10 × 100 = 1000; 40 × 80 + 500 = 3700; 10 × 50 = 500 → 1000 + 3700 + 500 = 5200
        assert tiered_amount(tiers=TIERS, mode="graduated", quantity=60) == 5200
        # 11 units: 10 × 100 + (1 × 80 + 500) = 1580
        assert tiered_amount(tiers=TIERS, mode="graduated", quantity=11) == 1580

    def test_volume_prices_every_unit_by_the_tier_the_total_falls_in(self):
        # 60 units, all in the open tier: 60 × 50 = 3000
        assert tiered_amount(tiers=TIERS, mode="volume", quantity=60) == 3000
        # 11 units, all in the second tier: 11 × 80 + 500 = 1380
        assert tiered_amount(tiers=TIERS, mode="volume", quantity=11) == 1380

    def test_a_tiered_plan_is_priced_by_its_tiers_times_nothing_else(self, sk_client):
        """A plan price with tiers: one period of q seats is tiered_amount(q), not amount × q."""
        graduated = product(sk_client, "seats-g", 0, tiers=TIERS, tiersMode="graduated")
        volume = product(sk_client, "seats-v", 0, tiers=TIERS, tiersMode="volume", group="other")
        assert period_amount(graduated.current_version, 60) == 5200
        assert period_amount(volume.current_version, 60) == 3000

    def test_subscribing_to_eleven_graduated_seats_bills_1580(self, sk_client):
        """11 seats graduated: 10 × 100 + 1 × 80 + 500 = 1580, on the invoice and on each renewal."""
        seats = product(sk_client, "seats-g", 0, tiers=TIERS, tiersMode="graduated")
        cust = customer(sk_client)
        sub = subscribed(cust, seats, quantity=11)
        first = Invoice.objects.get(subscription=sub)
        assert [(line.kind, line.quantity, line.amount) for line in first.lines.all()] == [("plan", 11, 1580)]
        cycle(MAY_1)
        assert Invoice.objects.get(reason="renewal").total == 1580

    def test_adding_seats_to_a_tiered_plan_prorates_the_tier_difference(self, sk_client):
        """10 → 11 graduated seats 15 days into 30: (1580 − 1000) × 15/30 = 580 / 2 = 290."""
        seats = product(sk_client, "seats-g", 0, tiers=TIERS, tiersMode="graduated")
        cust = customer(sk_client)
        sub = subscribed(cust, seats, quantity=10)
        assert quote_update(sub=sub, now=T0 + 15 * DAY, quantity=11).total == 290


# --- coupons ------------------------------------------------------------------------


def coupon(code, type="percentage", value=25, duration="once", **extra):
    return coupon_create(now=T0 - DAY, code=code, type=type, value=value, duration=duration, **extra)


class TestCoupons:
    def test_a_percentage_is_rounded_once_half_up(self):
        # 15 % of 999 = 149.85 → 150; due 999 − 150 = 849
        assert coupon_discount(coupon=coupon("P15", value=15), subtotal=999) == 150
        # 25 % of 1002 = 250.5 → 251 (half up)
        assert coupon_discount(coupon=coupon("P25", value=25), subtotal=1002) == 251
        # 100 % of 2000 = 2000: nothing left to pay
        assert coupon_discount(coupon=coupon("P100", value=100), subtotal=2000) == 2000

    def test_a_fixed_amount_never_takes_more_than_the_subtotal(self):
        five = coupon("F500", type="fixed", value=500, currency="usd")
        # 2000 − 500 = 1500
        assert coupon_discount(coupon=five, subtotal=2000) == 500
        # 300 − min(500, 300) = 0: never a negative invoice
        assert coupon_discount(coupon=five, subtotal=300) == 300

    def test_a_trial_extension_takes_no_money_off(self):
        assert coupon_discount(coupon=coupon("T7", type="trial_extension", value=7), subtotal=2000) == 0

    def test_a_coupon_on_an_upgrade_discounts_what_is_due_after_the_proration_credit(self, sk_client):
        """Upgrade 10 days in from 3000 to 9000 with 50 % off:
        subtotal = 9000 − 3000 × 20/30 = 9000 − 2000 = 7000; discount 7000 × 50 % = 3500; due 3500."""
        basic, pro = product(sk_client, "basic", 3000), product(sk_client, "pro", 9000)
        cust = customer(sk_client)
        subscribed(cust, basic)
        coupon("HALF", value=50)
        quote = quote_attach(customer=cust, product=pro, quantity=1, now=T0 + 10 * DAY, coupon_code="HALF")
        assert line_amounts(quote.lines) == [("plan", 9000), ("proration", -2000), ("discount", -3500)]
        assert quote.total == 3500
        result = subscribe(customer=cust, product=pro, quantity=1, now=T0 + 10 * DAY, coupon_code="HALF")
        invoice = result.invoice
        assert (invoice.subtotal, invoice.discount, invoice.total) == (7000, 3500, 3500)

    def test_repeating_three_months_of_20_percent_on_2500(self, sk_client):
        """20 % off 2500 for 3 invoices: 2500 − 500 = 2000 on April, May and June; July is 2500 again."""
        plan = product(sk_client, "plan", 2500)
        cust = customer(sk_client)
        coupon("THREE", value=20, duration="repeating", duration_months=3)
        subscribed(cust, plan, coupon="THREE")
        for month in (5, 6, 7):
            cycle(datetime(2025, month, 1, tzinfo=timezone.utc))
        invoices = Invoice.objects.order_by("period_start")
        assert [(i.period_start.month, i.subtotal, i.discount, i.total) for i in invoices] == [
            (4, 2500, 500, 2000), (5, 2500, 500, 2000), (6, 2500, 500, 2000), (7, 2500, 0, 2500)]

    def test_forever_300_off_1999(self, sk_client):
        """300 off 1999 forever: 1999 − 300 = 1699 on every invoice."""
        plan = product(sk_client, "plan", 1999)
        cust = customer(sk_client)
        coupon("ALWAYS", type="fixed", value=300, currency="usd", duration="forever")
        subscribed(cust, plan, coupon="ALWAYS")
        for month in (5, 6):
            cycle(datetime(2025, month, 1, tzinfo=timezone.utc))
        assert list(Invoice.objects.order_by("period_start").values_list("total", flat=True)) == [1699, 1699, 1699]

    def test_a_trial_extension_moves_the_first_charge(self, sk_client):
        """A 14-day trial + a 7-day extension: trialing 21 days, T0 → 2025-04-22; the first 2000 is billed then."""
        plan = product(sk_client, "plan", 2000, freeTrial={"days": 14, "requirePaymentMethod": True})
        cust = customer(sk_client)
        coupon("LONGER", type="trial_extension", value=7)
        subscribe(customer=cust, product=plan, quantity=1, now=T0, coupon_code="LONGER")
        sub = Subscription.objects.get()
        assert (sub.status, sub.trial_end) == ("trialing", datetime(2025, 4, 22, tzinfo=timezone.utc))
        cycle(datetime(2025, 4, 15, tzinfo=timezone.utc))  # the product's own 14 days are over: still trialing
        assert not Invoice.objects.exists()
        cycle(datetime(2025, 4, 22, tzinfo=timezone.utc))
        invoice = Invoice.objects.get()
        assert (invoice.total, invoice.period_start, invoice.period_end) == (
            2000, datetime(2025, 4, 22, tzinfo=timezone.utc), datetime(2025, 5, 22, tzinfo=timezone.utc))


# --- overage (end to end) ----------------------------------------------------------


class TestOverage:
    """A 2000/month plan with 100 API calls included, then 5 per call beyond
    (overageAllowed, overagePrice 5, resetInterval billing_period)."""

    @pytest.fixture
    def api_plan(self, sk_client):
        make_product(sk_client, "api", amount=2000, features=[
            {"slug": "calls", "name": "API calls", "type": "metered", "allowance": 100, "resetInterval": "billing_period",
             "overageAllowed": True, "overagePrice": 5}])
        add_card(sk_client)
        response = sk_client.post(f"{API}/subscribe", {"customer": "c1", "product": "api"}, format="json")
        assert response.status_code == 200 and response.json()["invoice"]["total"] == 2000
        return Subscription.objects.get()

    def track(self, client, amount):
        response = client.post(f"{API}/track", {"customer": "c1", "feature": "calls", "amount": amount}, format="json")
        assert response.status_code == 200, response.content
        return response.json()

    def test_usage_beyond_the_allowance_is_billed_at_the_period_end(self, sk_client, api_plan):
        """130 calls against 100 included: overage 130 − 100 = 30 calls × 5 = 150,
        on its own invoice at the period end, beside the 2000 renewal."""
        self.track(sk_client, 60)
        self.track(sk_client, 70)
        end = api_plan.current_period_end
        cycle(end + timedelta(seconds=1))
        overage = Invoice.objects.get(reason="overage")
        assert [(line.kind, line.quantity, line.unit_amount, line.amount) for line in overage.lines.all()] == [("overage", 30, 5, 150)]
        assert (overage.total, overage.status, overage.period_end) == (150, "paid", end)
        assert Invoice.objects.get(reason="renewal").total == 2000
        cycle(end + timedelta(seconds=1))  # the same moment again bills nothing twice
        assert Invoice.objects.count() == 3

    def test_each_period_bills_its_own_overage_and_usage_within_the_allowance_bills_none(self, sk_client, api_plan):
        """Period 1: 100 calls, within the allowance → no overage invoice.
        Period 2: 112 calls → (112 − 100) × 5 = 12 × 5 = 60."""
        self.track(sk_client, 100)
        cycle(api_plan.current_period_end + timedelta(seconds=1))
        assert not Invoice.objects.filter(reason="overage").exists()
        sub = Subscription.objects.get()
        self.track(sk_client, 112)
        cycle(sub.current_period_end + timedelta(seconds=1))
        overage = Invoice.objects.get(reason="overage")
        assert (overage.lines.get().quantity, overage.total) == (12, 60)
        assert list(Invoice.objects.filter(reason="renewal").values_list("total", flat=True)) == [2000, 2000]
