"""Invoices with numbered, immutable lines, and the payments that settle them."""

from django.db import models
from django.db.models import Q

from billing.ids import new_id_pcs, new_id_pinv, new_id_ppay, new_id_ppm


class Invoice(models.Model):
    """What a customer owes for one reason (a period, an upgrade, overage, a top-up).

    ``billing_key`` names the reason uniquely ("renewal:psub_…:<period end>"),
    so the period-end cycle can run twice, or in two processes, and bill once.
    Money fields are integer minor units; total = subtotal - discount.
    """

    class Status(models.TextChoices):
        OPEN = "open"
        PAID = "paid"
        VOID = "void"
        UNCOLLECTIBLE = "uncollectible"

    id = models.CharField(primary_key=True, max_length=32, default=new_id_pinv, editable=False)
    number = models.CharField(max_length=32, unique=True)
    customer = models.ForeignKey("billing.Customer", on_delete=models.PROTECT, related_name="invoices")
    subscription = models.ForeignKey(
        "billing.Subscription", null=True, blank=True, on_delete=models.PROTECT, related_name="invoices"
    )
    billing_key = models.CharField(max_length=200, unique=True)
    reason = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    currency = models.CharField(max_length=3)
    subtotal = models.BigIntegerField()
    discount = models.BigIntegerField(default=0)
    total = models.BigIntegerField()
    amount_paid = models.BigIntegerField(default=0)
    amount_refunded = models.BigIntegerField(default=0)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    # What paying this invoice does (activate a subscription, switch plans,
    # grant top-ups, change a quantity); applied in the payment's transaction.
    pending_action = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    ledger_entry = models.ForeignKey("ledger.Entry", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()
    paid_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["open", "paid", "void", "uncollectible"]), name="invoice_status_valid"),
            models.CheckConstraint(
                condition=Q(subtotal__gte=0) & Q(discount__gte=0) & Q(total__gte=0) & Q(amount_paid__gte=0) & Q(amount_refunded__gte=0),
                name="invoice_amounts_non_negative",
            ),
            models.CheckConstraint(condition=Q(total=models.F("subtotal") - models.F("discount")), name="invoice_total_is_subtotal_less_discount"),
            models.CheckConstraint(condition=Q(amount_paid__lte=models.F("total")), name="invoice_paid_at_most_total"),
            models.CheckConstraint(condition=Q(amount_refunded__lte=models.F("amount_paid")), name="invoice_refunded_at_most_paid"),
        ]
        indexes = [
            models.Index(fields=["customer", "status"], name="invoice_customer_status"),
            models.Index(fields=["next_attempt_at"], name="invoice_retry_due", condition=Q(status="open")),
        ]

    def __str__(self):
        return self.number


class InvoiceLine(models.Model):
    """One numbered line. Credits (unused time, discounts) are negative amounts."""

    class Kind(models.TextChoices):
        PLAN = "plan"
        PRORATION = "proration"
        OVERAGE = "overage"
        DISCOUNT = "discount"
        TOPUP = "topup"

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    number = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    description = models.CharField(max_length=300)
    quantity = models.BigIntegerField(default=1)
    unit_amount = models.BigIntegerField()
    amount = models.BigIntegerField()

    class Meta:
        ordering = ["invoice", "number"]
        constraints = [models.UniqueConstraint(fields=["invoice", "number"], name="invoice_line_number_unique")]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("invoice lines are immutable")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("invoice lines are immutable")


class PaymentMethod(models.Model):
    """A card saved at the gateway; the newest attached is the default."""

    id = models.CharField(primary_key=True, max_length=32, default=new_id_ppm, editable=False)
    customer = models.ForeignKey("billing.Customer", on_delete=models.PROTECT, related_name="payment_methods")
    gateway = models.CharField(max_length=16)
    gateway_id = models.CharField(max_length=255)
    brand = models.CharField(max_length=32, blank=True, default="")
    last4 = models.CharField(max_length=4, blank=True, default="")
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["customer"], condition=Q(is_default=True), name="payment_method_one_default"),
        ]


class Payment(models.Model):
    """One attempt to move money at the gateway: a charge or a refund.

    A refund is recorded ``pending`` in the transaction of the change that makes
    it due, sent to the gateway after the commit with its own key, and marked
    ``succeeded`` (with its ledger entry) once the gateway made it; the billing
    cycle sends a refund still pending again, with the same key, when its
    ``next_attempt_at`` is due (a growing backoff), until REFUND_MAX_ATTEMPTS
    calls failed; then it stays pending with no next attempt, for staff.

    An ``unapplied`` charge is money the gateway took for an invoice that was no
    longer open (a 3-D Secure charge completed after its checkout expired): it
    is held as a liability (2100) and refunded at once, never applied."""

    class Kind(models.TextChoices):
        CHARGE = "charge"
        REFUND = "refund"

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        REQUIRES_ACTION = "requires_action"
        PENDING = "pending"  # a refund not made at the gateway yet

    id = models.CharField(primary_key=True, max_length=32, default=new_id_ppay, editable=False)
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="payments")
    customer = models.ForeignKey("billing.Customer", on_delete=models.PROTECT, related_name="payments")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices)
    gateway = models.CharField(max_length=16)
    gateway_ref = models.CharField(max_length=255, blank=True, default="")
    idempotency_key = models.CharField(max_length=200, unique=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    failure_code = models.CharField(max_length=64, blank=True, default="")
    ledger_entry = models.ForeignKey("ledger.Entry", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # A refund: the charge it gives money back from, and why (the payment.refunded event says it).
    refund_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="refunds")
    reason = models.CharField(max_length=32, blank=True, default="")
    unapplied = models.BooleanField(default=False)
    # A pending refund's schedule: gateway calls made so far, and when the cycle sends it
    # next (null once REFUND_MAX_ATTEMPTS failed: it waits for staff, see refund.failed).
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive")]
        indexes = [
            models.Index(fields=["created_at"], name="payment_refund_pending", condition=Q(status="pending")),
            models.Index(fields=["next_attempt_at"], name="payment_refund_retry_due",
                         condition=Q(kind="refund", status="pending")),
        ]


class CheckoutSession(models.Model):
    """A hosted page where the customer pays an open invoice (entering a card,
    or completing 3-D Secure for one on file). Completing it activates what
    the invoice was for."""

    class Status(models.TextChoices):
        OPEN = "open"
        COMPLETE = "complete"
        CANCELED = "canceled"

    id = models.CharField(primary_key=True, max_length=32, default=new_id_pcs, editable=False)
    customer = models.ForeignKey("billing.Customer", on_delete=models.PROTECT, related_name="+")
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="checkouts")
    subscription = models.ForeignKey("billing.Subscription", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # Set when the session waits for 3-D Secure on this payment.
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    success_url = models.URLField(max_length=2000, blank=True, default="")
    cancel_url = models.URLField(max_length=2000, blank=True, default="")
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField()


class GatewayEvent(models.Model):
    """An inbound gateway webhook, stored once per event id (processing is exactly once)."""

    gateway = models.CharField(max_length=16)
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["gateway", "event_id"], name="gateway_event_once")]


class InvoiceCounter(models.Model):
    """The last invoice number given, one row per prefix. It grows by one
    conditional UPDATE in the invoice's transaction, so numbers have no gaps
    among committed invoices."""

    prefix = models.CharField(primary_key=True, max_length=16)
    value = models.PositiveBigIntegerField(default=0)
