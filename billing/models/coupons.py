"""Coupons and their redemptions."""

from django.db import models
from django.db.models import Q

from billing.ids import new_id_pcpn


class Coupon(models.Model):
    """A discount: ``percentage`` (value 1-100), ``fixed`` (value in minor
    units of ``currency``) or ``trial_extension`` (value in days); for one
    invoice (``once``), ``duration_months`` renewals (``repeating``) or all
    (``forever``). ``times_redeemed`` only grows by a conditional UPDATE, so
    ``max_redemptions`` holds under concurrency."""

    class Type(models.TextChoices):
        PERCENTAGE = "percentage"
        FIXED = "fixed"
        TRIAL_EXTENSION = "trial_extension"

    class Duration(models.TextChoices):
        ONCE = "once"
        REPEATING = "repeating"
        FOREVER = "forever"

    id = models.CharField(primary_key=True, max_length=32, default=new_id_pcpn, editable=False)
    code = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True, default="")
    type = models.CharField(max_length=16, choices=Type.choices)
    value = models.BigIntegerField()
    currency = models.CharField(max_length=3, blank=True, default="")
    duration = models.CharField(max_length=16, choices=Duration.choices, default=Duration.ONCE)
    duration_months = models.PositiveIntegerField(null=True, blank=True)
    max_redemptions = models.PositiveIntegerField(null=True, blank=True)
    times_redeemed = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(null=True, blank=True)
    archived = models.BooleanField(default=False)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(value__gt=0), name="coupon_value_positive"),
            models.CheckConstraint(condition=~Q(type="percentage") | Q(value__lte=100), name="coupon_percentage_at_most_100"),
            models.CheckConstraint(
                condition=Q(max_redemptions__isnull=True) | Q(times_redeemed__lte=models.F("max_redemptions")),
                name="coupon_redemptions_within_max",
            ),
            models.CheckConstraint(
                condition=~Q(duration="repeating") | Q(duration_months__gte=1), name="coupon_repeating_has_months"
            ),
        ]

    def __str__(self):
        return self.code


class CouponRedemption(models.Model):
    coupon = models.ForeignKey(Coupon, on_delete=models.PROTECT, related_name="redemptions")
    customer = models.ForeignKey("billing.Customer", on_delete=models.PROTECT, related_name="+")
    subscription = models.ForeignKey("billing.Subscription", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()
