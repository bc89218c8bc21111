"""The credits API's own rows. The credits themselves are the workspace's
``billing.Balance`` of the credit feature (settings.BILLING_CREDITS_FEATURE)
and its buckets, the same rows ``check`` and ``track`` use.

``CreditEntry`` is the credit ledger: one append-only row per debit and per
refund, in units (no money moves: see docs/billing-system.md). A debit keeps
which buckets gave how many units (``buckets``), so a refund can put them back
where they came from. The database refuses a second debit of one
(jobId, sourceService) and a second use of one idempotency key.
"""

from django.db import models
from django.db.models import Q

from billing.ids import new_id
from billing.models import Customer


def new_id_cle() -> str:
    return new_id("cle")


class Wallet(models.Model):
    """Staff's hold on a workspace's credits: while ``frozen`` the credits API
    refuses debits with 423 WALLET_LOCKED. Made on the first freeze."""

    customer = models.OneToOneField("billing.Customer", on_delete=models.PROTECT, related_name="credit_wallet")
    frozen = models.BooleanField(default=False)
    frozen_at = models.DateTimeField(null=True, blank=True)
    frozen_by = models.CharField(max_length=255, blank=True, default="")
    updated_at = models.DateTimeField()

    def __str__(self):
        return f"wallet of {self.customer_id}"


class Workspace(Customer):
    """A customer seen as a credit wallet (the staff console's "Credit wallets" page)."""

    class Meta:
        proxy = True
        verbose_name = "credit wallet"
        verbose_name_plural = "credit wallets"


class CreditEntry(models.Model):
    class Kind(models.TextChoices):
        DEBIT = "debit"
        REFUND = "refund"

    id = models.CharField(primary_key=True, max_length=32, default=new_id_cle, editable=False)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # No index of its own: credit_entry_customer (customer, created_at) serves its lookups and
    # the PROTECT check; a debit inserts one row, so every index is paid for on the hot path.
    customer = models.ForeignKey("billing.Customer", on_delete=models.PROTECT, related_name="+", db_index=False)
    balance = models.ForeignKey("billing.Balance", on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField(help_text="Credits debited, or credits of the debit this refund covers")
    # A refund: units put back into the balance (the rest had lapsed with the bucket's period).
    returned = models.BigIntegerField(default=0)
    refund_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="refunds")
    source_service = models.CharField(max_length=100)
    job_id = models.CharField(max_length=255)
    idempotency_key = models.CharField(max_length=255)
    # sha256 of what makes two requests "the same" (a retry replays only a same request).
    fingerprint = models.CharField(max_length=64)
    caller = models.CharField(max_length=100, blank=True, default="", help_text="X-Service-Name of the signed request")
    actor_user_id = models.CharField(max_length=255, blank=True, default="")
    reason = models.CharField(max_length=500, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    # Debit: {bucket id: units taken}. Refund: {bucket id: units of the debit's share it covers}.
    buckets = models.JSONField(default=dict, blank=True)
    # The wallet right after this entry: what the first response said, kept for replays.
    balance_subscription_after = models.BigIntegerField()
    balance_topup_after = models.BigIntegerField()
    total_after = models.BigIntegerField()
    created_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "credit entries"
        constraints = [
            models.UniqueConstraint(fields=["kind", "idempotency_key"], name="credit_entry_key_unique"),
            models.UniqueConstraint(
                fields=["source_service", "job_id"], condition=Q(kind="debit"), name="credit_debit_job_unique"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="credit_entry_amount_positive"),
            models.CheckConstraint(condition=Q(returned__gte=0) & Q(returned__lte=models.F("amount")),
                                   name="credit_entry_returned_within_amount"),
            models.CheckConstraint(
                condition=(Q(kind="debit") & Q(refund_of__isnull=True)) | (Q(kind="refund") & Q(refund_of__isnull=False)),
                name="credit_entry_refund_has_debit",
            ),
        ]
        indexes = [models.Index(fields=["customer", "created_at"], name="credit_entry_customer")]

    def __str__(self):
        return self.id


class SeenSignature(models.Model):
    """Signatures of accepted credits requests, kept for the replay window when
    no Redis is configured (with Redis they live in the cache)."""

    signature = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField(db_index=True)
