from django.db import models

from billing.ids import new_id


def new_id_evt() -> str:
    return new_id("evt")


class OutboxEvent(models.Model):
    """A merchant-facing event, written in the transaction of the change it reports.

    After commit the webhook fan-out (billing.services.webhooks) turns each
    into one delivery per listening endpoint and sets ``dispatched_at``.
    """

    id = models.CharField(primary_key=True, max_length=32, default=new_id_evt, editable=False)
    type = models.CharField(max_length=64, db_index=True)
    customer = models.ForeignKey("billing.Customer", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(db_index=True)
    # When the webhook fan-out made this event's deliveries (None: not yet).
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            # The fan-out's queue: only the few undispatched rows are in it.
            models.Index(fields=["created_at", "id"], condition=models.Q(dispatched_at__isnull=True),
                         name="outboxevent_undispatched_idx"),
        ]
