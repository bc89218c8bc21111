"""Refunds are durable, and money taken for an invoice no longer open is given back.

On the offline test gateway, made to fail the next refund call as a network
error would (``refunds_fail_next``): the change that makes a refund due commits
with the refund recorded pending (no ledger entry, nothing refunded yet); the
billing cycle sends it again with the same idempotency key once it is due (5 m
after the first failure, then 30 m, 2 h, …), and only then are the ledger entry
(DR 4910 / CR 1000) and ``payment.refunded`` recorded. After REFUND_MAX_ATTEMPTS
failed calls it is no longer sent: it stays pending (still owed), ``refund.failed``
and an audit entry flag it, and staff's "Retry now" in the admin makes it due. A 3-D
Secure charge that succeeds at the gateway after its checkout expired (its
invoice voided) is recorded as unapplied cash (DR 1000 / CR 2100) and refunded
in full at once (DR 2100 / CR 1000). After every test the books reconcile.
"""

import importlib
from datetime import timedelta

import pytest
from django.apps import apps as django_apps
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.errors import Conflict
from billing.gateways import test as test_gateway
from billing.models import AuditEvent, CheckoutSession, Invoice, OutboxEvent, Payment, Subscription
from billing.selectors.audit_ledger import audit_books
from billing.services.cycle import billing_cycle_run
from billing.services.gateway_events import gateway_event_receive
from billing.services.payments import invoice_refund_due, refund_retry_now, refund_send
from billing.services.renewals import refunds_retry_due
from ledger import accounts
from tests.billing.billing_helpers import API, account_balance, add_card, assert_books_reconcile, cycle, make_product, subscribe
from tests.conftest import postgres_only

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def books_reconcile():
    yield
    assert_books_reconcile()


# The defaults, fixed here so the tests do not depend on the environment.
DELAYS = [300, 1800, 7200, 21600, 43200, 86400]
MAX_ATTEMPTS = 10
AFTER_FIRST_WAIT = timedelta(seconds=DELAYS[0], minutes=1)  # a cycle run when a refund failed once is due


@pytest.fixture(autouse=True)
def retry_schedule(settings):
    settings.REFUND_RETRY_DELAYS_SECONDS = DELAYS
    settings.REFUND_MAX_ATTEMPTS = MAX_ATTEMPTS


@pytest.fixture(autouse=True)
def refund_switch():
    test_gateway.refunds_fail_next(0)
    test_gateway.refunds_made.clear()
    yield
    test_gateway.refunds_fail_next(0)
    test_gateway.refunds_made.clear()


def refunded_events():
    return list(OutboxEvent.objects.filter(type="payment.refunded").values_list("data", flat=True))


def assert_pending(refund: Payment) -> None:
    """Recorded, not made: no entry, no reference, nothing counted as refunded."""
    refund.refresh_from_db()
    assert (refund.status, refund.gateway_ref, refund.ledger_entry_id) == ("pending", "", None)
    assert refund.failure_code == "APIConnectionError"
    assert refund.idempotency_key not in test_gateway.refunds_made
    assert refunded_events() == []
    assert account_balance(accounts.REFUNDS) == 0


def assert_made_once(refund: Payment, key: str) -> None:
    refund.refresh_from_db()
    assert refund.status == "succeeded" and refund.idempotency_key == key
    assert refund.gateway_ref == test_gateway._ref("re", key) and refund.ledger_entry_id is not None
    assert test_gateway.refunds_made == {key: 1}
    assert [e["paymentId"] for e in refunded_events()] == [refund.pk]


