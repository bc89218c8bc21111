"""A worker that dies between issuing a renewal invoice and charging it (found by the
fault tests, tests/faults): the next cycle charges the invoice, and an attempt whose
outcome was never recorded is repeated with the same gateway idempotency key."""

from datetime import timedelta

import pytest

from billing.gateways.test import TestGateway
from billing.models import Invoice, Payment, Subscription
from billing.services import renewals
from tests.billing.billing_helpers import add_card, assert_books_reconcile, cycle, make_product, subscribe


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


@pytest.fixture
def renewing(sk_client):
    make_product(sk_client, "pro", amount=2000)
    add_card(sk_client)
    sub_id = subscribe(sk_client, "pro")["subscription"]["id"]
    return Subscription.objects.get(pk=sub_id).current_period_end


@pytest.mark.django_db
class TestRenewalCrashRecovery:
    def test_a_renewal_invoice_whose_charge_never_ran_is_charged_by_the_next_cycle(self, renewing, monkeypatch):
        def killed(**kwargs):
            raise WorkerKilled

        monkeypatch.setattr(renewals, "_collect_or_dun", killed)
        with pytest.raises(WorkerKilled):
            cycle(renewing + timedelta(seconds=1))
        invoice = Invoice.objects.get(reason="renewal")
        assert (invoice.status, invoice.attempts) == ("open", 0)
        monkeypatch.undo()

        cycle(renewing + timedelta(seconds=2))
        invoice.refresh_from_db()
        assert (invoice.status, invoice.amount_paid, invoice.next_attempt_at) == ("paid", 2000, None)
        assert Payment.objects.filter(invoice=invoice, kind="charge", status="succeeded").count() == 1
        assert Invoice.objects.filter(reason="renewal").count() == 1
        assert_books_reconcile()

    def test_an_attempt_that_died_in_the_gateway_call_is_repeated_with_its_own_key(self, renewing, monkeypatch):
        def dies(self, **kwargs):
            raise WorkerKilled

        monkeypatch.setattr(TestGateway, "charge", dies)
        with pytest.raises(WorkerKilled):
            cycle(renewing + timedelta(seconds=1))
        invoice = Invoice.objects.get(reason="renewal")
        assert (invoice.status, invoice.attempts) == ("open", 1)
        assert not Payment.objects.filter(invoice=invoice).exists()
        monkeypatch.undo()

        cycle(renewing + timedelta(seconds=2))
        invoice.refresh_from_db()
        assert invoice.status == "paid"
        charges = list(Payment.objects.filter(invoice=invoice, kind="charge").values_list("idempotency_key", "status"))
        assert charges == [(f"{invoice.pk}:charge:1", "succeeded")]  # the gateway sees the same request again
        assert_books_reconcile()

    def test_a_recorded_failure_still_moves_to_the_next_attempt_key(self, sk_client, renewing):
        from billing.services.payments import invoice_collect
        from django.utils import timezone

        sk_client.post("/api/v1/pay/customers/c1/payment-methods", {"paymentMethod": "pm_card_chargeDeclined"},
                       format="json")
        cycle(renewing + timedelta(seconds=1))
        invoice = Invoice.objects.get(reason="renewal")
        assert (invoice.status, invoice.attempts) == ("open", 1)
        sk_client.post("/api/v1/pay/customers/c1/payment-methods", {"paymentMethod": "pm_card_visa"}, format="json")
        invoice_collect(invoice=invoice, now=timezone.now())
        keys = sorted(Payment.objects.filter(invoice=invoice, kind="charge").values_list("idempotency_key", "status"))
        assert keys == [(f"{invoice.pk}:charge:1", "failed"), (f"{invoice.pk}:charge:2", "succeeded")]
