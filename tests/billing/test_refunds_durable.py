"""Refunds are durable, and money taken for an invoice no longer open is given back.

On the offline test gateway, made to fail the next refund call as a network
error would (``refunds_fail_next``): the change that makes a refund due commits
with the refund recorded pending (no ledger entry, nothing refunded yet); the
billing cycle sends it again with the same idempotency key, and only then are
the ledger entry (DR 4910 / CR 1000) and ``payment.refunded`` recorded. A 3-D
Secure charge that succeeds at the gateway after its checkout expired (its
invoice voided) is recorded as unapplied cash (DR 1000 / CR 2100) and refunded
in full at once (DR 2100 / CR 1000). After every test the books reconcile.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.gateways import test as test_gateway
from billing.models import CheckoutSession, Invoice, OutboxEvent, Payment, Subscription
from billing.selectors.audit_ledger import audit_books
from billing.services.cycle import billing_cycle_run
from billing.services.gateway_events import gateway_event_receive
from ledger import accounts
from tests.billing.billing_helpers import API, account_balance, add_card, assert_books_reconcile, cycle, make_product, subscribe

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def books_reconcile():
    yield
    assert_books_reconcile()


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

        done = billing_cycle_run(now=timezone.now() + timedelta(minutes=1))
        assert done["refundsRetried"] == 1
        assert_made_once(refund, paid.pk + ":refund:1")
        paid.refresh_from_db()
        assert paid.amount_refunded == refund.amount
        assert account_balance(accounts.REFUNDS) == refund.amount
        assert refunded_events()[0]["reason"] == refund.reason

        assert billing_cycle_run(now=timezone.now() + timedelta(minutes=2))["refundsRetried"] == 0
        assert_made_once(refund, paid.pk + ":refund:1")

    def test_a_refund_that_keeps_failing_stays_pending_and_counts_against_what_is_left(self, sk_client, pro):
        self.update(sk_client, quantity=3)
        test_gateway.refunds_fail_next(3)
        self.update(sk_client, quantity=2)
        first = Payment.objects.get(kind="refund")
        cycle(timezone.now() + timedelta(minutes=1))  # fails again
        assert_pending(first)
        self.update(sk_client, quantity=1)  # the second refund is only what the first leaves
        second = Payment.objects.exclude(pk=first.pk).get(kind="refund")
        paid = Invoice.objects.get(pk=first.invoice_id)
        assert first.amount + second.amount <= paid.amount_paid and second.status == "pending"
        assert billing_cycle_run(now=timezone.now() + timedelta(minutes=2))["refundsRetried"] == 2
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

        cycle(timezone.now() + timedelta(minutes=1))
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

        assert billing_cycle_run(now=timezone.now() + timedelta(minutes=1))["refundsRetried"] == 1
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
