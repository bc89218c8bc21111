"""Invoices: issue, record payments and refunds, void, write off.

Every function here joins the caller's transaction and posts the ledger
entry of the money movement it records in that same transaction:

    issued         DR 1200 Receivable (total)   DR 4900 Discounts (discount)   CR 4001 Revenue (subtotal)
    paid           DR 1000 Cash                 CR 1200 Receivable
    refunded       DR 4910 Refunds              CR 1000 Cash        (when the gateway made it; pending before)
    unapplied      DR 1000 Cash                 CR 2100 Customer credits   (a charge for an invoice no longer open)
    its refund     DR 2100 Customer credits     CR 1000 Cash
    void           the reversal of the issue entry (only while nothing is paid)
    uncollectible  DR 6000 Bad debt             CR 1200 Receivable (what is unpaid)

so Receivable always equals the unpaid part of open invoices.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F

from billing.errors import Conflict
from billing.models import Invoice, InvoiceCounter, InvoiceLine, Payment
from billing.services.events import event_emit
from ledger import accounts
from ledger.services import credit, debit, entry_post, entry_reverse


@dataclass(frozen=True)
class LineDraft:
    """A line before it is issued; credits (unused time, discounts) are negative."""

    kind: str
    description: str
    amount: int
    quantity: int = 1
    unit_amount: int | None = None

    def as_dict(self) -> dict:
        return {"kind": self.kind, "description": self.description, "quantity": self.quantity,
                "unitAmount": self.unit_amount if self.unit_amount is not None else self.amount, "amount": self.amount}


def totals(lines: list[LineDraft]) -> tuple[int, int, int]:
    """(subtotal, discount, total) of draft lines; discount lines are negative."""
    subtotal = sum(line.amount for line in lines if line.kind != InvoiceLine.Kind.DISCOUNT)
    discount = -sum(line.amount for line in lines if line.kind == InvoiceLine.Kind.DISCOUNT)
    return subtotal, discount, subtotal - discount


def _next_number() -> str:
    prefix = settings.BILLING_INVOICE_PREFIX
    InvoiceCounter.objects.get_or_create(prefix=prefix)
    InvoiceCounter.objects.filter(prefix=prefix).update(value=F("value") + 1)
    value = InvoiceCounter.objects.filter(prefix=prefix).values_list("value", flat=True).get()
    return f"{prefix}-{value:06d}"


class AlreadyBilled(Conflict):
    """An invoice with this billing key exists (the work was done before)."""


def invoice_issue(*, customer, subscription, billing_key: str, reason: str, currency: str,
                  lines: list[LineDraft], now: datetime, period: tuple[datetime | None, datetime | None] = (None, None),
                  pending_action: dict | None = None) -> Invoice:
    """Issue an invoice with numbered lines and post it to the ledger. An
    invoice whose total is zero is paid at once. Raises AlreadyBilled when
    ``billing_key`` was used before (the caller's transaction stays usable)."""
    subtotal, discount, total = totals(lines)
    if subtotal < 0 or total < 0:
        raise ValueError(f"invoice totals must not be negative: subtotal {subtotal}, discount {discount}")
    try:
        with transaction.atomic():
            invoice = Invoice.objects.create(
                number=_next_number(), customer=customer, subscription=subscription, billing_key=billing_key,
                reason=reason, currency=currency, subtotal=subtotal, discount=discount, total=total,
                period_start=period[0], period_end=period[1], pending_action=pending_action or {}, created_at=now,
            )
    except IntegrityError:
        raise AlreadyBilled("This was billed already.", details={"billingKey": billing_key}) from None
    for number, line in enumerate(lines, start=1):
        InvoiceLine.objects.create(
            invoice=invoice, number=number, kind=line.kind, description=line.description[:300],
            quantity=line.quantity, unit_amount=line.unit_amount if line.unit_amount is not None else line.amount,
            amount=line.amount,
        )
    if subtotal > 0:
        specs = [credit(accounts.REVENUE, subtotal, currency)]
        if discount:
            specs.append(debit(accounts.DISCOUNTS, discount, currency))
        if total:
            specs.append(debit(accounts.RECEIVABLE, total, currency))
        entry = entry_post(lines=specs, memo=f"Invoice {invoice.number} issued", posted_at=now, source=f"invoice:{invoice.pk}")
        Invoice.objects.filter(pk=invoice.pk).update(ledger_entry=entry)
        invoice.ledger_entry = entry
    event_emit(type="invoice.created", customer_id=customer.pk, data=invoice_event_data(invoice), now=now)
    if total == 0:
        _mark_paid(invoice=invoice, now=now)
    return invoice


def invoice_event_data(invoice: Invoice) -> dict:
    return {"invoiceId": invoice.pk, "number": invoice.number, "total": invoice.total, "currency": invoice.currency,
            "status": invoice.status, "reason": invoice.reason}


def _mark_paid(*, invoice: Invoice, now: datetime) -> None:
    invoice.status = Invoice.Status.PAID
    invoice.paid_at = now
    invoice.closed_at = now
    invoice.next_attempt_at = None
    invoice.save(update_fields=["status", "paid_at", "closed_at", "next_attempt_at", "amount_paid"])
    event_emit(type="invoice.paid", customer_id=invoice.customer_id, data=invoice_event_data(invoice), now=now)


def payment_record(*, invoice: Invoice, status: str, gateway: str, ref: str, idempotency_key: str,
                   failure_code: str = "", now: datetime) -> Payment:
    """Record a charge attempt of the (locked, open) invoice's total. A success
    posts DR Cash / CR Receivable and marks the invoice paid."""
    payment = Payment.objects.create(
        invoice=invoice, customer_id=invoice.customer_id, kind=Payment.Kind.CHARGE, status=status, gateway=gateway,
        gateway_ref=ref, idempotency_key=idempotency_key, amount=invoice.total, currency=invoice.currency,
        failure_code=failure_code, created_at=now,
    )
    data = {**invoice_event_data(invoice), "paymentId": payment.pk, "amount": payment.amount}
    if status != Payment.Status.SUCCEEDED:
        if status == Payment.Status.FAILED:
            event_emit(type="payment.failed", customer_id=invoice.customer_id, data={**data, "failureCode": failure_code}, now=now)
        return payment
    entry = entry_post(
        lines=[debit(accounts.CASH, payment.amount, payment.currency), credit(accounts.RECEIVABLE, payment.amount, payment.currency)],
        memo=f"Payment of invoice {invoice.number}", posted_at=now, source=f"payment:{payment.pk}",
    )
    Payment.objects.filter(pk=payment.pk).update(ledger_entry=entry)
    invoice.amount_paid = invoice.total
    _mark_paid(invoice=invoice, now=now)
    event_emit(type="payment.succeeded", customer_id=invoice.customer_id, data=data, now=now)
    return payment


def payment_settle(*, payment: Payment, status: str, failure_code: str = "", now: datetime) -> Payment:
    """Settle a charge that waited for 3-D Secure (locked invoice, still open)."""
    invoice = payment.invoice
    Payment.objects.filter(pk=payment.pk).update(status=status, failure_code=failure_code)
    payment.status = status
    if status == Payment.Status.SUCCEEDED:
        entry = entry_post(
            lines=[debit(accounts.CASH, payment.amount, payment.currency), credit(accounts.RECEIVABLE, payment.amount, payment.currency)],
            memo=f"Payment of invoice {invoice.number}", posted_at=now, source=f"payment:{payment.pk}",
        )
        Payment.objects.filter(pk=payment.pk).update(ledger_entry=entry)
        invoice.amount_paid = invoice.total
        _mark_paid(invoice=invoice, now=now)
        event_emit(type="payment.succeeded", customer_id=invoice.customer_id,
                   data={**invoice_event_data(invoice), "paymentId": payment.pk, "amount": payment.amount}, now=now)
    else:
        event_emit(type="payment.failed", customer_id=invoice.customer_id,
                   data={**invoice_event_data(invoice), "paymentId": payment.pk, "failureCode": failure_code}, now=now)
    return payment


def refund_intent_record(*, invoice: Invoice, charge: Payment, amount: int, reason: str, now: datetime) -> Payment:
    """Record that ``amount`` of ``charge`` (a succeeded charge of the locked
    invoice) is to go back to the customer: a pending refund with its own
    idempotency key, no ledger entry yet (``refund_settle`` posts it once the
    gateway made the refund), due at once (``next_attempt_at``), so the cycle sends
    it if its sender dies first. Pending refunds count against what is left to refund."""
    if charge.unapplied:
        taken = sum(Payment.objects.filter(refund_of=charge, status__in=(Payment.Status.PENDING, Payment.Status.SUCCEEDED))
                    .values_list("amount", flat=True))
        refundable = charge.amount - taken
    else:
        pending = sum(invoice.payments.filter(kind=Payment.Kind.REFUND, status=Payment.Status.PENDING, unapplied=False)
                      .values_list("amount", flat=True))
        refundable = invoice.amount_paid - invoice.amount_refunded - pending
    if amount <= 0 or amount > refundable:
        raise Conflict("The refund exceeds what was paid.", details={"invoice": invoice.pk, "refundable": max(0, refundable)})
    n = invoice.payments.filter(kind=Payment.Kind.REFUND).count() + 1
    return Payment.objects.create(
        invoice=invoice, customer_id=invoice.customer_id, kind=Payment.Kind.REFUND, status=Payment.Status.PENDING,
        gateway=charge.gateway, idempotency_key=f"{invoice.pk}:refund:{n}", amount=amount, currency=charge.currency,
        refund_of=charge, reason=reason[:32], unapplied=charge.unapplied, next_attempt_at=now, created_at=now,
    )


def refund_settle(*, refund: Payment, invoice: Invoice, ref: str, now: datetime) -> Payment:
    """The gateway made the (locked, pending) refund: DR Refunds / CR Cash (DR
    Customer credits / CR Cash for unapplied cash), and payment.refunded."""
    debit_account = accounts.CUSTOMER_CREDIT if refund.unapplied else accounts.REFUNDS
    entry = entry_post(
        lines=[debit(debit_account, refund.amount, refund.currency), credit(accounts.CASH, refund.amount, refund.currency)],
        memo=f"Refund on invoice {invoice.number}", posted_at=now, source=f"refund:{refund.pk}",
    )
    Payment.objects.filter(pk=refund.pk).update(status=Payment.Status.SUCCEEDED, gateway_ref=ref, failure_code="",
                                                ledger_entry=entry, next_attempt_at=None)
    refund.status, refund.gateway_ref, refund.failure_code, refund.ledger_entry = Payment.Status.SUCCEEDED, ref, "", entry
    refund.next_attempt_at = None
    if not refund.unapplied:
        Invoice.objects.filter(pk=invoice.pk).update(amount_refunded=F("amount_refunded") + refund.amount)
        invoice.amount_refunded += refund.amount
    event_emit(type="payment.refunded", customer_id=invoice.customer_id,
               data={"invoiceId": invoice.pk, "paymentId": refund.pk, "chargeId": refund.refund_of_id,
                     "amount": refund.amount, "reason": refund.reason}, now=now)
    return refund


def unapplied_charge_record(*, payment: Payment, now: datetime) -> Payment:
    """A charge that waited for 3-D Secure succeeded at the gateway after its
    invoice stopped being open (voided, or paid another way): the money is
    ours to give back, not the invoice's. DR Cash / CR Customer credits; the
    invoice is left as it is; payment.succeeded says ``unapplied``."""
    invoice = payment.invoice
    entry = entry_post(
        lines=[debit(accounts.CASH, payment.amount, payment.currency),
               credit(accounts.CUSTOMER_CREDIT, payment.amount, payment.currency)],
        memo=f"Unapplied payment for invoice {invoice.number}", posted_at=now, source=f"payment:{payment.pk}",
    )
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.SUCCEEDED, failure_code="", unapplied=True,
                                                 ledger_entry=entry)
    payment.status, payment.unapplied, payment.ledger_entry = Payment.Status.SUCCEEDED, True, entry
    event_emit(type="payment.succeeded", customer_id=invoice.customer_id,
               data={**invoice_event_data(invoice), "paymentId": payment.pk, "amount": payment.amount, "unapplied": True},
               now=now)
    return payment


