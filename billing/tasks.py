"""Celery tasks: thin, keyword-only, idempotent. Rules live in services."""

from celery import shared_task
from django.utils import timezone

from billing.api.idempotency import idempotency_purge_expired
from billing.services.audit import audit_record


@shared_task
def purge_idempotency_keys(**kwargs) -> int:
    """Delete stored answers past their 24 h (IDEMPOTENCY_TTL_SECONDS)."""
    now = timezone.now()
    deleted = idempotency_purge_expired(now=now)
    audit_record(actor_type="system", actor_id="purge_idempotency_keys", action="idempotency.purge",
                 data={"deleted": deleted}, now=now)
    return deleted


@shared_task
def run_billing_cycle(**kwargs) -> dict:
    """Every minute: the whole period-end cycle as of now (idempotent; see
    billing.services.cycle.billing_cycle_run)."""
    from billing.services.cycle import billing_cycle_run

    return billing_cycle_run(now=timezone.now(), actor="beat")


@shared_task
def webhooks_dispatch(**kwargs) -> int:
    """Enqueued after a transaction that emitted events commits: fan them out
    into deliveries (billing.services.webhooks.webhook_events_dispatch)."""
    from billing.services.webhooks import webhook_events_dispatch

    return webhook_events_dispatch(now=timezone.now()).events


@shared_task
def webhook_deliver(*, delivery_id: str, **kwargs) -> bool:
    """One attempt of one delivery, if it is still due (a second copy of the task is a no-op)."""
    from billing.services.webhooks import webhook_delivery_attempt, webhook_retry_soon

    now = timezone.now()
    attempt = webhook_delivery_attempt(delivery_id=delivery_id, now=now)
    if attempt is not None and not attempt.succeeded:
        webhook_retry_soon(delivery_id=delivery_id, now=now)
    return bool(attempt and attempt.succeeded)


@shared_task
def webhooks_sweep(**kwargs) -> dict:
    """Beat, every WEBHOOK_SWEEP_INTERVAL_SECONDS: fan out events the broker lost
    and enqueue every delivery that is due (retries among them)."""
    from billing.services.webhooks import webhook_sweep

    return webhook_sweep(now=timezone.now())
