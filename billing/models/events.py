from django.db import models

from billing.ids import new_id


def new_id_evt() -> str:
    return new_id("evt")


class OutboxEvent(models.Model):
    """A merchant-facing event, written in the transaction of the change it reports.

    The webhooks issue delivers these after commit; until then they are the
    record of what happened (entitlement.exhausted, balance.low, lock.expired…).
    """

    id = models.CharField(primary_key=True, max_length=32, default=new_id_evt, editable=False)
    type = models.CharField(max_length=64, db_index=True)
    customer = models.ForeignKey("billing.Customer", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["created_at"]
