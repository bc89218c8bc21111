"""Outgoing webhooks against a real HTTP receiver (http.server on a free port),
verified with the SDK's verify_webhook; the schedule driven with an explicit ``now``;
one end-to-end run with a real Celery worker and beat on Redis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.contrib.admin.utils import quote as admin_quote
from django.db import connection, transaction
from django.utils import timezone

from billing.models import AuditEvent, Customer, OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from billing.selectors.webhooks import webhook_endpoints_failing
from billing.services.customers import customer_delete, customer_get_or_create
from billing.services.events import EVENT_TYPES, event_emit
from billing.services.webhooks import (
    webhook_delivery_attempt,
    webhook_endpoint_create,
    webhook_events_dispatch,
    webhook_sweep,
)
from tests.concurrency import run_concurrently
from tests.conftest import ON_POSTGRES, postgres_only

ROOT = Path(__file__).resolve().parents[2]
SDK_SRC = ROOT / "sdk" / "python" / "src"
if str(SDK_SRC) not in sys.path:
    sys.path.insert(0, str(SDK_SRC))

from cynco_billing.errors import WebhookVerificationError  # noqa: E402
from cynco_billing.webhooks import verify_webhook  # noqa: E402

T0 = timezone.now().replace(microsecond=0) - timedelta(days=30)


class Receiver:
    """A merchant's endpoint: records every request, answers the next status in
    ``statuses`` (then 200), with a body longer than the 1 KB the service keeps."""

    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append({"headers": dict(self.headers), "body": body})
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                answer = (f"status {status} " + "x" * 2000).encode()
                self.send_response(status)
                if 300 <= status < 400:  # to a page that answers 200, so following it would "succeed"
                    self.send_header("Location", receiver.url + "/moved")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_GET(self):
                with receiver.lock:
                    receiver.requests.append({"headers": dict(self.headers), "body": b"", "method": "GET"})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def events(self, secret: str, now=None) -> list[dict]:
        """Every request verified with the SDK (raises if one does not verify)."""
        return [verify_webhook(r["body"], r["headers"]["X-Cynco-Signature"], secret,
                               now=None if now is None else now.timestamp()) for r in self.requests]


@pytest.fixture(autouse=True)
def fresh_endpoint_cache():
    """Each test sees its own endpoints, not what the previous test left in the
    per-process "is any endpoint active" cache."""
    from billing.services.webhooks import _active_endpoints_forget

    _active_endpoints_forget()
    yield
    _active_endpoints_forget()


@pytest.fixture
def receiver():
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def endpoint_for(receiver, events=(), now=T0):
    endpoint, secret = webhook_endpoint_create(url=receiver.url, events=list(events), now=now)
    return endpoint, secret


def customer_at(external_id, now):
    return customer_get_or_create(external_id=external_id, name=external_id.title(), now=now)[0]


@pytest.mark.django_db
class TestSignedDelivery:
    def test_an_event_reaches_the_receiver_signed_with_its_headers_and_verifies_with_the_sdk(self, receiver):
        endpoint, secret = endpoint_for(receiver)
        assert secret.startswith("whsec_") and endpoint.pk.startswith("pwh_")
        now = T0 + timedelta(seconds=5)
        customer_at("acme", now)
        [delivery_id] = webhook_events_dispatch(now=now).deliveries
        attempt = webhook_delivery_attempt(delivery_id=delivery_id, now=now)

        assert attempt.succeeded and attempt.status_code == 200
        [request] = receiver.requests
        [event] = receiver.events(secret, now=now)
        stored = OutboxEvent.objects.get(type="customer.created")
        assert event == {"id": stored.pk, "type": "customer.created", "createdAt": now.isoformat().replace("+00:00", "Z"),
                         "data": {"customerId": "acme", "name": "Acme", "email": "", "metadata": {}}}
        headers = request["headers"]
        assert (headers["X-Cynco-Event-Id"], headers["X-Cynco-Sequence"], headers["X-Cynco-Delivery"]) == (
            stored.pk, "1", delivery_id)
        assert headers["X-Cynco-Signature"].startswith(f"t={int(now.timestamp())},v1=")
        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        assert (delivery.status, delivery.attempts, delivery.succeeded_at) == ("succeeded", 1, now)
        assert OutboxEvent.objects.get(pk=stored.pk).dispatched_at == now

    def test_the_signature_does_not_verify_with_another_secret_or_a_changed_body(self, receiver):
        _, secret = endpoint_for(receiver)
        customer_at("acme", T0)
        [delivery_id] = webhook_events_dispatch(now=T0).deliveries
        webhook_delivery_attempt(delivery_id=delivery_id, now=T0)
        [request] = receiver.requests
        header = request["headers"]["X-Cynco-Signature"]
        with pytest.raises(WebhookVerificationError):
            verify_webhook(request["body"], header, "whsec_other", now=T0.timestamp())
        with pytest.raises(WebhookVerificationError):
            verify_webhook(request["body"].replace(b"acme", b"acmf"), header, secret, now=T0.timestamp())

    def test_an_endpoint_gets_only_the_types_it_listens_to_and_events_from_its_creation_on(self, receiver):
        customer_at("before", T0 - timedelta(seconds=1))
        _, secret = endpoint_for(receiver, events=["customer.deleted"])
        customer = customer_at("acme", T0)
        customer_delete(customer=customer, now=T0 + timedelta(seconds=1))
        ids = webhook_events_dispatch(now=T0 + timedelta(seconds=2)).deliveries
        for delivery_id in ids:
            webhook_delivery_attempt(delivery_id=delivery_id, now=T0 + timedelta(seconds=2))
        assert [(e["type"], e["data"]["customerId"]) for e in receiver.events(secret, now=T0)] == [
            ("customer.deleted", "acme")]
        assert not OutboxEvent.objects.filter(dispatched_at__isnull=True).exists()


@pytest.mark.django_db
class TestRetries:
    def test_a_500_is_recorded_and_retried_within_a_minute_and_the_retry_succeeds(self, receiver):
        endpoint, secret = endpoint_for(receiver)
        receiver.statuses = [500]
        customer_at("acme", T0)
        [delivery_id] = webhook_events_dispatch(now=T0).deliveries

        first = webhook_delivery_attempt(delivery_id=delivery_id, now=T0)
        assert (first.succeeded, first.status_code, first.number) == (False, 500, 1)
        assert first.response_excerpt.startswith("status 500 ") and len(first.response_excerpt) == 1024
        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        assert delivery.status == "pending" and T0 < delivery.next_attempt_at <= T0 + timedelta(seconds=60)
        assert WebhookEndpoint.objects.get(pk=endpoint.pk).failing_since == T0

        # Not due yet: nothing is sent.
        assert webhook_delivery_attempt(delivery_id=delivery_id, now=delivery.next_attempt_at - timedelta(seconds=1)) is None
        assert len(receiver.requests) == 1

        second = webhook_delivery_attempt(delivery_id=delivery_id, now=delivery.next_attempt_at)
        assert (second.succeeded, second.status_code, second.number) == (True, 200, 2)
        events = receiver.events(secret, now=delivery.next_attempt_at)
        assert len(events) == 2 and events[0] == events[1]  # the same event, signed afresh
        assert [r["headers"]["X-Cynco-Sequence"] for r in receiver.requests] == ["1", "1"]
        assert list(WebhookAttempt.objects.filter(delivery_id=delivery_id).values_list("number", "status_code", "succeeded")) == [
            (1, 500, False), (2, 200, True)]
        assert WebhookDelivery.objects.get(pk=delivery_id).status == "succeeded"
        assert WebhookEndpoint.objects.get(pk=endpoint.pk).failing_since is None

    def test_the_backoff_grows_spans_more_than_a_day_and_then_the_delivery_has_failed(self, receiver):
        endpoint_for(receiver)
        receiver.statuses = [500] * 20
        customer_at("acme", T0)
        [delivery_id] = webhook_events_dispatch(now=T0).deliveries
        now, waits = T0, []
        while True:
            attempt = webhook_delivery_attempt(delivery_id=delivery_id, now=now)
            assert attempt is not None and not attempt.succeeded
            delivery = WebhookDelivery.objects.get(pk=delivery_id)
            if delivery.status == "failed":
                break
            waits.append(delivery.next_attempt_at - now)
            now = delivery.next_attempt_at
        minutes = [int(w.total_seconds() // 60) for w in waits]
        # 30 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: 27 h 35 min 30 s from the first attempt to the last.
        assert [w.total_seconds() for w in waits] == [30, 300, 1800, 7200, 18000, 36000, 36000]
        assert minutes == sorted(minutes) and waits[0] <= timedelta(seconds=60)
        assert now - T0 == timedelta(hours=27, minutes=35, seconds=30) >= timedelta(hours=24)
        assert delivery.attempts == 8 and delivery.next_attempt_at is None
        assert WebhookAttempt.objects.filter(delivery_id=delivery_id, succeeded=False).count() == 8 == len(receiver.requests)
        assert webhook_delivery_attempt(delivery_id=delivery_id, now=now + timedelta(days=1)) is None

    def test_a_refused_connection_is_a_failed_attempt_with_the_error(self, receiver):
        endpoint, _ = webhook_endpoint_create(url="http://127.0.0.1:9/hooks", events=[], now=T0)  # discard port: closed
        customer_at("acme", T0)
        [delivery_id] = webhook_events_dispatch(now=T0).deliveries
        attempt = webhook_delivery_attempt(delivery_id=delivery_id, now=T0)
        assert (attempt.succeeded, attempt.status_code) == (False, None)
        assert "Connection refused" in attempt.error or "URLError" in attempt.error

    def test_a_redirect_is_not_followed_and_counts_as_failed(self, receiver):
        endpoint_for(receiver)
        receiver.statuses = [302]
        customer_at("acme", T0)
        [delivery_id] = webhook_events_dispatch(now=T0).deliveries
        attempt = webhook_delivery_attempt(delivery_id=delivery_id, now=T0)
        assert (attempt.succeeded, attempt.status_code) == (False, 302)
        assert len(receiver.requests) == 1  # the Location was not fetched

    def test_an_attempt_inside_a_transaction_is_refused(self, receiver):
        endpoint_for(receiver)
        customer_at("acme", T0)
        [delivery_id] = webhook_events_dispatch(now=T0).deliveries
        with pytest.raises(RuntimeError, match="outside a transaction"):
            with transaction.atomic():
                webhook_delivery_attempt(delivery_id=delivery_id, now=T0)
        assert receiver.requests == []


@pytest.mark.django_db
class TestDisabling:
    def test_an_endpoint_failing_for_three_days_is_disabled_and_staff_see_why(self, receiver, settings):
        assert settings.WEBHOOK_DISABLE_AFTER_SECONDS == 3 * 24 * 3600
        endpoint, _ = endpoint_for(receiver)
        receiver.statuses = [500] * 10
        customer = customer_at("acme", T0)

        def fail_once(now):
            batch = webhook_events_dispatch(now=now).deliveries
            return [webhook_delivery_attempt(delivery_id=d, now=now) for d in batch]

        fail_once(T0)
        event_emit(type="balance.low", customer_id=customer.pk, data={}, now=T0 + timedelta(days=2))
        [retried] = fail_once(T0 + timedelta(days=2))
        # the delivery made on day 2 is retried (still failing) just before the three days are up
        webhook_delivery_attempt(delivery_id=retried.delivery_id, now=T0 + timedelta(days=3) - timedelta(seconds=1))
        assert WebhookEndpoint.objects.get(pk=endpoint.pk).status == "active"
        [row] = webhook_endpoints_failing(now=T0 + timedelta(days=3))
        assert (row.id, row.status, row.failing_since, row.failing_for) == (endpoint.pk, "active", T0, timedelta(days=3))
        assert row.pending_deliveries == 2

        later = T0 + timedelta(days=3) - timedelta(seconds=1) + timedelta(minutes=5)  # that delivery's next retry
        event_emit(type="balance.low", customer_id=customer.pk, data={}, now=later)
        fail_once(later)  # a new delivery's first failure alone does not disable it...
        assert WebhookEndpoint.objects.get(pk=endpoint.pk).status == "active"
        # ...the failure of one retried for a day, on an endpoint failing for three, does
        assert not webhook_delivery_attempt(delivery_id=retried.delivery_id, now=later).succeeded
        endpoint.refresh_from_db()
        assert (endpoint.status, endpoint.disabled_at) == ("disabled", later)
        assert "failed for 3 days" in endpoint.disabled_reason
        assert AuditEvent.objects.filter(action="webhook.disable", target_id=endpoint.pk, actor_type="system").exists()
        [row] = webhook_endpoints_failing(now=later)
        assert (row.status, row.disabled_reason, row.pending_deliveries) == ("disabled", endpoint.disabled_reason, 3)

        # Disabled: due deliveries are not sent and new events make no deliveries for it.
        sent = len(receiver.requests)
        event_emit(type="balance.low", customer_id=customer.pk, data={}, now=later + timedelta(hours=1))
        assert webhook_sweep(now=later + timedelta(days=1)) == {"dispatched": 1, "due": 0}
        assert len(receiver.requests) == sent
        assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 3

    def test_a_failure_long_ago_then_silence_does_not_disable_a_healthy_endpoint_at_its_next_blip(self, receiver):
        """failing_since is cleared only by a success: a receiver that was down for
        a day, then fixed while no events came, must not be disabled (and lose
        every later event) by one failed first attempt days later."""
        endpoint, secret = endpoint_for(receiver)
        customer = customer_at("acme", T0)
        receiver.statuses = [500] * 8  # down for the whole retry schedule of the first event
        [first] = webhook_events_dispatch(now=T0).deliveries
        now = T0
        while webhook_delivery_attempt(delivery_id=first, now=now) is not None:
            now = WebhookDelivery.objects.get(pk=first).next_attempt_at
            if now is None:
                break
        assert WebhookDelivery.objects.get(pk=first).status == "failed"

        later = T0 + timedelta(days=5)  # fixed meanwhile; quiet days; then one 503 blip
        receiver.statuses = [503]
        event_emit(type="balance.low", customer_id=customer.pk, data={"n": 1}, now=later)
        [second] = webhook_events_dispatch(now=later).deliveries
        assert not webhook_delivery_attempt(delivery_id=second, now=later).succeeded
        endpoint.refresh_from_db()
        assert (endpoint.status, endpoint.disabled_at) == ("active", None)
        retry_at = WebhookDelivery.objects.get(pk=second).next_attempt_at
        assert later < retry_at <= later + timedelta(seconds=60)
        assert webhook_delivery_attempt(delivery_id=second, now=retry_at).succeeded
        assert WebhookEndpoint.objects.get(pk=endpoint.pk).failing_since is None

    def test_a_success_in_between_restarts_the_failing_clock(self, receiver):
        endpoint, _ = endpoint_for(receiver)
        customer = customer_at("acme", T0)
        receiver.statuses = [500, 200, 500]
        for day in range(3):
            now = T0 + timedelta(days=day * 2)
            if day:
                event_emit(type="balance.low", customer_id=customer.pk, data={}, now=now)
            [d] = webhook_events_dispatch(now=now).deliveries
            webhook_delivery_attempt(delivery_id=d, now=now)
        endpoint.refresh_from_db()
        assert (endpoint.status, endpoint.failing_since) == ("active", T0 + timedelta(days=4))


@pytest.mark.django_db
class TestSequence:
    def test_sequence_numbers_count_up_per_endpoint_across_fan_outs(self, receiver):
        everything, secret = endpoint_for(receiver)
        only_created, _ = endpoint_for(receiver, events=["customer.created"])
        for i in range(3):
            customer = customer_at(f"c{i}", T0 + timedelta(seconds=i))
            event_emit(type="balance.low", customer_id=customer.pk, data={"i": i}, now=T0 + timedelta(seconds=i + 0.5))
            webhook_events_dispatch(now=T0 + timedelta(seconds=i + 1))

        def sequences(endpoint):
            rows = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("sequence")
            return [(d.sequence, d.event.type) for d in rows]

        assert sequences(everything) == [(1, "customer.created"), (2, "balance.low"), (3, "customer.created"),
                                         (4, "balance.low"), (5, "customer.created"), (6, "balance.low")]
        assert sequences(only_created) == [(1, "customer.created"), (2, "customer.created"), (3, "customer.created")]
        everything.refresh_from_db()
        assert everything.next_sequence == 7

    def test_a_fan_out_with_nothing_to_do_changes_nothing(self, receiver):
        endpoint_for(receiver)
        assert webhook_events_dispatch(now=T0).events == 0
        assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
class TestAfterCommit:
    def test_a_transaction_enqueues_one_fan_out_however_many_events_it_emits(self, receiver, django_capture_on_commit_callbacks):
        endpoint_for(receiver)
        customer = Customer.objects.create(external_id="acme", created_at=T0, updated_at=T0)  # no event of its own
        with django_capture_on_commit_callbacks() as callbacks:
            with transaction.atomic():
                for i in range(5):
                    event_emit(type="balance.low", customer_id=customer.pk, data={"i": i}, now=T0)
        assert [c.__name__ for c in callbacks] == ["_enqueue_dispatch"]

    def test_without_an_active_endpoint_nothing_is_enqueued(self, django_capture_on_commit_callbacks):
        customer = customer_at("acme", T0)
        with django_capture_on_commit_callbacks() as callbacks:
            with transaction.atomic():
                event_emit(type="balance.low", customer_id=customer.pk, data={}, now=T0)
        assert callbacks == []

    def test_every_event_type_the_code_emits_is_in_the_one_list(self):
        emitted = set()
        for path in [*(ROOT / "billing").rglob("*.py"), *(ROOT / "rewards").rglob("*.py")]:
            emitted |= set(re.findall(r'event_emit\(\s*type="([a-z_.]+)"', path.read_text()))
            emitted |= set(re.findall(r'"(subscription\.expired|subscription\.canceled)"', path.read_text()))
        assert emitted and emitted <= set(EVENT_TYPES), emitted - set(EVENT_TYPES)
        for documented in ("customer.created", "subscription.activated", "subscription.updated", "subscription.canceled",
                           "subscription.renewed", "invoice.created", "invoice.paid", "payment.succeeded",
                           "payment.failed", "entitlement.exhausted", "balance.low", "lock.expired"):
            assert documented in EVENT_TYPES  # API.md's list


@pytest.mark.django_db(transaction=True)
class TestRealCommits:
    """The real after-commit path: tasks run eagerly in this process."""

    @pytest.fixture(autouse=True)
    def eager(self, settings):
        from config.celery import app

        before = app.conf.task_always_eager
        app.conf.task_always_eager = True
        yield
        app.conf.task_always_eager = before

    def test_a_committed_change_is_delivered_and_a_rolled_back_one_is_not(self, receiver):
        _, secret = endpoint_for(receiver, now=timezone.now() - timedelta(seconds=1))
        customer = customer_get_or_create(external_id="acme", now=timezone.now())[0]
        assert [e["type"] for e in receiver.events(secret)] == ["customer.created"]

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            with transaction.atomic():
                event_emit(type="balance.low", customer_id=customer.pk, data={}, now=timezone.now())
                raise Boom
        assert [e["type"] for e in receiver.events(secret)] == ["customer.created"]
        assert not OutboxEvent.objects.filter(type="balance.low").exists()
        assert WebhookDelivery.objects.count() == 1


@pytest.mark.django_db
class TestApi:
    def test_create_shows_the_secret_once_list_hides_it_delete_removes(self, sk_client):
        response = sk_client.post("/api/v1/pay/webhooks", {"url": "https://example.com/hooks",
                                                           "events": ["invoice.paid", "*"]}, format="json")
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["secret"].startswith("whsec_") and body["events"] == ["invoice.paid", "*"]
        assert WebhookEndpoint.objects.get(pk=body["id"]).secret == body["secret"]
        listed = sk_client.get("/api/v1/pay/webhooks").json()["data"]
        assert [w["id"] for w in listed] == [body["id"]] and "secret" not in listed[0]
        assert listed[0]["status"] == "active"
        assert sk_client.delete(f"/api/v1/pay/webhooks/{body['id']}").status_code == 204
        assert sk_client.get("/api/v1/pay/webhooks").json()["data"] == []
        assert sk_client.delete(f"/api/v1/pay/webhooks/{body['id']}").status_code == 404
        assert WebhookEndpoint.objects.get(pk=body["id"]).deleted_at is not None

    def test_a_replayed_create_does_not_store_the_secret(self, sk_client):
        body = {"url": "https://example.com/hooks"}
        first = sk_client.post("/api/v1/pay/webhooks", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        again = sk_client.post("/api/v1/pay/webhooks", body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        assert again.json()["id"] == first.json()["id"] and again.json()["secret"] is None
        assert WebhookEndpoint.objects.count() == 1

    @pytest.mark.parametrize("body, field", [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "/relative"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "https://user:pw@example.com/"}, "url"),
        ({"url": "https://example.com:99999/"}, "url"),
        ({"url": 12}, "url"),
        ({}, "url"),
        ({"url": "https://example.com/", "events": ["invoice.nope"]}, "events[0]"),
        ({"url": "https://example.com/", "events": ["invoice.paid", 3]}, "events"),
        ({"url": "https://example.com/", "events": "invoice.paid"}, "events"),
    ])
    def test_bad_input_is_a_422_naming_the_field_and_creates_nothing(self, sk_client, body, field):
        response = sk_client.post("/api/v1/pay/webhooks", body, format="json")
        assert response.status_code == 422, response.content
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert any(d["field"].startswith(field) for d in error["details"]), error
        assert not WebhookEndpoint.objects.exists()

    def test_publishable_keys_are_refused(self, pk_client):
        assert pk_client.get("/api/v1/pay/webhooks").status_code == 403
        assert pk_client.post("/api/v1/pay/webhooks", {"url": "https://example.com/"}, format="json").status_code == 403
        assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
class TestAdmin:
    def test_staff_redeliver_a_delivery_and_the_receiver_gets_it_again_with_its_sequence(self, receiver, admin_client):
        endpoint, secret = endpoint_for(receiver)
        customer_at("acme", T0)
        [delivery_id] = webhook_events_dispatch(now=T0).deliveries
        webhook_delivery_attempt(delivery_id=delivery_id, now=T0)
        page = admin_client.get(f"/admin/billing/webhookdelivery/{admin_quote(delivery_id)}/change/")
        assert page.status_code == 200 and b"status 200" in page.content  # the attempt inline, its excerpt

        response = admin_client.post("/admin/billing/webhookdelivery/",
                                     {"action": "redeliver", "_selected_action": [delivery_id]})
        assert response.status_code == 302
        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        assert delivery.status == "pending" and delivery.next_attempt_at <= timezone.now()
        assert AuditEvent.objects.filter(action="admin.webhook_delivery.redeliver", target_id=delivery_id,
                                         actor_type="staff").exists()
        webhook_delivery_attempt(delivery_id=delivery_id, now=timezone.now())
        assert [r["headers"]["X-Cynco-Sequence"] for r in receiver.requests] == ["1", "1"]
        redelivered = receiver.requests[1]  # signed now (the first was signed at T0)
        assert verify_webhook(redelivered["body"], redelivered["headers"]["X-Cynco-Signature"], secret)["type"] == "customer.created"
        assert WebhookDelivery.objects.get(pk=delivery_id).status == "succeeded"

    def test_staff_cannot_probe_the_signing_secret_through_changelist_filters(self, receiver, admin_client):
        """The admin accepts any local-field lookup in the query string unless told
        otherwise: ?secret__startswith=… would reveal the secret a character at a time."""
        endpoint, secret = endpoint_for(receiver)
        customer_at("acme", T0)
        webhook_events_dispatch(now=T0)
        for path, lookup in [("webhookendpoint", {"secret": secret}), ("webhookendpoint", {"secret__startswith": secret[:8]}),
                             ("webhookendpoint", {"secret__regex": "^whsec_"}),
                             ("webhookdelivery", {"endpoint__secret__startswith": secret[:8]})]:
            response = admin_client.get(f"/admin/billing/{path}/", lookup)
            assert response.status_code == 400, (path, lookup, response.status_code)
            assert endpoint.pk.encode() not in response.content
        assert admin_client.get("/admin/billing/webhookendpoint/", {"status": "active"}).status_code == 200

    def test_staff_re_enable_a_disabled_endpoint_and_what_waited_is_due(self, receiver, admin_client):
        endpoint, _ = endpoint_for(receiver)
        customer_at("acme", T0)
        [delivery_id] = webhook_events_dispatch(now=T0).deliveries
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(status="disabled", disabled_reason="test", failing_since=T0)
        WebhookDelivery.objects.filter(pk=delivery_id).update(next_attempt_at=timezone.now() + timedelta(hours=5))
        page = admin_client.get("/admin/billing/webhookendpoint/")
        assert page.status_code == 200 and b"disabled" in page.content and endpoint.secret.encode() not in page.content

        response = admin_client.post("/admin/billing/webhookendpoint/",
                                     {"action": "reenable", "_selected_action": [endpoint.pk]})
        assert response.status_code == 302
        endpoint.refresh_from_db()
        assert (endpoint.status, endpoint.disabled_reason, endpoint.failing_since) == ("active", "", None)
        assert AuditEvent.objects.filter(action="admin.webhook_endpoint.enable", target_id=endpoint.pk).exists()
        assert webhook_delivery_attempt(delivery_id=delivery_id, now=timezone.now()).succeeded


@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    pytestmark = postgres_only

    def test_two_workers_on_one_due_delivery_send_it_once(self, receiver):
        endpoint_for(receiver)
        customer_at("acme", T0)
        [delivery_id] = webhook_events_dispatch(now=T0).deliveries
        results = run_concurrently(6, lambda i: webhook_delivery_attempt(delivery_id=delivery_id, now=T0))
        assert sum(r is not None for r in results) == 1
        assert len(receiver.requests) == 1 and WebhookAttempt.objects.count() == 1

    def test_concurrent_fan_outs_number_each_endpoint_without_gaps_or_repeats(self, receiver):
        endpoint, _ = endpoint_for(receiver)
        customer = customer_at("acme", T0)
        for i in range(60):
            event_emit(type="balance.low", customer_id=customer.pk, data={"i": i}, now=T0 + timedelta(milliseconds=i + 1))
        run_concurrently(4, lambda i: webhook_events_dispatch(now=T0, limit=7).events)
        webhook_sweep(now=T0)
        rows = list(WebhookDelivery.objects.filter(endpoint=endpoint).order_by("sequence").values_list("sequence", "event__data"))
        assert [s for s, _ in rows] == list(range(1, 62))  # customer.created + 60
        assert [data["i"] for _, data in rows[1:]] == list(range(60))  # in the order they happened
        assert not OutboxEvent.objects.filter(dispatched_at__isnull=True).exists()

    def test_an_endpoint_made_while_a_fan_out_waits_still_gets_the_events_after_its_creation(self, receiver):
        """A fan-out waiting for the endpoint locks (another fan-out holds them) reads
        the endpoint list as it was when it started waiting; an endpoint made
        meanwhile must still get the events that came after it."""
        import threading

        from billing.locks import lock_webhook_endpoint

        first, _ = endpoint_for(receiver, now=T0)
        locked, release = threading.Event(), threading.Event()

        def holder():
            try:
                with transaction.atomic():
                    lock_webhook_endpoint(pk=first.pk)
                    locked.set()
                    release.wait(60)
            finally:
                connection.close()

        results = []

        def fan_out():
            try:
                results.append(webhook_events_dispatch(now=T0 + timedelta(seconds=10)))
            finally:
                connection.close()

        threads = [threading.Thread(target=holder)]
        threads[0].start()
        assert locked.wait(30)
        threads.append(threading.Thread(target=fan_out))
        threads[1].start()
        deadline = time.monotonic() + 30
        with connection.cursor() as cursor:  # wait until the fan-out is blocked on the endpoint lock
            while time.monotonic() < deadline:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND wait_event_type = 'Lock' AND query ILIKE '%%webhookendpoint%%'")
                if cursor.fetchone()[0]:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the fan-out never waited for the endpoint lock")
        second, _ = endpoint_for(receiver, now=T0 + timedelta(seconds=1))
        customer_at("acme", T0 + timedelta(seconds=2))  # customer.created, after the second endpoint
        release.set()
        for t in threads:
            t.join(60)
        assert results, "the fan-out did not finish"
        webhook_sweep(now=T0 + timedelta(seconds=20))
        assert list(WebhookDelivery.objects.filter(endpoint=second).values_list("event__type", "sequence")) == [
            ("customer.created", 1)]
        assert list(WebhookDelivery.objects.filter(endpoint=first).values_list("event__type", "sequence")) == [
            ("customer.created", 1)]
        assert not OutboxEvent.objects.filter(dispatched_at__isnull=True).exists()


@pytest.mark.postgres
@pytest.mark.skipif(not (ON_POSTGRES and settings.REDIS_URL), reason="needs PostgreSQL and Redis (DATABASE_URL and REDIS_URL), as CI runs")
@pytest.mark.django_db(transaction=True)
class TestRealWorker:
    def test_a_worker_on_redis_delivers_after_commit_and_retries_a_500(self, receiver, tmp_path):
        from config.celery import app

        db = connection.settings_dict
        queue = f"test-{uuid.uuid4().hex[:12]}"
        auth = f"{db['USER']}:{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else db["USER"]
        url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        env = dict(os.environ, DATABASE_URL=url, CELERY_TASK_DEFAULT_QUEUE=queue, WEBHOOK_RETRY_DELAYS_SECONDS="1,1",
                   WEBHOOK_SWEEP_INTERVAL_SECONDS="2")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--beat", "-s", str(tmp_path / "beat-schedule"),
             "--pool=solo", "-Q", queue, "--loglevel=INFO", "--without-heartbeat", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        before = app.conf.task_default_queue
        app.conf.task_default_queue = queue  # this process enqueues the after-commit fan-out there too
        try:
            _, secret = webhook_endpoint_create(url=receiver.url, events=["customer.created"],
                                                now=timezone.now() - timedelta(seconds=1))
            receiver.statuses = [500]
            customer_get_or_create(external_id="acme", now=timezone.now())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not WebhookDelivery.objects.filter(status="succeeded").exists():
                assert worker.poll() is None, worker.stdout.read()
                time.sleep(0.2)
            delivery = WebhookDelivery.objects.first()
            assert delivery is not None and delivery.status == "succeeded", "the worker did not deliver within 60 s"
            assert list(delivery.attempt_rows.values_list("number", "status_code")) == [(1, 500), (2, 200)]
            events = receiver.events(secret)
            assert [e["type"] for e in events] == ["customer.created", "customer.created"]
            assert events[0]["data"]["customerId"] == "acme"
        finally:
            app.conf.task_default_queue = before
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
            connection.close()


class TestBrokerOutage:
    """The broker is replaced by one that refuses (the fault tests stop a real Redis;
    here only the pause logic is under test)."""

    def test_after_a_refused_enqueue_the_process_stops_asking_the_broker_for_a_while(self, monkeypatch):
        from billing.services import webhooks as service
        from billing.tasks import webhook_deliver, webhooks_dispatch

        asked = []

        def refuse(*args, **kwargs):
            asked.append(kwargs.get("kwargs"))
            raise ConnectionError("broker down")

        monkeypatch.setattr(webhooks_dispatch, "apply_async", refuse)
        monkeypatch.setattr(webhook_deliver, "apply_async", refuse)
        monkeypatch.setattr(service, "_broker_down_until", [0.0])
        service._enqueue_dispatch()  # refused: pauses
        service._enqueue_dispatch()
        service._enqueue_deliveries(["pwhd_a", "pwhd_b"])
        assert len(asked) == 1
        service._broker_down_until[0] = 0.0  # the pause is over
        service._enqueue_deliveries(["pwhd_a", "pwhd_b"])
        assert asked[1:] == [{"delivery_id": "pwhd_a"}]  # refused again: the rest wait for the sweeper


# --- lock order, deleted and disabled endpoints, receivers that trickle -----------------


def _wait_for_lock_wait(table: str, seconds: float = 30) -> None:
    """Until some other session waits for a row lock in a query on ``table``."""
    deadline = time.monotonic() + seconds
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND wait_event_type = 'Lock' AND query ILIKE %s", [f"%{table}%"])
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError(f"nobody waited for a lock on {table}")


@pytest.mark.django_db(transaction=True)
class TestLockOrder:
    pytestmark = postgres_only

    def test_recording_an_attempt_while_the_endpoint_is_re_enabled_does_not_deadlock(self, receiver):
        """Re-enabling locks the endpoint, then updates its pending deliveries; recording
        a failed attempt used to update the delivery, then lock the endpoint: the two
        took the same rows in opposite orders and PostgreSQL aborted one of them. Here
        the re-enable holds the endpoint lock between its two steps while an attempt is
        recorded; every path now takes the endpoint before the delivery."""
        from django.db import OperationalError

        from billing.locks import lock_webhook_endpoint

        endpoint, _ = endpoint_for(receiver)
        receiver.statuses = [500]
        customer_at("acme", T0)
        [delivery_id] = webhook_events_dispatch(now=T0).deliveries
        locked, go = threading.Event(), threading.Event()
        errors, attempts = [], []

        def enable_paused():  # the two steps of webhook_endpoint_enable, with a pause between them
            try:
                with transaction.atomic():
                    lock_webhook_endpoint(pk=endpoint.pk)
                    locked.set()
                    assert go.wait(60)
                    WebhookDelivery.objects.filter(endpoint_id=endpoint.pk, status="pending").update(next_attempt_at=T0)
            except Exception as exc:  # noqa: BLE001 - surfaced below
                errors.append(exc)
            finally:
                connection.close()

        def worker():
            try:
                attempts.append(webhook_delivery_attempt(delivery_id=delivery_id, now=T0))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=enable_paused)]
        threads[0].start()
        assert locked.wait(30)
        threads.append(threading.Thread(target=worker))
        threads[1].start()
        _wait_for_lock_wait("webhookendpoint")  # the worker, recording its failed attempt, waits for the endpoint
        # ...and holds no lock on the delivery while it waits
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT id FROM billing_webhookdelivery WHERE id = %s FOR UPDATE NOWAIT", [delivery_id])
            delivery_free = True
        except OperationalError:
            delivery_free = False
        go.set()
        for t in threads:
            t.join(60)
        assert errors == [] and delivery_free
        [attempt] = attempts
        assert (attempt.number, attempt.status_code) == (1, 500)
        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("pending", 1, T0 + timedelta(seconds=30))
        assert WebhookEndpoint.objects.get(pk=endpoint.pk).failing_since == T0


@pytest.mark.django_db
class TestDeletedAndDisabledEndpoints:
    @pytest.mark.parametrize("status", ["active", "disabled"])
    def test_deleting_an_endpoint_fails_its_pending_deliveries_with_the_reason(self, receiver, sk_client, admin_client,
                                                                               status):
        endpoint, _ = endpoint_for(receiver)
        receiver.statuses = [500]
        customer_at("acme", T0)
        customer_at("bolt", T0 + timedelta(seconds=1))
        first, second = webhook_events_dispatch(now=T0 + timedelta(seconds=2)).deliveries
        assert webhook_delivery_attempt(delivery_id=first, now=T0 + timedelta(seconds=2)).status_code == 500
        assert webhook_delivery_attempt(delivery_id=second, now=T0 + timedelta(seconds=2)).succeeded
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(status=status)

        assert sk_client.delete(f"/api/v1/pay/webhooks/{endpoint.pk}").status_code == 204
        delivery = WebhookDelivery.objects.get(pk=first)
        assert (delivery.status, delivery.next_attempt_at, delivery.attempts) == ("failed", None, 2)
        [sent, not_sent] = WebhookAttempt.objects.filter(delivery_id=first).order_by("number")
        assert (sent.number, sent.status_code) == (1, 500)
        assert (not_sent.number, not_sent.status_code, not_sent.succeeded) == (2, None, False)
        assert not_sent.error.startswith("Not sent: the endpoint was deleted")
        assert WebhookDelivery.objects.get(pk=second).status == "succeeded"  # untouched

        # the sweeper never looks at it again, nor does a worker
        later = T0 + timedelta(days=2)
        assert webhook_sweep(now=later)["due"] == 0
        assert webhook_delivery_attempt(delivery_id=first, now=later) is None
        assert len(receiver.requests) == 2
        page = admin_client.get(f"/admin/billing/webhookdelivery/{admin_quote(first)}/change/")
        assert page.status_code == 200 and b"Not sent: the endpoint was deleted" in page.content

    def test_a_disabled_endpoint_keeps_its_pending_deliveries_and_they_go_out_in_order_when_re_enabled(self, receiver):
        from billing.services.webhooks import webhook_endpoint_enable

        endpoint, secret = endpoint_for(receiver)
        receiver.statuses = [503] * 3
        for i, name in enumerate(["acme", "bolt", "cask"]):
            customer_at(name, T0 + timedelta(seconds=i))
        ids = webhook_events_dispatch(now=T0 + timedelta(seconds=5)).deliveries
        for delivery_id in ids:
            assert webhook_delivery_attempt(delivery_id=delivery_id, now=T0 + timedelta(seconds=5)).status_code == 503
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(status="disabled", disabled_reason="down", failing_since=T0)

        days_later = T0 + timedelta(days=3)
        assert webhook_sweep(now=days_later) == {"dispatched": 0, "due": 0}  # due, but the endpoint is disabled
        assert all(webhook_delivery_attempt(delivery_id=d, now=days_later) is None for d in ids)
        assert len(receiver.requests) == 3
        assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"pending"}

        _, waiting = webhook_endpoint_enable(endpoint_id=endpoint.pk, now=days_later)
        assert sorted(waiting) == sorted(ids)
        assert webhook_sweep(now=days_later)["due"] == 3
        for delivery_id in sorted(ids, key=lambda d: WebhookDelivery.objects.get(pk=d).sequence):
            assert webhook_delivery_attempt(delivery_id=delivery_id, now=days_later).succeeded
        delivered = receiver.requests[3:]
        assert [r["headers"]["X-Cynco-Sequence"] for r in delivered] == ["1", "2", "3"]
        assert [verify_webhook(r["body"], r["headers"]["X-Cynco-Signature"], secret, now=days_later.timestamp())
                ["data"]["customerId"] for r in delivered] == ["acme", "bolt", "cask"]
        assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"succeeded"}


class Trickler:
    """A receiver that answers slowly, a byte at a time: ``where`` = "headers" (the
    status line at once, then the headers dripping) or "body" (headers at once,
    then the body dripping). Only the first request trickles; later ones get a quick
    200. Records when each request started and ended, and whether the sender cut it."""

    def __init__(self, where: str, drip_bytes: int, interval: float = 0.05):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        trickler = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                record = {"started": time.monotonic(), "ended": None, "cut": False}
                with trickler.lock:
                    first = not trickler.requests
                    trickler.requests.append(record)
                try:
                    if not first:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                    elif where == "headers":
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                        for _ in range(drip_bytes):
                            self.wfile.write(b"a")
                            self.wfile.flush()
                            time.sleep(interval)
                        self.wfile.write(b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                    else:
                        self.wfile.write(f"HTTP/1.1 200 OK\r\nContent-Length: {drip_bytes}\r\nConnection: close\r\n\r\n".encode())
                        for _ in range(drip_bytes):
                            self.wfile.write(b"b")
                            self.wfile.flush()
                            time.sleep(interval)
                except OSError:  # the sender hung up: broken pipe or reset
                    record["cut"] = True
                finally:
                    record["ended"] = time.monotonic()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_all_ended(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (not self.requests or any(r["ended"] is None for r in self.requests)):
            time.sleep(0.02)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def trickler_factory():
    made = []

    def make(where, drip_bytes):
        made.append(Trickler(where, drip_bytes))
        return made[-1]

    yield make
    for t in made:
        t.close()


@pytest.mark.django_db
class TestSlowReceiver:
    """urllib's timeout is per socket operation: a receiver sending a byte every
    50 ms never trips a 0.5 s timeout. The whole attempt has a deadline now."""

    def test_headers_that_trickle_past_the_timeout_are_a_failed_attempt_cut_at_the_deadline(self, settings, trickler_factory):
        settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
        trickler = trickler_factory("headers", drip_bytes=60)  # 3 s of headers
        webhook_endpoint_create(url=trickler.url, events=[], now=T0)
        customer_at("acme", T0)
        [delivery_id] = webhook_events_dispatch(now=T0).deliveries
        attempt = webhook_delivery_attempt(delivery_id=delivery_id, now=T0)
        assert (attempt.succeeded, attempt.status_code) == (False, None)
        assert "no complete answer within 0.5 s" in attempt.error
        trickler.wait_all_ended()
        [request] = trickler.requests
        assert request["cut"]  # the sender hung up before the receiver had finished answering
        assert WebhookDelivery.objects.get(pk=delivery_id).status == "pending"

    def test_a_2xx_whose_body_trickles_is_a_success_with_the_body_read_until_the_deadline(self, settings, trickler_factory):
        settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
        trickler = trickler_factory("body", drip_bytes=60)
        webhook_endpoint_create(url=trickler.url, events=[], now=T0)
        customer_at("acme", T0)
        [delivery_id] = webhook_events_dispatch(now=T0).deliveries
        attempt = webhook_delivery_attempt(delivery_id=delivery_id, now=T0)
        assert (attempt.succeeded, attempt.status_code) == (True, 200)  # the receiver said 200: not sent again
        assert set(attempt.response_excerpt) <= {"b"} and len(attempt.response_excerpt) < 60
        trickler.wait_all_ended()
        assert trickler.requests[0]["cut"]


@pytest.mark.django_db(transaction=True)
class TestSlowReceiverLease:
    pytestmark = postgres_only

    def test_a_second_worker_cannot_claim_the_delivery_while_the_first_post_still_runs(self, settings, trickler_factory):
        """The claim's lease is 3 x WEBHOOK_TIMEOUT_SECONDS. Before, a receiver trickling
        its headers for 6 s kept the first POST open past the 3 s lease, and a second
        worker sent the event again while the first POST was still running."""
        settings.WEBHOOK_TIMEOUT_SECONDS = 1.0
        settings.WEBHOOK_RETRY_DELAYS_SECONDS = [3]  # the retry is due when the lease would end
        trickler = trickler_factory("headers", drip_bytes=120)  # 6 s
        webhook_endpoint_create(url=trickler.url, events=[], now=timezone.now() - timedelta(seconds=1))
        customer_at("acme", timezone.now())
        [delivery_id] = webhook_events_dispatch(now=timezone.now()).deliveries
        first = []

        def first_worker():
            try:
                first.append(webhook_delivery_attempt(delivery_id=delivery_id, now=timezone.now()))
            finally:
                connection.close()

        thread = threading.Thread(target=first_worker)
        thread.start()
        deadline = time.monotonic() + 30
        while not trickler.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        second = None
        while second is None and time.monotonic() < deadline:  # a second worker, trying until it may
            second = webhook_delivery_attempt(delivery_id=delivery_id, now=timezone.now())
            time.sleep(0.1)
        thread.join(60)
        trickler.wait_all_ended()
        assert second is not None and second.succeeded and second.number == 2
        [one, two] = trickler.requests
        assert one["ended"] <= two["started"], "the second POST began while the first was still running"
        assert first[0].number == 1 and not first[0].succeeded
