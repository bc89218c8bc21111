"""POST webhooks/{id}/test: one signed ``webhook.test`` event to one endpoint, sent
now and synchronously, against a real HTTP receiver (http.server on 127.0.0.1) and
verified with the SDK's verify_webhook. It is not an outbox event: no other endpoint
gets it, it takes no sequence number and it is never retried."""

from __future__ import annotations

import socket
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import transaction
from django.utils import timezone

from billing.models import ApiKey, AuditEvent, OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from billing.services.events import EVENT_TYPES
from billing.services.webhooks import (
    TEST_EVENT_TYPE,
    webhook_delivery_attempt,
    webhook_endpoint_create,
    webhook_endpoint_test,
    webhook_events_dispatch,
)
from tests.billing.test_webhooks import SDK_SRC, Receiver, customer_at  # Receiver: a merchant's endpoint
from tests.billing.test_webhooks import fresh_endpoint_cache, receiver  # noqa: F401 (fixtures)

if str(SDK_SRC) not in sys.path:
    sys.path.insert(0, str(SDK_SRC))

from cynco_billing.errors import WebhookVerificationError  # noqa: E402
from cynco_billing.webhooks import verify_webhook  # noqa: E402

pytestmark = pytest.mark.django_db


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/hooks"


def make_endpoint(url: str, now=None) -> tuple[WebhookEndpoint, str]:
    return webhook_endpoint_create(url=url, events=[], now=now or timezone.now() - timedelta(minutes=1))


def send_test(client, endpoint_id: str):
    return client.post(f"/api/v1/pay/webhooks/{endpoint_id}/test", format="json")


