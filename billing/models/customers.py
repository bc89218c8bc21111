from django.db import models


class Customer(models.Model):
    """A merchant's customer, known on the wire by the merchant's own id.

    Deleting a customer is a soft delete (``deleted_at``) so that invoices and
    ledger history keep their subject; the id may then be used again.
    """

    external_id = models.CharField(max_length=255)
    name = models.CharField(max_length=255, blank=True, default="")
    email = models.CharField(max_length=320, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)
    # The payment gateway's id for this customer (a Stripe cus_…), made on first need.
    gateway_ref = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["external_id"],
                condition=models.Q(deleted_at__isnull=True),
                name="customer_external_id_live_unique",
            ),
        ]
        indexes = [models.Index(fields=["external_id"], name="customer_external_id_idx")]

    def __str__(self):
        return self.external_id
