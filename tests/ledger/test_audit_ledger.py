"""``manage.py audit_ledger``: clean after realistic activity through the HTTP API,
the credits API and the billing cycle; then each kind of violation, planted with
writes that bypass the services, makes it exit non-zero and name the violation.

Runs on PostgreSQL and SQLite alike (the checks are plain SQL with a JSON
helper per vendor)."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from datetime import timedelta
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from billing.models import (
    Balance,
    BalanceBucket,
    BalanceLock,
    Customer,
    Feature,
    GatewayEvent,
    Invoice,
    Payment,
    Subscription,
    UsageEvent,
)
from billing.selectors.audit_ledger import audit_ledger
from credits.models import CreditEntry
from ledger import accounts
from ledger.models import Entry, Line
from ledger.services import credit, debit, entry_post
from tests.billing.billing_helpers import API, add_card, assert_books_reconcile, cycle, make_product, subscribe
from tests.conftest import postgres_only
from tests.credits.credits_helpers import SignedClient, make_wallet, new_secret

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def audit() -> tuple[int, str]:
    """(exit status, stdout) of ``call_command("audit_ledger")``."""
    out = StringIO()
    try:
        call_command("audit_ledger", stdout=out)
    except CommandError as exc:
        return 1, out.getvalue() + str(exc)
    return 0, out.getvalue()


def post(client, route, body, expect=200):
    response = client.post(f"{API}/{route}", body, format="json")
    assert response.status_code == expect, response.content
    return response.json()


def checkout_path(body) -> str:
    return "/checkout/" + body["url"].split("/checkout/")[1]


@pytest.fixture
def busy(sk_client, client, settings):
    """A database after a month of activity: paid plans with overage, usage with
    idempotency keys (and a replay), locks confirmed above and below their
    reservation, released and expired, a grant that expires, a declined card, an
    abandoned checkout, 3-D Secure completed and one left waiting, an immediate
    cancel with a prorated refund, a renewal that fails until it is written off,
    credit debits and a partial refund, and the period-end cycle (reset,
    overage invoice, renewals, dunning)."""
    make_product(sk_client, "pro", amount=2000, features=[
        {"slug": "tokens", "type": "metered", "allowance": 100, "resetInterval": "billing_period",
         "overageAllowed": True, "overagePrice": 3}])
    make_product(sk_client, "basic", amount=500, features=[
        {"slug": "tokens", "type": "metered", "allowance": 50, "resetInterval": "billing_period"}])
    # c1: pro, paid, used past its allowance, locks of every outcome, a grant that expires.
    add_card(sk_client, "c1")
    subscribe(sk_client, "pro", customer="c1")
    track = {"customer": "c1", "feature": "tokens"}
    post(sk_client, "track", {**track, "amount": 60, "idempotencyKey": "req-1"})
    post(sk_client, "track", {**track, "amount": 60, "idempotencyKey": "req-1"})  # replayed
    post(sk_client, "check", {**track, "requiredBalance": 5, "sendEvent": True})
    soon = (timezone.now() + timedelta(minutes=2)).isoformat()
    post(sk_client, "balances", {"customer": "c1", "feature": "tokens", "grantedBalance": 20, "expiresAt": soon}, 201)
    confirm_less = post(sk_client, "check", {**track, "requiredBalance": 10, "lock": {"enabled": True}})["lockId"]
    post(sk_client, "locks/finalize", {"lockId": confirm_less, "action": "confirm", "overrideValue": 4})
    confirm_more = post(sk_client, "check", {**track, "requiredBalance": 10, "lock": {"enabled": True}})["lockId"]
    post(sk_client, "locks/finalize", {"lockId": confirm_more, "action": "confirm", "overrideValue": 70})
    released = post(sk_client, "check", {**track, "requiredBalance": 3, "lock": {"enabled": True}})["lockId"]
    post(sk_client, "locks/finalize", {"lockId": released, "action": "release"})
    post(sk_client, "check", {**track, "requiredBalance": 2, "lock": {"enabled": True, "expiresAt": soon}})
    post(sk_client, "track", {**track, "amount": -3, "idempotencyKey": "give-back"})
    # c2: a declined card, then a checkout left unpaid (voided when it expires).
    add_card(sk_client, "c2", pm="pm_card_chargeDeclined")
    subscribe(sk_client, "basic", customer="c2")
    # c3: 3-D Secure completed on the checkout page, then cancelled now with a prorated refund.
    add_card(sk_client, "c3", pm="pm_card_authenticationRequired")
    body = subscribe(sk_client, "pro", customer="c3")
    done = client.post(checkout_path(body) + "3ds/", {"outcome": "complete"})
    assert done.status_code == 200, done.content
    post(sk_client, "subscriptions/update", {"customer": "c3", "product": "pro", "cancelAction": "cancel_immediately"})
    # c5: pays once, then its card declines: the renewal is retried, then written off.
    add_card(sk_client, "c5")
    subscribe(sk_client, "basic", customer="c5")
    add_card(sk_client, "c5", pm="pm_card_chargeDeclined")
    # ws1: credits: a plan and a top-up, two debits, a partial refund.
    settings.SVC_HMAC_SECRETS = [secret := new_secret()]
    svc = SignedClient(secret)
    make_wallet(sk_client, "ws1", plan=20, topup=10)
    for job, amount in (("job-1", 5), ("job-2", 25)):
        response = svc.debit(amount=amount, job=job, workspace="ws1")
        assert response.status_code == 201, response.content
    response = svc.refund(job="job-2", workspace="ws1", amount=7)
    assert response.status_code == 201, response.content
    # The period end, and the dunning days after it.
    end = max(Subscription.objects.filter(status="active").values_list("current_period_end", flat=True))
    for days in (0, 1, 3, 5, 6):
        cycle(end + timedelta(days=days, minutes=1))
    assert svc.debit(amount=2, job="job-3", workspace="ws1").status_code == 201
    post(sk_client, "check", {**track, "requiredBalance": 1, "lock": {"enabled": True}})  # stays open
    # c4: 3-D Secure left waiting (its invoice open).
    add_card(sk_client, "c4", pm="pm_card_authenticationRequired")
    subscribe(sk_client, "basic", customer="c4")
    return sk_client



class _Rollback(Exception):
    pass


@pytest.fixture
def savepoint():
    """Run a block in a savepoint that is always rolled back (the test's own
    transaction, and the busy database, stay as they were)."""

    @contextmanager
    def run():
        try:
            with transaction.atomic():
                yield
                raise _Rollback
        except _Rollback:
            pass

    return run


def _c1_tokens() -> Balance:
    return Balance.objects.get(customer__external_id="c1", feature__slug="tokens")


def _ws1_credits() -> Balance:
    return Balance.objects.get(customer__external_id="ws1", feature__slug="credits")


def _copy_usage_event(**lookup) -> None:
    event = UsageEvent.objects.get(**lookup)
    event.pk = None
    event.save()


class TestCleanDatabase:
    def test_an_empty_database_is_clean(self):
        status, out = audit()
        assert status == 0 and out.startswith("audit_ledger: clean"), out

    def test_realistic_activity_is_clean(self, busy, savepoint):
        # The scenario reached every state the checks tell apart.
        assert set(BalanceLock.objects.values_list("status", flat=True)) == {"open", "consumed", "released", "expired"}
        assert set(Invoice.objects.values_list("status", flat=True)) == {"open", "paid", "void", "uncollectible"}
        assert set(Payment.objects.values_list("kind", "status")) >= {
            ("charge", "succeeded"), ("charge", "failed"), ("charge", "requires_action"), ("refund", "succeeded")}
        assert Invoice.objects.filter(reason="overage", status="paid").exists()
        assert BalanceBucket.objects.filter(kind="grant", active=False).exists()
        assert CreditEntry.objects.filter(kind="refund", returned__gt=0).exists()
        assert UsageEvent.objects.filter(amount__lt=0).exists()
        assert UsageEvent.objects.filter(idempotency_key="req-1").count() == 1

        status, out = audit()
        assert status == 0, out
        assert out.startswith("audit_ledger: clean (checked 16 checks,"), out
        assert f"{Entry.objects.count()} ledger entries" in out and f"{UsageEvent.objects.count()} usage events" in out
        assert_books_reconcile()

        with savepoint():
            entry = Entry.objects.order_by("id").first()
            Line.objects.create(entry=entry, account_id=accounts.CASH, side="debit", amount=1, currency="usd")
            with pytest.raises(CommandError, match=r"audit_ledger: \d+ violation\(s\)"):
                call_command("audit_ledger", stdout=StringIO())
            report = audit_ledger()
            assert not report.clean
            assert any(v.check == "ledger.entry_balanced" and v.object_id == f"entry:{entry.pk}"
                       for v in report.violations)
        assert audit()[0] == 0


def _database_url() -> str:
    db = connection.settings_dict
    auth = f"{db['USER']}:{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else db["USER"]
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
class TestCommandLine:
    pytestmark = postgres_only

    def test_the_exit_status_is_0_when_clean_and_1_with_the_violations_printed(self):
        command = [sys.executable, "manage.py", "audit_ledger"]
        env = dict(os.environ, DATABASE_URL=_database_url())
        clean = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert clean.returncode == 0, clean.stderr
        assert clean.stdout.startswith("audit_ledger: clean (checked 16 checks, 0 ledger entries"), clean.stdout
        entry_post(lines=[debit(accounts.RECEIVABLE, 100, "usd"), credit(accounts.REVENUE, 100, "usd")],
                   memo="by hand", posted_at=timezone.now(), source="manual")
        found = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert found.returncode == 1
        assert found.stdout.splitlines() == [
            "VIOLATION books.account_1200 account:1200:usd: debit − credit 100 != 0, the unpaid part of open invoices",
            "VIOLATION books.account_4001 account:4001:usd: debit − credit -100 != 0, −(subtotals of invoices not void)",
        ]
        assert found.stderr.startswith("CommandError: audit_ledger: 2 violation(s) (checked 16 checks, 1 ledger entries")
        connection.close()


# Each plant bypasses the services, as a bug or a hand edit would, and returns
# (check, object id, other text the output must hold).

def plant_unbalanced_entry():
    entry = Invoice.objects.exclude(ledger_entry=None).order_by("created_at").first().ledger_entry
    Line.objects.create(entry=entry, account_id=accounts.RECEIVABLE, side="debit", amount=5, currency="usd")
    return "ledger.entry_balanced", f"entry:{entry.pk}", ["VIOLATION books.trial_balance currency:usd"]


def plant_entry_with_one_line():
    entry = Entry.objects.create(posted_at=timezone.now(), memo="half an entry")
    Line.objects.create(entry=entry, account_id=accounts.FEES, side="debit", amount=9, currency="eur")
    other = Entry.objects.create(posted_at=timezone.now(), memo="the other half")
    Line.objects.create(entry=other, account_id=accounts.FEES, side="credit", amount=9, currency="eur")
    return "ledger.entry_balanced", f"entry:{entry.pk}", ["has 1 line(s)"]


def a_charge() -> Payment:
    """A settled charge that nothing refunded. Ids are random and the busy database's
    payments share timestamps, so a bare .first() sometimes picked the refunded charge,
    and the unapplied-charge plant then planted nothing (1 run in 6 failed)."""
    return (Payment.objects.filter(kind="charge", status="succeeded", unapplied=False, refunds__isnull=True)
            .order_by("created_at", "pk").first())


def plant_reversal_that_does_not_mirror():
    payment = a_charge()
    reversal = Entry.objects.create(posted_at=timezone.now(), memo="bad reversal", source="manual",
                                    reversal_of_id=payment.ledger_entry_id)
    Line.objects.bulk_create([
        Line(entry=reversal, account_id=accounts.RECEIVABLE, side="debit", amount=1, currency=payment.currency),
        Line(entry=reversal, account_id=accounts.CASH, side="credit", amount=1, currency=payment.currency)])
    return "ledger.reversal_mirror", f"entry:{reversal.pk}", []


def plant_bucket_granted_changed():
    BalanceBucket.objects.filter(kind="plan", balance=_c1_tokens(), active=True).update(granted=F("granted") + 7)
    return "balance.totals", f"balance:{_c1_tokens().pk}", ["granted"]


def plant_usage_no_bucket_holds():
    Balance.objects.filter(pk=_ws1_credits().pk).update(usage=F("usage") + 1)
    return "balance.totals", f"balance:{_ws1_credits().pk}", ["consumed in buckets"]


def plant_reserved_without_lock():
    BalanceLock.objects.filter(status="open", balance=_c1_tokens()).update(amount=F("amount") + 4)
    return "balance.totals", f"balance:{_c1_tokens().pk}", ["held by its open locks"]


def plant_below_zero_without_overdraft():
    balance = _ws1_credits()
    Balance.objects.filter(pk=balance.pk).update(usage=F("granted") + 5, overage=0)
    return "balance.below_zero", f"balance:{balance.pk}", []


def plant_lock_status_contradicts_parts():
    lock = BalanceLock.objects.get(status="open")
    BalanceLock.objects.filter(pk=lock.pk).update(status="released")  # never finalized, nothing released
    return "lock.state", f"lock:{lock.pk}", []


def plant_expired_lock_finalized_early():
    lock = BalanceLock.objects.get(status="expired")
    BalanceLock.objects.filter(pk=lock.pk).update(finalized_at=lock.expires_at - timedelta(seconds=1))
    return "lock.state", f"lock:{lock.pk}", []


def plant_lock_usage_recorded_twice():
    lock = BalanceLock.objects.filter(status="consumed").order_by("consumed").first()
    _copy_usage_event(properties__lockId=lock.pk)
    return "lock.effect", f"lock:{lock.pk}", ["2 usage event(s)"]


def plant_usage_event_without_balance():
    now = timezone.now()
    event = UsageEvent.objects.create(customer=Customer.objects.get(external_id="c2"),
                                      feature=Feature.objects.get(slug="credits"), amount=3,
                                      idempotency_key="ghost", timestamp=now, created_at=now)
    return "usage.effect", f"usage_event:{event.pk}", ["'ghost'"]


def plant_credit_debit_twice():
    entry = CreditEntry.objects.get(kind="debit", job_id="job-1")
    _copy_usage_event(properties__ledgerEntryId=entry.pk)
    return "credits.debit_effect", f"credit_entry:{entry.pk}", ["2 usage event(s)"]


def plant_credit_debit_buckets_off():
    entry = CreditEntry.objects.get(kind="debit", job_id="job-2")
    CreditEntry.objects.filter(pk=entry.pk).update(buckets={k: v + 1 for k, v in entry.buckets.items()})
    return "credits.debit_effect", f"credit_entry:{entry.pk}", []


def plant_credit_refund_returned_off():
    refund = CreditEntry.objects.get(kind="refund")
    CreditEntry.objects.filter(pk=refund.pk).update(returned=F("returned") - 1)
    return "credits.refund_effect", f"credit_entry:{refund.pk}", []


def plant_credit_usage_without_entry():
    balance, now = _ws1_credits(), timezone.now()
    UsageEvent.objects.create(customer_id=balance.customer_id, feature_id=balance.feature_id, amount=1,
                              properties={"source": "credits", "ledgerEntryId": "cle_missing"},
                              timestamp=now, created_at=now)
    return "credits.orphan_usage", "credit_entry:cle_missing", []


def plant_invoice_without_entry():
    invoice = Invoice.objects.get(reason="overage")
    Invoice.objects.filter(pk=invoice.pk).update(ledger_entry=None)
    return "invoice.ledger_entry", f"invoice:{invoice.pk}", ["without a ledger entry"]


def plant_invoice_total_changed():
    invoice = Invoice.objects.filter(status="open").exclude(ledger_entry=None).first()
    Invoice.objects.filter(pk=invoice.pk).update(subtotal=F("subtotal") + 100, total=F("total") + 100)
    return "invoice.ledger_entry", f"invoice:{invoice.pk}", ["VIOLATION books.account_1200"]


def plant_void_invoice_entry_stands():
    invoice = Invoice.objects.filter(status="open").exclude(ledger_entry=None).first()
    Invoice.objects.filter(pk=invoice.pk).update(status="void")
    return "invoice.ledger_entry", f"invoice:{invoice.pk}", ["is not reversed"]


def plant_refund_unknown_to_invoice():
    refund = Payment.objects.get(kind="refund")
    Invoice.objects.filter(pk=refund.invoice_id).update(amount_refunded=0)
    return "invoice.payments", f"invoice:{refund.invoice_id}", []


def plant_payment_posted_twice():
    payment = a_charge()
    entry_post(lines=[debit(accounts.CASH, payment.amount, payment.currency),
                      credit(accounts.RECEIVABLE, payment.amount, payment.currency)],
               memo="again", posted_at=timezone.now(), source=f"payment:{payment.pk}")
    return "payment.ledger_entry", f"payment:{payment.pk}", ["2 entries posted", "VIOLATION books.account_1000"]


def plant_failed_payment_with_entry():
    payment = Payment.objects.filter(status="failed").first()
    Payment.objects.filter(pk=payment.pk).update(ledger_entry=Entry.objects.filter(source__startswith="payment:").first())
    return "payment.ledger_entry", f"payment:{payment.pk}", []


def plant_gateway_event_not_applied():
    waiting = Payment.objects.get(status="requires_action")
    GatewayEvent.objects.create(
        gateway=waiting.gateway, event_id="evt_1", type="payment_intent.succeeded", received_at=timezone.now(),
        payload={"id": "evt_1", "type": "payment_intent.succeeded",
                 "data": {"object": {"object": "payment_intent", "id": waiting.gateway_ref}}})
    return "gateway_event.effect", "gateway_event:evt_1", []


def plant_unapplied_charge_not_refunded():
    # Money taken for an invoice no longer open must be refunded; this one has no refund.
    charge = a_charge()
    Payment.objects.filter(pk=charge.pk).update(unapplied=True)
    return "payment.unapplied", f"payment:{charge.pk}", []


def plant_receivable_without_invoice():
    entry_post(lines=[debit(accounts.RECEIVABLE, 100, "usd"), credit(accounts.REVENUE, 100, "usd")],
               memo="by hand", posted_at=timezone.now(), source="manual")
    return "books.account_1200", "account:1200:usd", ["VIOLATION books.account_4001 account:4001:usd"]


def plant_cash_without_payment():
    entry_post(lines=[debit(accounts.CASH, 250, "eur"), credit(accounts.CUSTOMER_CREDIT, 250, "eur")],
               memo="by hand", posted_at=timezone.now(), source="manual")
    return "books.account_1000", "account:1000:eur", []


PLANTS = [value for name, value in list(globals().items()) if name.startswith("plant_")]


class TestEachViolation:
    def test_every_planted_violation_is_printed_and_exits_1(self, busy, savepoint):
        """One busy database (it takes a while to build); each plant in a savepoint rolled back after."""
        assert audit()[0] == 0
        missed, planted = [], set()
        for plant in PLANTS:
            with savepoint():
                check, object_id, also = plant()
                planted.add(check)
                status, out = audit()
                wanted = [f"VIOLATION {check} {object_id}:", *also]
                if status != 1 or not all(text in out for text in wanted):
                    missed.append(f"{plant.__name__}: status {status}, wanted {wanted}, got:\n{out}")
        assert not missed, "\n\n".join(missed)
        assert planted == {
            "ledger.entry_balanced", "ledger.reversal_mirror", "balance.totals", "balance.below_zero", "lock.state",
            "lock.effect", "usage.effect", "credits.debit_effect", "credits.refund_effect", "credits.orphan_usage",
            "invoice.ledger_entry", "invoice.payments", "payment.ledger_entry", "payment.unapplied", "gateway_event.effect",
            "books.account_1200", "books.account_1000"}
        assert audit()[0] == 0