class TestARefundTheGatewayFailsIsRetriedByTheCycle:
    @pytest.fixture
    def pro(self, sk_client):
        make_product(sk_client, "pro", amount=3000, features=[
            {"slug": "seats", "type": "seats", "allowance": 1},
            {"slug": "tokens", "type": "metered", "allowance": 1000, "resetInterval": "billing_period"}])
        add_card(sk_client)
        return subscribe(sk_client, "pro")["subscription"]

    def update(self, client, **body):
        return client.post(f"{API}/subscriptions/update", {"customer": "c1", "product": "pro", **body}, format="json")

    @pytest.mark.parametrize("change", ["cancel_immediately", "fewer_seats"])
    def test_the_change_commits_with_a_pending_refund_and_the_cycle_makes_it_once(self, sk_client, pro, change):
        if change == "fewer_seats":
            assert self.update(sk_client, quantity=3).status_code == 200
        test_gateway.refunds_fail_next(1)
        if change == "cancel_immediately":
            response = sk_client.post(f"{API}/cancel", {"customer": "c1", "immediately": True}, format="json")
        else:
            response = self.update(sk_client, quantity=2)
        assert response.status_code == 200, response.content
        if change == "cancel_immediately":
            assert response.json()["subscription"]["status"] == "canceled"
        else:
            assert response.json()["subscription"]["quantity"] == 2
        refund = Payment.objects.get(kind="refund")
        assert 2999 <= refund.amount <= 3000 and refund.reason == ("cancel_immediately" if change == "cancel_immediately" else "quantity")
        assert_pending(refund)
        paid = Invoice.objects.get(pk=refund.invoice_id)
        assert paid.amount_refunded == 0
        assert audit_books() == []  # a pending refund is not money moved yet

        assert billing_cycle_run(now=timezone.now() + timedelta(minutes=1))["refundsRetried"] == 0  # not due yet
        assert_pending(refund)
        done = billing_cycle_run(now=timezone.now() + AFTER_FIRST_WAIT)
        assert done["refundsRetried"] == 1
        assert_made_once(refund, paid.pk + ":refund:1")
        paid.refresh_from_db()
        assert paid.amount_refunded == refund.amount
        assert account_balance(accounts.REFUNDS) == refund.amount
        assert refunded_events()[0]["reason"] == refund.reason

        assert billing_cycle_run(now=timezone.now() + timedelta(days=30))["refundsRetried"] == 0
        assert_made_once(refund, paid.pk + ":refund:1")

    def test_a_refund_that_keeps_failing_stays_pending_and_counts_against_what_is_left(self, sk_client, pro):
        self.update(sk_client, quantity=3)
        test_gateway.refunds_fail_next(3)
        self.update(sk_client, quantity=2)
        first = Payment.objects.get(kind="refund")
        cycle(timezone.now() + AFTER_FIRST_WAIT)  # fails again
        assert_pending(first)
        assert first.attempts == 2
        self.update(sk_client, quantity=1)  # the second refund is only what the first leaves
        second = Payment.objects.exclude(pk=first.pk).get(kind="refund")
        paid = Invoice.objects.get(pk=first.invoice_id)
        assert first.amount + second.amount <= paid.amount_paid and second.status == "pending"
        later = timezone.now() + AFTER_FIRST_WAIT + timedelta(seconds=DELAYS[1])  # both due
        assert billing_cycle_run(now=later)["refundsRetried"] == 2
        paid.refresh_from_db()
        assert paid.amount_refunded == first.amount + second.amount
        assert set(test_gateway.refunds_made.values()) == {1}


class TestAPaidCheckoutWhoseActivationIsRefused:
    def test_its_refund_survives_a_gateway_failure_and_is_made_by_the_cycle(self, sk_client, client):
        make_product(sk_client, "pro", amount=2000)
        make_product(sk_client, "free", amount=0,
                     features=[{"slug": "tokens", "type": "metered", "allowance": 10, "resetInterval": "month"}])
        body = subscribe(sk_client, "pro")
        subscribe(sk_client, "free")  # the same group: takes the slot
        test_gateway.refunds_fail_next(1)
        page = client.post("/checkout/" + body["url"].split("/checkout/")[1], {"cardNumber": "4242424242424242"})
        assert page.status_code == 409 and b"refunded" in page.content
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "expired"
        invoice = Invoice.objects.get(pk=body["invoice"]["id"])
        refund = Payment.objects.get(kind="refund")
        assert (refund.amount, refund.reason) == (2000, "activation_refused")
        assert_pending(refund)
        assert (invoice.status, invoice.amount_paid, invoice.amount_refunded) == ("paid", 2000, 0)

        cycle(timezone.now() + AFTER_FIRST_WAIT)
        assert_made_once(refund, invoice.pk + ":refund:1")
        invoice.refresh_from_db()
        assert (invoice.status, invoice.amount_paid, invoice.amount_refunded) == ("paid", 2000, 2000)


