"""Merchant-facing events, written as outbox rows in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

from billing.models import OutboxEvent


def event_emit(*, type: str, customer_id: int | None, data: dict, now: datetime) -> OutboxEvent:
    return OutboxEvent.objects.create(type=type, customer_id=customer_id, data=data, created_at=now)