class TestTheTestDelivery:
    def test_the_receiver_gets_one_signed_webhook_test_event_that_verifies_with_the_sdk(self, receiver, sk_client):
        endpoint, secret = make_endpoint(receiver.url)
        response = send_test(sk_client, endpoint.pk)

        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["delivered"], body["status"], body["error"]) == (True, 200, None)
        assert isinstance(body["latencyMs"], int) and body["latencyMs"] >= 0
        assert body["eventId"].startswith("evt_")
        [request] = receiver.requests
        event = verify_webhook(request["body"], request["headers"]["X-Cynco-Signature"], secret)
        assert event["id"] == body["eventId"] and event["type"] == "webhook.test" == TEST_EVENT_TYPE
        assert event["data"]["webhookId"] == endpoint.pk and event["data"]["message"]
        with pytest.raises(WebhookVerificationError):
            verify_webhook(request["body"], request["headers"]["X-Cynco-Signature"], "whsec_other")
        headers = request["headers"]
        assert (headers["X-Cynco-Event-Id"], headers["X-Cynco-Event-Type"]) == (body["eventId"], "webhook.test")
        # No delivery behind it: nothing a receiver could take for a place in the sequence.
        assert not {"X-Cynco-Sequence", "X-Cynco-Delivery", "X-Cynco-Attempt"} & set(headers)

    def test_it_leaves_no_outbox_event_or_delivery_and_is_audited_with_the_outcome(self, receiver, sk_client):
        endpoint, _ = make_endpoint(receiver.url)
        body = send_test(sk_client, endpoint.pk).json()

        assert not OutboxEvent.objects.exists()
        assert not WebhookDelivery.objects.exists() and not WebhookAttempt.objects.exists()
        [audit] = AuditEvent.objects.filter(action="webhook.test")
        key = ApiKey.objects.get(type="secret")
        assert (audit.actor_type, audit.actor_id, audit.target_type, audit.target_id) == (
            "api_key", key.pk, "webhook_endpoint", endpoint.pk)
        assert audit.data == {"eventId": body["eventId"], "url": receiver.url, "delivered": True, "status": 200,
                              "latencyMs": body["latencyMs"], "error": None}

    def test_a_receiver_answering_500_is_not_delivered_status_500_and_is_not_retried(self, receiver, sk_client):
        endpoint, _ = make_endpoint(receiver.url)
        receiver.statuses = [500]
        body = send_test(sk_client, endpoint.pk).json()

        assert (body["delivered"], body["status"], body["error"]) == (False, 500, None)
        assert len(receiver.requests) == 1
        assert not WebhookDelivery.objects.exists()  # nothing the sweeper could retry
        endpoint.refresh_from_db()
        assert endpoint.failing_since is None and endpoint.status == "active"  # a test does not start the failing clock
        assert AuditEvent.objects.get(action="webhook.test").data["status"] == 500

    def test_a_redirect_is_not_followed(self, receiver, sk_client):
        endpoint, _ = make_endpoint(receiver.url)
        receiver.statuses = [302]
        body = send_test(sk_client, endpoint.pk).json()

        assert (body["delivered"], body["status"]) == (False, 302)
        assert len(receiver.requests) == 1

    def test_a_closed_port_is_not_delivered_with_no_status_and_the_error(self, sk_client):
        endpoint, _ = make_endpoint(closed_port_url())
        body = send_test(sk_client, endpoint.pk).json()

        assert (body["delivered"], body["status"]) == (False, None)
        assert "refused" in body["error"].lower(), body["error"]
        assert AuditEvent.objects.get(action="webhook.test").data["error"] == body["error"]

    def test_the_timeout_bounds_the_whole_post(self, settings, sk_client):
        settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
        release = threading.Event()

        class Slow(BaseHTTPRequestHandler):
            def do_POST(self):
                release.wait(10)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            endpoint, _ = make_endpoint(f"http://127.0.0.1:{server.server_address[1]}/hooks")
            started = time.monotonic()
            body = send_test(sk_client, endpoint.pk).json()
            elapsed = time.monotonic() - started
        finally:
            release.set()
            server.shutdown()
            server.server_close()
        assert (body["delivered"], body["status"]) == (False, None)
        assert body["error"].startswith("TimeoutError"), body["error"]
        assert elapsed < 5

    def test_the_ssrf_guard_refuses_a_private_address_when_private_urls_are_off(self, receiver, settings, sk_client):
        endpoint, _ = make_endpoint(receiver.url)  # made while allowed, as in development
        settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
        body = send_test(sk_client, endpoint.pk).json()

        assert (body["delivered"], body["status"]) == (False, None)
        assert body["error"].startswith("refused: 127.0.0.1 is a loopback address"), body["error"]
        assert receiver.requests == []

    def test_a_disabled_endpoint_can_be_tested_and_stays_disabled(self, receiver, sk_client):
        endpoint, secret = make_endpoint(receiver.url)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(status="disabled", disabled_reason="failing")
        body = send_test(sk_client, endpoint.pk).json()

        assert (body["delivered"], body["status"]) == (True, 200)
        verify_webhook(receiver.requests[0]["body"], receiver.requests[0]["headers"]["X-Cynco-Signature"], secret)
        endpoint.refresh_from_db()
        assert (endpoint.status, endpoint.disabled_reason) == ("disabled", "failing")

    def test_it_is_refused_inside_a_transaction_and_sends_nothing(self, receiver):
        endpoint, _ = make_endpoint(receiver.url)
        with pytest.raises(RuntimeError, match="outside a transaction"):
            with transaction.atomic():
                webhook_endpoint_test(endpoint_id=endpoint.pk, actor_type="system", actor_id="t", now=timezone.now())
        assert receiver.requests == []


