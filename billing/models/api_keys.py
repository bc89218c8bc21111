from django.db import models

from billing.ids import new_id_pak


class ApiKey(models.Model):
    """A merchant API key. Only a SHA-256 hash and a masked form are stored."""

    class Type(models.TextChoices):
        SECRET = "secret"
        PUBLISHABLE = "publishable"

    id = models.CharField(primary_key=True, max_length=32, default=new_id_pak, editable=False)
    name = models.CharField(max_length=200)
    type = models.CharField(max_length=16, choices=Type.choices)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    masked_key = models.CharField(max_length=40, editable=False)
    created_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(type__in=["secret", "publishable"]), name="apikey_type_valid"),
        ]

    def __str__(self):
        return f"{self.name} ({self.masked_key})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