def invoice_void(*, invoice: Invoice, now: datetime) -> None:
    """Void an open, unpaid invoice: reverse its issue entry."""
    if invoice.status != Invoice.Status.OPEN or invoice.amount_paid:
        raise Conflict("Only an open, unpaid invoice can be voided.", details={"invoice": invoice.pk, "status": invoice.status})
    if invoice.ledger_entry_id:
        entry_reverse(entry=invoice.ledger_entry, memo=f"Invoice {invoice.number} voided", posted_at=now)
    invoice.status = Invoice.Status.VOID
    invoice.closed_at = now
    invoice.next_attempt_at = None
    invoice.save(update_fields=["status", "closed_at", "next_attempt_at"])
    event_emit(type="invoice.voided", customer_id=invoice.customer_id, data=invoice_event_data(invoice), now=now)


def invoice_write_off(*, invoice: Invoice, now: datetime) -> None:
    """Mark an open invoice uncollectible: its unpaid part moves to bad debt."""
    unpaid = invoice.total - invoice.amount_paid
    if unpaid:
        entry_post(
            lines=[debit(accounts.BAD_DEBT, unpaid, invoice.currency), credit(accounts.RECEIVABLE, unpaid, invoice.currency)],
            memo=f"Invoice {invoice.number} uncollectible", posted_at=now, source=f"invoice:{invoice.pk}",
        )
    invoice.status = Invoice.Status.UNCOLLECTIBLE
    invoice.closed_at = now
    invoice.next_attempt_at = None
    invoice.save(update_fields=["status", "closed_at", "next_attempt_at"])
    event_emit(type="invoice.uncollectible", customer_id=invoice.customer_id,
               data={**invoice_event_data(invoice), "amountUnpaid": unpaid}, now=now)
