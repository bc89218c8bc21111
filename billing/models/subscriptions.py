from django.db import models
from django.db.models import Q

from billing.ids import new_id_psub


class Subscription(models.Model):
    """A customer's hold on one product version.

    The foundation keeps only what product versioning needs (which version a
    customer is on, and whether the subscription is live); the subscriptions
    issue adds periods' billing, proration and the services that write it.
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

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gte=1), name="subscription_quantity_positive"),
        ]
        indexes = [models.Index(fields=["version", "status"], name="subscription_version_status")]

    def __str__(self):
        return self.id
