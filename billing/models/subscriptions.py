from django.db import models
from django.db.models import Q

from billing.ids import new_id_psub


class Subscription(models.Model):
    """A customer's hold on one product version, billed period by period.

    ``slot`` makes "one main plan per product group" a database rule: a main
    plan with a group takes ``group:<name>``, any other product
    ``product:<id>``, and a partial unique index allows one live subscription
    per (customer, slot). ``incomplete`` subscriptions (waiting for a first
    payment) take no slot.
    """

    class Status(models.TextChoices):
        INCOMPLETE = "incomplete"
        TRIALING = "trialing"
        ACTIVE = "active"
        PAST_DUE = "past_due"
        PAUSED = "paused"
        CANCELED = "canceled"
        EXPIRED = "expired"

    LIVE_STATUSES = ("trialing", "active", "past_due", "paused")
    # Statuses the period-end cycle renews (paused ones wait for resume).
    BILLED_STATUSES = ("trialing", "active", "past_due")

    id = models.CharField(primary_key=True, max_length=32, default=new_id_psub, editable=False)
    customer = models.ForeignKey("billing.Customer", on_delete=models.PROTECT, related_name="subscriptions")
    product = models.ForeignKey("billing.Product", on_delete=models.PROTECT, related_name="subscriptions")
    version = models.ForeignKey("billing.ProductVersion", on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=16, choices=Status.choices)
    quantity = models.PositiveIntegerField(default=1)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    trial_end = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    canceled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    slot = models.CharField(max_length=140, default="")
    # Price snapshot of the version's recurring price (0 / "" for free and one-off).
    unit_amount = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, default="usd")
    billing_interval = models.CharField(max_length=8, blank=True, default="")
    # A downgrade waits for the period end here.
    scheduled_product = models.ForeignKey(
        "billing.Product", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    coupon = models.ForeignKey("billing.Coupon", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # Renewals the coupon still covers (None: forever; 0: used up).
    coupon_cycles_left = models.IntegerField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gte=1), name="subscription_quantity_positive"),
            models.CheckConstraint(condition=Q(unit_amount__gte=0), name="subscription_amount_non_negative"),
            models.UniqueConstraint(
                fields=["customer", "slot"],
                condition=Q(status__in=["trialing", "active", "past_due", "paused"]),
                name="subscription_one_live_per_slot",
            ),
        ]
        indexes = [models.Index(fields=["version", "status"], name="subscription_version_status")]

    def __str__(self):
        return self.id