def succeeded_event(ref: str, event_id: str = "evt_late_1") -> dict:
    return {"id": event_id, "type": "payment_intent.succeeded",
            "data": {"object": {"object": "payment_intent", "id": ref, "status": "succeeded"}}}


class TestASuccessForAnInvoiceNoLongerOpen:
    """The charge waited for 3-D Secure; its checkout expired (the invoice is void)
    before the gateway reported that the customer completed it."""

    @pytest.fixture
    def expired(self, sk_client):
        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client, pm="pm_card_authenticationRequired")
        body = subscribe(sk_client, "pro")
        assert body["requiredAction"]["code"] == "3ds_required"
        session = CheckoutSession.objects.get()
        billing_cycle_run(now=session.expires_at + timedelta(seconds=1))
        invoice = Invoice.objects.get()
        assert invoice.status == "void" and CheckoutSession.objects.get().status == "canceled"
        charge = Payment.objects.get()
        assert charge.status == "requires_action"
        return body, invoice, charge

    def test_the_money_is_recorded_as_unapplied_and_refunded_at_once(self, expired):
        body, invoice, charge = expired
        assert gateway_event_receive(gateway="test", event=succeeded_event(charge.gateway_ref), now=timezone.now())
        charge.refresh_from_db()
        assert (charge.status, charge.unapplied) == ("succeeded", True)
        refund = Payment.objects.get(kind="refund")
        assert (refund.refund_of_id, refund.amount, refund.unapplied, refund.reason) == (charge.pk, 2000, True, "invoice_void")
        assert_made_once(refund, invoice.pk + ":refund:1")
        # The cash came in and went out through 2100; the void invoice and its subscription are untouched.
        assert account_balance(accounts.CASH) == 0 and account_balance(accounts.CUSTOMER_CREDIT) == 0
        assert account_balance(accounts.REFUNDS) == 0
        invoice.refresh_from_db()
        assert (invoice.status, invoice.amount_paid, invoice.amount_refunded) == ("void", 0, 0)
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "expired"
        succeeded = OutboxEvent.objects.get(type="payment.succeeded").data
        assert (succeeded["paymentId"], succeeded["unapplied"]) == (charge.pk, True)
        assert refunded_events()[0]["chargeId"] == charge.pk
        # The same event again changes nothing.
        assert not gateway_event_receive(gateway="test", event=succeeded_event(charge.gateway_ref), now=timezone.now())
        assert Payment.objects.count() == 2 and test_gateway.refunds_made == {refund.idempotency_key: 1}

    def test_its_refund_is_durable_too_and_the_audit_wants_it(self, expired):
        _, invoice, charge = expired
        test_gateway.refunds_fail_next(1)
        assert gateway_event_receive(gateway="test", event=succeeded_event(charge.gateway_ref), now=timezone.now())
        refund = Payment.objects.get(kind="refund")
        refund.refresh_from_db()
        assert (refund.status, refund.ledger_entry_id) == ("pending", None)
        assert account_balance(accounts.CUSTOMER_CREDIT) == -2000  # owed back to the customer
        assert audit_books() == []
        # Without its refund the unapplied money is a violation.
        Payment.objects.filter(pk=refund.pk).update(status="failed")
        assert [(v.check, v.object_id) for v in audit_books()] == [("payment.unapplied", f"payment:{charge.pk}")]
        Payment.objects.filter(pk=refund.pk).update(status="pending")

        assert billing_cycle_run(now=timezone.now() + AFTER_FIRST_WAIT)["refundsRetried"] == 1
        assert_made_once(refund, invoice.pk + ":refund:1")
        assert account_balance(accounts.CUSTOMER_CREDIT) == 0 and account_balance(accounts.CASH) == 0

    def test_a_failure_for_it_fails_the_waiting_charge(self, expired):
        _, invoice, charge = expired
        event = {"id": "evt_late_2", "type": "payment_intent.payment_failed",
                 "data": {"object": {"object": "payment_intent", "id": charge.gateway_ref}}}
        assert gateway_event_receive(gateway="test", event=event, now=timezone.now())
        charge.refresh_from_db()
        assert (charge.status, charge.unapplied, charge.ledger_entry_id) == ("failed", False, None)
        assert not Payment.objects.filter(kind="refund").exists()


