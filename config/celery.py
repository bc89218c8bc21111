"""The Celery app and its beat schedule."""

import os

from celery import Celery
from celery.schedules import crontab
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("billing")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    "billing-cycle": {
        "task": "billing.tasks.run_billing_cycle",
        "schedule": settings.BILLING_CYCLE_INTERVAL_SECONDS,
    },
    "webhooks-sweep": {
        "task": "billing.tasks.webhooks_sweep",
        "schedule": settings.WEBHOOK_SWEEP_INTERVAL_SECONDS,
    },
    "purge-expired-idempotency-keys": {
        "task": "billing.tasks.purge_idempotency_keys",
        "schedule": crontab(minute=17),
    },
}
