from __future__ import annotations

from datetime import datetime

from billing.models import AuditEvent


def audit_event_list(
    *, actor: str | None, action: str | None, since: datetime | None, before_id: int | None, limit: int
) -> list[AuditEvent]:
    """Newest first. ``actor`` is ``type:id`` or a bare id."""
    qs = AuditEvent.objects.order_by("-id")
    if actor:
        actor_type, sep, actor_id = actor.partition(":")
        qs = qs.filter(actor_type=actor_type, actor_id=actor_id) if sep else qs.filter(actor_id=actor)
    if action:
        qs = qs.filter(action=action)
    if since:
        qs = qs.filter(created_at__gte=since)
    if before_id is not None:
        qs = qs.filter(id__lt=before_id)
    return list(qs[:limit])