# --- the retry schedule: backoff, a limit, and staff's "Retry now" ----------------------


@pytest.fixture
def gateway_calls(monkeypatch):
    """Every refund call the test gateway receives (failed or not), as (key, amount)."""
    calls = []
    real = test_gateway.TestGateway.refund

    def spy(self, *, ref, amount, idempotency_key):
        calls.append((idempotency_key, amount))
        return real(self, ref=ref, amount=amount, idempotency_key=idempotency_key)

    monkeypatch.setattr(test_gateway.TestGateway, "refund", spy)
    return calls


@pytest.fixture
def refused(sk_client, gateway_calls):
    """A refund (two seats down to one) that the gateway refuses from the start, as a
    closed card account would: its first call, right after the change, failed."""
    make_product(sk_client, "pro", amount=3000, features=[{"slug": "seats", "type": "seats", "allowance": 1}])
    add_card(sk_client)
    subscribe(sk_client, "pro")
    seats = {"customer": "c1", "product": "pro"}
    response = sk_client.post(f"{API}/subscriptions/update", {**seats, "quantity": 2}, format="json")
    assert response.status_code == 200, response.content
    test_gateway.refunds_fail_next(10_000)
    response = sk_client.post(f"{API}/subscriptions/update", {**seats, "quantity": 1}, format="json")
    assert response.status_code == 200, response.content
    refund = Payment.objects.get(kind="refund")
    assert len(gateway_calls) == 1
    return refund


def retry_until_given_up(refund: Payment) -> Payment:
    """Run the retries at each due moment until the refund is no longer due (bounded)."""
    for _ in range(MAX_ATTEMPTS * 2):
        refund.refresh_from_db()
        if refund.next_attempt_at is None:
            return refund
        refunds_retry_due(now=refund.next_attempt_at)
    raise AssertionError(f"still retried after {refund.attempts} attempts")


def retry_now(payment: Payment) -> dict:
    """The admin changelist's POST for the "Retry now" action on one payment."""
    return {"action": "retry_now", "_selected_action": [payment.pk]}


