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
