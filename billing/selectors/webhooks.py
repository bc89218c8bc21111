"""Reads of outgoing webhooks: endpoints, their deliveries, and which are in trouble."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q

from billing.errors import NotFound
from billing.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


def webhook_endpoint_list() -> list[WebhookEndpoint]:
    """The merchant's endpoints that are not deleted, newest first."""
    return list(WebhookEndpoint.objects.filter(deleted_at__isnull=True).order_by("-created_at", "-id"))


def webhook_endpoint_get(*, endpoint_id: str) -> WebhookEndpoint:
    """A live endpoint. Raises NotFound."""
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id, deleted_at__isnull=True).first()
    if endpoint is None:
        raise NotFound("webhook", endpoint_id)
    return endpoint


@dataclass(frozen=True)
class FailingEndpoint:
    """An endpoint staff should look at: disabled, or failing since ``failing_since``."""

    endpoint: WebhookEndpoint
    id: str
    url: str
    status: str  # "active" (still retried) or "disabled"
    disabled_reason: str
    disabled_at: datetime | None
    failing_since: datetime | None
    failing_for: timedelta | None  # now - failing_since
    pending_deliveries: int  # still to be sent (they wait while the endpoint is disabled)
    failed_deliveries: int  # gave up after every retry
    failed_attempts_24h: int  # attempts that failed in the 24 h before now


def webhook_endpoints_failing(*, now: datetime) -> list[FailingEndpoint]:
    """Live endpoints that are disabled or whose deliveries have been failing
    (``failing_since`` set), with counts; disabled first, then longest failing."""
    endpoints = list(
        WebhookEndpoint.objects.filter(deleted_at__isnull=True)
        .filter(Q(status=WebhookEndpoint.Status.DISABLED) | Q(failing_since__isnull=False))
        .annotate(
            pending=Count("deliveries", filter=Q(deliveries__status=WebhookDelivery.Status.PENDING)),
            failed=Count("deliveries", filter=Q(deliveries__status=WebhookDelivery.Status.FAILED)),
        )
    )
    if not endpoints:
        return []
    recent = dict(
        WebhookAttempt.objects.filter(
            delivery__endpoint__in=[e.pk for e in endpoints], succeeded=False,
            attempted_at__gt=now - timedelta(hours=24), attempted_at__lte=now,
        )
        .values("delivery__endpoint").annotate(n=Count("id")).values_list("delivery__endpoint", "n")
    )
    rows = [
        FailingEndpoint(
            endpoint=e, id=e.pk, url=e.url, status=e.status, disabled_reason=e.disabled_reason,
            disabled_at=e.disabled_at, failing_since=e.failing_since,
            failing_for=(now - e.failing_since) if e.failing_since else None,
            pending_deliveries=e.pending, failed_deliveries=e.failed, failed_attempts_24h=recent.get(e.pk, 0),
        )
        for e in endpoints
    ]
    rows.sort(key=lambda r: (r.status != WebhookEndpoint.Status.DISABLED, r.failing_since or now, r.id))
    return rows
