"""The scheduled jobs run in a real Celery worker on Redis (PostgreSQL + Redis only)."""

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from billing.models import AuditEvent, IdempotencyKey
from billing.services.api_keys import api_key_create
from config.celery import app
from tests.conftest import ON_POSTGRES

ROOT = Path(__file__).resolve().parents[2]


class TestBeatSchedule:
    def test_every_scheduled_task_is_a_registered_task(self):
        app.loader.import_default_modules()
        for name, entry in app.conf.beat_schedule.items():
            assert entry["task"] in app.tasks, f"beat entry {name} names unknown task {entry['task']}"


@pytest.mark.postgres
@pytest.mark.skipif(not (ON_POSTGRES and settings.REDIS_URL), reason="needs PostgreSQL and Redis (DATABASE_URL and REDIS_URL), as CI runs")
@pytest.mark.django_db(transaction=True)
class TestRealWorker:
    def test_a_worker_on_redis_runs_the_purge_job_against_the_database(self):
        from billing.tasks import purge_idempotency_keys

        key, _ = api_key_create(name="worker test", type="secret", now=timezone.now())
        past = timezone.now() - timedelta(hours=1)
        IdempotencyKey.objects.create(api_key=key, key="old", request_hash="0" * 64, method="POST", path="/x",
                                      created_at=past - timedelta(days=1), expires_at=past)
        db = connection.settings_dict
        queue = f"test-{uuid.uuid4().hex[:12]}"
        auth = f"{db['USER']}:{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else db["USER"]
        url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        env = dict(os.environ, DATABASE_URL=url)  # the worker uses this test's database
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "-Q", queue, "--loglevel=INFO",
             "--without-heartbeat", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            purge_idempotency_keys.apply_async(queue=queue)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not AuditEvent.objects.filter(action="idempotency.purge").exists():
                assert worker.poll() is None, worker.stdout.read()
                time.sleep(0.2)
            event = AuditEvent.objects.filter(action="idempotency.purge").first()
            assert event is not None, "the worker did not run the job within 60 s"
            assert event.data == {"deleted": 1}
            assert not IdempotencyKey.objects.exists()
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
            connection.close()


@pytest.mark.postgres
@pytest.mark.skipif(not (ON_POSTGRES and settings.REDIS_URL), reason="needs PostgreSQL and Redis (DATABASE_URL and REDIS_URL), as CI runs")
@pytest.mark.django_db(transaction=True)
class TestRealWorkerAndBeat:
    def test_beat_and_a_worker_on_redis_renew_a_subscription_whose_period_ended(self, sk_client, tmp_path):
        from billing.models import Invoice, Subscription
        from tests.billing.billing_helpers import add_card, make_product, subscribe

        make_product(sk_client, "pro", amount=2000)
        add_card(sk_client)
        sub_id = subscribe(sk_client, "pro")["subscription"]["id"]
        # The period ended a minute ago: the next cycle beat sends must renew it.
        ended = timezone.now() - timedelta(minutes=1)
        Subscription.objects.filter(pk=sub_id).update(current_period_start=ended - timedelta(days=30), current_period_end=ended)
        db = connection.settings_dict
        queue = f"test-{uuid.uuid4().hex[:12]}"
        auth = f"{db['USER']}:{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else db["USER"]
        url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        env = dict(os.environ, DATABASE_URL=url, CELERY_TASK_DEFAULT_QUEUE=queue, BILLING_CYCLE_INTERVAL_SECONDS="1")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--beat", "-s", str(tmp_path / "beat-schedule"),
             "--pool=solo", "-Q", queue, "--loglevel=INFO", "--without-heartbeat", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not Invoice.objects.filter(reason="renewal", status="paid").exists():
                assert worker.poll() is None, worker.stdout.read()
                time.sleep(0.5)
            renewal = Invoice.objects.filter(reason="renewal").first()
            assert renewal is not None, "beat and the worker did not renew within 90 s"
            assert (renewal.status, renewal.total, renewal.period_start) == ("paid", 2000, ended)
            sub = Subscription.objects.get(pk=sub_id)
            assert (sub.status, sub.current_period_start) == ("active", ended)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
            connection.close()