class TestARefundTheGatewayKeepsRefusing:
    def test_it_is_sent_again_only_when_due_and_the_wait_grows(self, refused, gateway_calls):
        refund = refused
        assert (refund.status, refund.attempts, refund.failure_code) == ("pending", 1, "APIConnectionError")
        due = refund.next_attempt_at
        assert due - refund.created_at == timedelta(seconds=DELAYS[0])  # 5 m after the first call
        waits = []
        for attempt in range(2, MAX_ATTEMPTS + 1):
            assert refunds_retry_due(now=due - timedelta(seconds=1)) == 0
            assert billing_cycle_run(now=due - timedelta(seconds=1))["refundsRetried"] == 0
            assert len(gateway_calls) == attempt - 1, f"attempt {attempt} was sent before it was due"
            assert refunds_retry_due(now=due) == 0  # sent, and refused again
            assert len(gateway_calls) == attempt
            refund.refresh_from_db()
            assert (refund.status, refund.attempts, refund.failure_code) == ("pending", attempt, "APIConnectionError")
            assert refund.ledger_entry_id is None
            if attempt == MAX_ATTEMPTS:
                break
            waits.append((refund.next_attempt_at - due).total_seconds())
            due = refund.next_attempt_at
        # 30 m, 2 h, 6 h, 12 h, then 24 h between attempts 2…9 (the last delay repeats).
        assert waits == [1800, 7200, 21600, 43200, 86400, 86400, 86400, 86400]
        assert {key for key, _ in gateway_calls} == {refund.idempotency_key}  # one key throughout

    def test_after_the_last_attempt_it_stays_pending_is_no_longer_sent_and_staff_are_told(self, refused, gateway_calls):
        refund = retry_until_given_up(refused)
        assert len(gateway_calls) == MAX_ATTEMPTS
        # Still owed: pending, nothing posted, nothing counted as refunded.
        assert (refund.status, refund.attempts, refund.next_attempt_at) == ("pending", MAX_ATTEMPTS, None)
        assert refund.ledger_entry_id is None and refund.failure_code == "APIConnectionError"
        assert Invoice.objects.get(pk=refund.invoice_id).amount_refunded == 0
        assert account_balance(accounts.REFUNDS) == 0 and refunded_events() == []
        far = timezone.now() + timedelta(days=365)
        assert refunds_retry_due(now=far) == 0
        assert billing_cycle_run(now=far)["refundsRetried"] == 0
        assert len(gateway_calls) == MAX_ATTEMPTS

        [event] = OutboxEvent.objects.filter(type="refund.failed")
        assert event.customer_id == refund.customer_id
        assert event.data == {
            "invoiceId": refund.invoice_id, "paymentId": refund.pk, "chargeId": refund.refund_of_id,
            "amount": refund.amount, "currency": refund.currency, "reason": "quantity",
            "attempts": MAX_ATTEMPTS, "failureCode": "APIConnectionError",
        }
        [audit] = AuditEvent.objects.filter(action="refund.retries_exhausted")
        assert (audit.actor_type, audit.target_type, audit.target_id) == ("system", "payment", refund.pk)
        assert audit.data["attempts"] == MAX_ATTEMPTS

    def test_staff_retry_now_makes_it_due_and_a_working_gateway_then_makes_it_once(self, refused, gateway_calls,
                                                                                    admin_client):
        refund = retry_until_given_up(refused)
        charge = Payment.objects.get(pk=refund.refund_of_id)
        flagged = admin_client.get("/admin/billing/payment/?refund_retry=attention")
        assert flagged.status_code == 200
        assert refund.pk in flagged.content.decode() and charge.pk not in flagged.content.decode()

        response = admin_client.post("/admin/billing/payment/", retry_now(refund))
        assert response.status_code == 302
        refund.refresh_from_db()
        assert refund.status == "pending" and refund.next_attempt_at <= timezone.now()
        assert AuditEvent.objects.filter(action="admin.payment.retry", target_id=refund.pk, actor_type="staff").exists()
        assert refund.pk not in admin_client.get("/admin/billing/payment/?refund_retry=attention").content.decode()
        assert len(gateway_calls) == MAX_ATTEMPTS  # due, not sent by the admin itself

        test_gateway.refunds_fail_next(0)  # the gateway works again
        assert refunds_retry_due(now=timezone.now()) == 1
        assert_made_once(refund, refund.idempotency_key)
        assert Invoice.objects.get(pk=refund.invoice_id).amount_refunded == refund.amount
        assert account_balance(accounts.REFUNDS) == refund.amount
        assert refunds_retry_due(now=timezone.now() + timedelta(days=365)) == 0
        assert len(gateway_calls) == MAX_ATTEMPTS + 1

    def test_retry_now_on_a_charge_changes_nothing(self, refused, admin_client):
        charge = Payment.objects.get(pk=refused.refund_of_id)
        response = admin_client.post("/admin/billing/payment/", retry_now(charge), follow=True)
        assert response.status_code == 200 and b"No such refund" in response.content
        charge.refresh_from_db()
        assert charge.next_attempt_at is None
        assert not AuditEvent.objects.filter(action="admin.payment.retry").exists()

    def test_a_retry_now_that_fails_again_is_flagged_again_at_once(self, refused, gateway_calls):
        refund = retry_until_given_up(refused)
        now = timezone.now() + timedelta(days=30)
        refund_retry_now(refund_id=refund.pk, now=now)
        assert refunds_retry_due(now=now) == 0
        refund.refresh_from_db()
        assert (refund.status, refund.attempts, refund.next_attempt_at) == ("pending", MAX_ATTEMPTS + 1, None)
        assert len(gateway_calls) == MAX_ATTEMPTS + 1
        assert OutboxEvent.objects.filter(type="refund.failed").count() == 2

    def test_only_a_pending_refund_can_be_made_due(self, refused):
        test_gateway.refunds_fail_next(0)
        refunds_retry_due(now=refused.next_attempt_at)
        with pytest.raises(Conflict):
            refund_retry_now(refund_id=refused.pk, now=timezone.now())
        refused.refresh_from_db()
        assert (refused.status, refused.next_attempt_at) == ("succeeded", None)

    def test_a_stale_sender_does_not_call_the_gateway_again(self, refused, gateway_calls):
        stale = Payment.objects.get(pk=refused.pk)
        assert refunds_retry_due(now=stale.next_attempt_at) == 0  # attempt 2 claimed and failed
        assert refund_send(refund=stale, now=stale.next_attempt_at).attempts == 1  # its attempt 2 is taken
        assert len(gateway_calls) == 2


