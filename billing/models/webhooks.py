"""Outgoing webhooks: the merchant's endpoints, one delivery per endpoint and
event, and every attempt of a delivery (API.md, "Outgoing webhooks").

An OutboxEvent is fanned out once (``OutboxEvent.dispatched_at``) into a
``WebhookDelivery`` for each active endpoint that listens to its type; each
endpoint numbers its deliveries 1, 2, 3… (``sequence``) so a receiver can put
events back in order. A delivery is retried with growing backoff until it
succeeds or its attempts run out; every attempt leaves a ``WebhookAttempt``.
"""

from django.db import models
from django.db.models import Q

from billing.ids import new_id_pwh, new_id_pwhd

RESPONSE_EXCERPT_MAX = 1024  # characters of the receiver's answer kept per attempt


class WebhookEndpoint(models.Model):
    """A URL the service POSTs events to. ``events`` empty or ``["*"]`` means every
    type. The signing ``secret`` is needed in clear to sign, and the API shows it
    only in the answer to the create. Deleting is a soft delete (history stays)."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        DISABLED = "disabled"

    id = models.CharField(primary_key=True, max_length=32, default=new_id_pwh, editable=False)
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list, blank=True)
    secret = models.CharField(max_length=100, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    disabled_reason = models.CharField(max_length=300, blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Set by the first failed attempt after a success (or ever); cleared by a success.
    failing_since = models.DateTimeField(null=True, blank=True)
    # The sequence number the next delivery to this endpoint gets (1, 2, 3…).
    next_sequence = models.BigIntegerField(default=1)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["active", "disabled"]), name="webhookendpoint_status_valid"),
            models.CheckConstraint(condition=Q(next_sequence__gte=1), name="webhookendpoint_next_sequence_positive"),
        ]

    def __str__(self):
        return f"{self.url} ({self.pk})"

    def listens_to(self, event_type: str) -> bool:
        return not self.events or "*" in self.events or event_type in self.events


class WebhookDelivery(models.Model):
    """One event to one endpoint. ``next_attempt_at`` is when the next attempt is
    due (while pending); a worker claims an attempt by a conditional UPDATE that
    increments ``attempts`` and pushes ``next_attempt_at`` past the HTTP timeout,
    so two workers never send the same attempt."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.CharField(primary_key=True, max_length=32, default=new_id_pwhd, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.PROTECT, related_name="deliveries")
    event = models.ForeignKey("billing.OutboxEvent", on_delete=models.PROTECT, related_name="webhook_deliveries")
    sequence = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    succeeded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-sequence"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event"], name="webhookdelivery_one_per_endpoint_event"),
            models.UniqueConstraint(fields=["endpoint", "sequence"], name="webhookdelivery_sequence_unique"),
            models.CheckConstraint(condition=Q(status__in=["pending", "succeeded", "failed"]),
                                   name="webhookdelivery_status_valid"),
            models.CheckConstraint(condition=Q(sequence__gte=1), name="webhookdelivery_sequence_positive"),
        ]
        indexes = [
            # The sweeper's question: which pending deliveries are due?
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="webhookdelivery_due_idx"),
        ]

    def __str__(self):
        return f"{self.event_id} → {self.endpoint_id} #{self.sequence}"


class WebhookAttempt(models.Model):
    """One POST of a delivery and what came back (or the error, when nothing did)."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.PROTECT, related_name="attempt_rows")
    number = models.PositiveIntegerField()
    attempted_at = models.DateTimeField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    response_excerpt = models.TextField(blank=True, default="")
    error = models.CharField(max_length=500, blank=True, default="")
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhookattempt_one_per_number"),
            models.CheckConstraint(condition=Q(number__gte=1), name="webhookattempt_number_positive"),
        ]

    def __str__(self):
        return f"attempt {self.number} of {self.delivery_id}"
