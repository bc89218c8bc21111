from django.db import models


class AuditEvent(models.Model):
    """Who did what to which object, and when. Append-only."""

    class ActorType(models.TextChoices):
        API_KEY = "api_key"
        STAFF = "staff"
        SYSTEM = "system"
        SERVICE = "service"

    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=255)
    action = models.CharField(max_length=100)
    target_type = models.CharField(max_length=100, blank=True, default="")
    target_id = models.CharField(max_length=255, blank=True, default="")
    request_id = models.CharField(max_length=100, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["actor_id", "id"], name="audit_actor_idx"),
            models.Index(fields=["action", "id"], name="audit_action_idx"),
        ]

    def __str__(self):
        return f"{self.actor_type}:{self.actor_id} {self.action} {self.target_type}:{self.target_id}"

    @property
    def actor(self) -> str:
        return f"{self.actor_type}:{self.actor_id}"
