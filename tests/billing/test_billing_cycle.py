"""Time travel: subscriptions driven through several periods with
``run_billing_cycle --now`` — renewals, overage invoices, downgrades, dunning
then lapse — and the cycle's exactly-once guarantee, in one process and in two."""

import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection
from django.utils import timezone

from billing.models import Balance, Invoice, OutboxEvent, Payment, Subscription
from billing.periods import add_interval
from ledger.models import Entry
from tests.billing.billing_helpers import (
    API,
    account_balance,
    add_card,
    assert_books_reconcile,
    cycle,
    make_product,
    subscribe,
)
from tests.conftest import postgres_only

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def books_reconcile():
    yield
    assert_books_reconcile()


def the_sub():
    return Subscription.objects.get(customer__external_id="c1", status__in=Subscription.LIVE_STATUSES)


@pytest.mark.django_db
class TestRenewals:
    def test_three_renewals_bill_each_period_once_with_contiguous_periods(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        subscribe(sk_client, "pro")
        ends = []
        for _ in range(3):
            end = the_sub().current_period_end
            ends.append(end)
            cycle(end + timedelta(seconds=1))
        renewals = list(Invoice.objects.filter(reason="renewal").order_by("period_start"))
        assert [(i.period_start, i.total, i.status) for i in renewals] == [(e, 2000, "paid") for e in ends]
        for a, b in zip(renewals, renewals[1:]):
            assert a.period_end == b.period_start
        assert the_sub().current_period_start == ends[-1]
        assert OutboxEvent.objects.filter(type="subscription.renewed").count() == 3

    def test_the_allowance_resets_with_each_renewal(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        subscribe(sk_client, "pro")
        sk_client.post(f"{API}/track", {"customer": "c1", "feature": "tokens", "amount": 600}, format="json")
        end = the_sub().current_period_end
        cycle(end + timedelta(seconds=1))
        balance = Balance.objects.get(feature__slug="tokens")
        assert (balance.usage, balance.granted) == (0, 1000)

    def test_a_late_run_catches_up_every_missed_period(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        subscribe(sk_client, "pro")
        start = the_sub().current_period_start
        cycle(add_interval(start, "month", 3) + timedelta(hours=1))
        starts = sorted(Invoice.objects.filter(reason="renewal").values_list("period_start", flat=True))
        assert starts == [add_interval(start, "month", k) for k in (1, 2, 3)]

    def test_running_the_cycle_twice_for_one_moment_changes_nothing_the_second_time(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        subscribe(sk_client, "pro")
        moment = the_sub().current_period_end + timedelta(seconds=1)
        cycle(moment)
        counts = (Invoice.objects.count(), Payment.objects.count(), Entry.objects.count(), OutboxEvent.objects.count())
        cycle(moment)
        assert (Invoice.objects.count(), Payment.objects.count(), Entry.objects.count(), OutboxEvent.objects.count()) == counts


@pytest.mark.django_db
class TestOverage:
    def test_usage_beyond_the_allowance_is_invoiced_at_the_period_end(self, sk_client):
        make_product(sk_client, "pro", amount=2000, features=[
            {"slug": "tokens", "type": "metered", "allowance": 100, "resetInterval": "billing_period",
             "overageAllowed": True, "overagePrice": 3}])
        add_card(sk_client)
        subscribe(sk_client, "pro")
        sk_client.post(f"{API}/track", {"customer": "c1", "feature": "tokens", "amount": 130}, format="json")
        end = the_sub().current_period_end
        cycle(end + timedelta(seconds=1))
        overage = Invoice.objects.get(reason="overage")
        line = overage.lines.get()
        # 130 used − 100 included = 30 units × 3 = 90.
        assert (line.kind, line.quantity, line.unit_amount, line.amount) == ("overage", 30, 3, 90)
        assert (overage.total, overage.status) == (90, "paid")
        cycle(end + timedelta(seconds=2))
        assert Invoice.objects.filter(reason="overage").count() == 1


@pytest.mark.django_db
class TestDunning:
    def test_a_failed_renewal_is_retried_then_the_subscription_lapses(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        subscribe(sk_client, "pro")
        add_card(sk_client, pm="pm_card_chargeDeclined")  # the new default
        end = the_sub().current_period_end
        cycle(end + timedelta(seconds=1))
        invoice = Invoice.objects.get(reason="renewal")
        assert (invoice.status, invoice.attempts) == ("open", 1)
        assert the_sub().status == "past_due"
        # Retries 1, 3 and 5 days after the invoice (BILLING_DUNNING_RETRY_DAYS).
        for day, attempts in ((1, 2), (3, 3)):
            cycle(invoice.created_at + timedelta(days=day, seconds=1))
            invoice.refresh_from_db()
            assert (invoice.status, invoice.attempts) == ("open", attempts)
            assert Subscription.objects.get(pk=invoice.subscription_id).status == "past_due"
        cycle(invoice.created_at + timedelta(days=5, seconds=1))
        invoice.refresh_from_db()
        assert (invoice.status, invoice.attempts) == ("uncollectible", 4)
        sub = Subscription.objects.get(pk=invoice.subscription_id)
        assert sub.status == "expired"
        assert Balance.objects.get(feature__slug="tokens").included is False
        assert account_balance("6000") == 2000
        assert Payment.objects.filter(status="failed").count() == 4

    def test_a_new_card_during_dunning_recovers_the_subscription(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        subscribe(sk_client, "pro")
        add_card(sk_client, pm="pm_card_chargeDeclined")
        cycle(the_sub().current_period_end + timedelta(seconds=1))
        invoice = Invoice.objects.get(reason="renewal")
        add_card(sk_client, pm="pm_card_visa")
        cycle(invoice.created_at + timedelta(days=1, seconds=1))
        invoice.refresh_from_db()
        assert invoice.status == "paid"
        assert the_sub().status == "active"


@pytest.mark.django_db
class TestCheckoutExpiry:
    def test_an_abandoned_checkout_voids_its_invoice_and_never_starts(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        body = subscribe(sk_client, "pro")
        cycle(timezone.now() + timedelta(days=2))
        assert Invoice.objects.get(pk=body["invoice"]["id"]).status == "void"
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "expired"
        assert account_balance("1200") == 0


def _database_url() -> str:
    db = connection.settings_dict
    auth = f"{db['USER']}:{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else db["USER"]
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
class TestConcurrentCycles:
    pytestmark = postgres_only

    def test_two_processes_running_the_cycle_at_once_bill_each_period_once(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        for n in range(6):
            add_card(sk_client, customer=f"c{n}")
            subscribe(sk_client, "pro", customer=f"c{n}")
        moment = max(Subscription.objects.values_list("current_period_end", flat=True)) + timedelta(seconds=5)
        env = dict(os.environ, DATABASE_URL=_database_url())
        command = [sys.executable, "manage.py", "run_billing_cycle", "--now", moment.isoformat()]
        procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        renewals = Invoice.objects.filter(reason="renewal")
        assert renewals.count() == 6
        assert sorted(renewals.values_list("customer__external_id", flat=True)) == [f"c{n}" for n in range(6)]
        assert Payment.objects.filter(invoice__reason="renewal", status="succeeded").count() == 6
        connection.close()

    def test_two_concurrent_subscribes_of_one_customer_charge_once(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        raw = sk_client.raw_key
        results = []

        def attempt():
            from rest_framework.test import APIClient

            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
            try:
                results.append(client.post(f"{API}/subscribe", {"customer": "c1", "product": "pro"}, format="json").status_code)
            finally:
                connection.close()

        threads = [threading.Thread(target=attempt) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [200, 409, 409, 409]
        assert Payment.objects.filter(status="succeeded").count() == 1
        assert Subscription.objects.filter(status="active").count() == 1