class TestRealDeliveriesAreUntouched:
    def test_a_test_between_two_events_takes_no_sequence_and_goes_to_no_other_endpoint(self, receiver, sk_client):
        other_receiver = Receiver()
        other_receiver.thread.start()
        try:
            t0 = timezone.now() - timedelta(minutes=1)
            endpoint, secret = make_endpoint(receiver.url, now=t0)
            other, _ = make_endpoint(other_receiver.url, now=t0)

            customer_at("before", t0 + timedelta(seconds=1))
            first = webhook_events_dispatch(now=t0 + timedelta(seconds=2)).deliveries
            body = send_test(sk_client, endpoint.pk).json()
            assert body["delivered"] is True
            customer_at("after", t0 + timedelta(seconds=3))
            second = webhook_events_dispatch(now=t0 + timedelta(seconds=4)).deliveries
            for delivery_id in first + second:
                webhook_delivery_attempt(delivery_id=delivery_id, now=t0 + timedelta(seconds=5))

            mine = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("sequence")
            assert [(d.sequence, d.event.data["customerId"], d.status) for d in mine] == [
                (1, "before", "succeeded"), (2, "after", "succeeded")]
            endpoint.refresh_from_db()
            assert endpoint.next_sequence == 3
            assert [(r["headers"]["X-Cynco-Event-Type"], r["headers"].get("X-Cynco-Sequence")) for r in receiver.requests] == [
                ("webhook.test", None), ("customer.created", "1"), ("customer.created", "2")]
            # The other endpoint got the real events only, numbered 1 and 2 as well.
            assert [(r["headers"]["X-Cynco-Event-Type"], r["headers"]["X-Cynco-Sequence"]) for r in other_receiver.requests] == [
                ("customer.created", "1"), ("customer.created", "2")]
            assert not OutboxEvent.objects.filter(type="webhook.test").exists()
            assert not OutboxEvent.objects.filter(dispatched_at__isnull=True).exists()
        finally:
            other_receiver.server.shutdown()
            other_receiver.server.server_close()

    def test_webhook_test_is_not_an_event_type_endpoints_can_subscribe_to(self, sk_client):
        assert TEST_EVENT_TYPE not in EVENT_TYPES
        response = sk_client.post("/api/v1/pay/webhooks", {"url": "https://example.com/hooks",
                                                           "events": ["webhook.test"]}, format="json")
        assert response.status_code == 422, response.content
        assert response.json()["error"]["details"][0]["field"] == "events[0]"


class TestSchema:
    def test_the_answers_keep_to_the_openapi_schema_delivered_failed_and_unreachable(self, receiver, sk_client):
        """The fuzz test (test_schema_fuzz.py) only reaches unknown ids; this checks real 200s."""
        import schemathesis
        from django.core import signals
        from django.db import close_old_connections

        from config.wsgi import application

        reached, _ = make_endpoint(receiver.url)
        unreachable, _ = make_endpoint(closed_port_url())
        receiver.statuses = [200, 500]
        # The WSGI handler would close the test's connection after each request (as in test_schema_fuzz.py).
        signals.request_started.disconnect(close_old_connections)
        signals.request_finished.disconnect(close_old_connections)
        try:
            schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
            operation = schema["/api/v1/pay/webhooks/{webhook_id}/test"]["POST"]
            assert operation.definition.raw["operationId"] == "testWebhook"
            seen = []
            for endpoint in (reached, reached, unreachable):
                case = operation.Case(path_parameters={"webhook_id": endpoint.pk},
                                      headers={"Authorization": f"Bearer {sk_client.raw_key}"})
                response = case.call()
                case.validate_response(response)
                seen.append((response.status_code, response.json()["status"]))
        finally:
            signals.request_started.connect(close_old_connections)
            signals.request_finished.connect(close_old_connections)
        assert seen == [(200, 200), (200, 500), (200, None)]


class TestNotFoundAndKeys:
    def test_an_unknown_id_is_404(self, sk_client):
        response = send_test(sk_client, "pwh_nosuchendpoint")
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "NOT_FOUND"
        assert not AuditEvent.objects.filter(action="webhook.test").exists()

    def test_a_deleted_endpoint_is_404_like_get_and_gets_nothing(self, receiver, sk_client):
        endpoint, _ = make_endpoint(receiver.url)
        assert sk_client.delete(f"/api/v1/pay/webhooks/{endpoint.pk}").status_code == 204
        assert sk_client.get(f"/api/v1/pay/webhooks/{endpoint.pk}").status_code == 404
        response = send_test(sk_client, endpoint.pk)
        assert response.status_code == 404, response.content
        assert response.json()["error"]["details"]["resource"] == "webhook"
        assert receiver.requests == []

    def test_a_publishable_key_is_403_and_nothing_is_sent(self, receiver, pk_client):
        endpoint, _ = make_endpoint(receiver.url)
        response = send_test(pk_client, endpoint.pk)
        assert response.status_code == 403, response.content
        assert receiver.requests == []
        assert not AuditEvent.objects.filter(action="webhook.test").exists()
