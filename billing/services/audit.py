"""The audit trail: one append-only row per mutating call, admin change and system job."""

from __future__ import annotations

from datetime import datetime

from billing.models import AuditEvent


def audit_record(
    *,
    actor_type: str,
    actor_id: str,
    action: str,
    now: datetime,
    target_type: str = "",
    target_id: str = "",
    request_id: str = "",
    data: dict | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        actor_type=actor_type,
        actor_id=str(actor_id)[:255],
        action=action[:100],
        target_type=target_type[:100],
        target_id=str(target_id)[:255],
        request_id=request_id[:100],
        data=data or {},
        created_at=now,
    )