class TestARefundWhoseSenderDiedFirst:
    def test_it_is_due_at_once_and_the_cycle_sends_it(self, sk_client, gateway_calls):
        make_product(sk_client, "pro", amount=3000)
        add_card(sk_client)
        subscribe(sk_client, "pro")
        now = timezone.now()
        with transaction.atomic():  # recorded, then the process died before its call
            paid = Invoice.objects.get(status="paid")
            refund = invoice_refund_due(invoice=paid, amount=1000, now=now, reason="manual")
        assert (refund.attempts, refund.next_attempt_at) == (0, now)
        assert refunds_retry_due(now=now) == 1
        assert_made_once(refund, refund.idempotency_key)
        assert refund.attempts == 1 and refund.next_attempt_at is None


class TestTheRetryQueueIsIndexed:
    pytestmark = postgres_only

    def test_the_cycle_finds_due_refunds_through_their_partial_index(self, refused):
        with CaptureQueriesContext(connection) as queries:
            refunds_retry_due(now=refused.next_attempt_at - timedelta(seconds=1))
        [due_query] = [q["sql"] for q in queries.captured_queries if "next_attempt_at" in q["sql"]]
        with connection.cursor() as cursor:
            # A test table is tiny, so the planner would scan it anyway: ask whether the index serves the query.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + due_query)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute("RESET enable_seqscan")
        assert "payment_refund_retry_due" in plan, plan


class TestTheMigration:
    def test_the_migration_makes_refunds_left_pending_before_it_due_now(self, refused):
        Payment.objects.filter(pk=refused.pk).update(attempts=0, next_attempt_at=None)  # as before 0006
        migration = importlib.import_module("billing.migrations.0006_refund_retry_schedule")
        migration.pending_refunds_due_now(django_apps, None)
        refused.refresh_from_db()
        assert refused.next_attempt_at <= timezone.now()
        charge = Payment.objects.get(pk=refused.refund_of_id)
        assert charge.next_attempt_at is None  # charges have no schedule
