"""Balances: the hot-path running total per (customer, feature[, entity]) and its buckets.

``Balance`` is the row ``check``/``track`` touch with one conditional UPDATE:
  remaining = granted - usage - reserved   (negative only as a reported overdraft)
  usage     = Σ bucket.consumed + overage  (usage beyond every bucket)
``BalanceBucket`` says where the granted units come from (plan allowance that
resets, standalone grant that may expire, bought top-up) and how much of each
is consumed, so resets and expiry touch only their own part.
"""

from django.db import models
from django.db.models import F, Q

from billing.ids import new_id


def new_id_plck() -> str:
    return new_id("plck")


class Balance(models.Model):
    customer = models.ForeignKey("billing.Customer", on_delete=models.PROTECT, related_name="balances")
    feature = models.ForeignKey("billing.Feature", on_delete=models.PROTECT, related_name="+")
    entity = models.ForeignKey("billing.Entity", null=True, blank=True, on_delete=models.PROTECT, related_name="balances")
    unlimited = models.BooleanField(default=False)
    # True while an active bucket exists: the feature is part of what the customer has.
    included = models.BooleanField(default=False)
    granted = models.BigIntegerField(default=0)
    usage = models.BigIntegerField(default=0)
    reserved = models.BigIntegerField(default=0)
    overage = models.BigIntegerField(default=0, help_text="Units used beyond every bucket this period")
    overage_allowed = models.BooleanField(default=False)
    overage_price = models.BigIntegerField(null=True, blank=True, help_text="Minor units per overage unit")
    spend_cap = models.BigIntegerField(null=True, blank=True, help_text="Effective cap on overage spend (minor units)")
    currency = models.CharField(max_length=3, default="usd")
    # Set when a balance.low event fired, cleared when the balance is topped up again.
    low_notified = models.BooleanField(default=False)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "feature"], condition=Q(entity__isnull=True), name="balance_customer_feature_unique"),
            models.UniqueConstraint(fields=["customer", "feature", "entity"], condition=Q(entity__isnull=False), name="balance_entity_feature_unique"),
            models.CheckConstraint(condition=Q(granted__gte=0), name="balance_granted_non_negative"),
            models.CheckConstraint(condition=Q(usage__gte=0), name="balance_usage_non_negative"),
            models.CheckConstraint(condition=Q(reserved__gte=0), name="balance_reserved_non_negative"),
            models.CheckConstraint(condition=Q(overage__gte=0) & Q(overage__lte=F("usage")), name="balance_overage_within_usage"),
        ]

    @property
    def remaining(self) -> int:
        return self.granted - self.usage - self.reserved


class BalanceBucket(models.Model):
    class Kind(models.TextChoices):
        PLAN = "plan"  # a subscription's allowance; resets
        GRANT = "grant"  # createBalance; may expire
        TOPUP = "topup"  # bought credits; never reset or expire, spent last

    balance = models.ForeignKey(Balance, on_delete=models.PROTECT, related_name="buckets")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    subscription = models.ForeignKey("billing.Subscription", null=True, blank=True, on_delete=models.PROTECT, related_name="buckets")
    granted = models.BigIntegerField()
    consumed = models.BigIntegerField(default=0)
    unlimited = models.BooleanField(default=False)
    reset_interval = models.CharField(max_length=16, default="none")
    period_start = models.DateTimeField(null=True, blank=True)
    next_reset_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(granted__gte=0), name="bucket_granted_non_negative"),
            models.CheckConstraint(condition=Q(consumed__gte=0) & Q(consumed__lte=F("granted")), name="bucket_consumed_within_granted"),
        ]
        indexes = [
            models.Index(fields=["next_reset_at"], name="bucket_next_reset", condition=Q(active=True, next_reset_at__isnull=False)),
            models.Index(fields=["expires_at"], name="bucket_expiry", condition=Q(active=True, expires_at__isnull=False)),
        ]


class BalanceLock(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        CONSUMED = "consumed"
        RELEASED = "released"
        EXPIRED = "expired"

    id = models.CharField(primary_key=True, max_length=32, default=new_id_plck, editable=False)
    balance = models.ForeignKey(Balance, on_delete=models.PROTECT, related_name="locks")
    amount = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    consumed = models.BigIntegerField(default=0)
    released = models.BigIntegerField(default=0)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField()
    finalized_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="lock_amount_positive"),
            models.CheckConstraint(condition=Q(consumed__gte=0) & Q(released__gte=0), name="lock_parts_non_negative"),
            models.CheckConstraint(condition=Q(status__in=["open", "consumed", "released", "expired"]), name="lock_status_valid"),
        ]
        indexes = [models.Index(fields=["expires_at"], name="lock_open_expiry", condition=Q(status="open"))]


class SpendCap(models.Model):
    """A customer's cap on overage spend for one feature (minor units per period)."""

    customer = models.ForeignKey("billing.Customer", on_delete=models.CASCADE, related_name="spend_caps")
    feature = models.ForeignKey("billing.Feature", on_delete=models.PROTECT, related_name="+")
    cap = models.BigIntegerField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "feature"], name="spend_cap_unique"),
            models.CheckConstraint(condition=Q(cap__gte=0), name="spend_cap_non_negative"),
        ]


class ProductSpendCap(models.Model):
    """A product's default cap for customers who set none."""

    product = models.ForeignKey("billing.Product", on_delete=models.CASCADE, related_name="spend_caps")
    feature = models.ForeignKey("billing.Feature", on_delete=models.PROTECT, related_name="+")
    cap = models.BigIntegerField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product", "feature"], name="product_spend_cap_unique"),
            models.CheckConstraint(condition=Q(cap__gte=0), name="product_spend_cap_non_negative"),
        ]


class OverageRecord(models.Model):
    """Overage of one closed period, kept for period-end billing (the invoicing issue bills it)."""

    balance = models.ForeignKey(Balance, on_delete=models.PROTECT, related_name="overage_records")
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField()
    units = models.BigIntegerField()
    unit_price = models.BigIntegerField()
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    billed = models.BooleanField(default=False)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["balance", "period_end"], name="overage_record_once_per_period"),
            models.CheckConstraint(condition=Q(units__gt=0) & Q(amount__gte=0), name="overage_record_positive"),
        ]
