from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import AuditEvent

pytestmark = pytest.mark.django_db

URL = "/api/v1/pay/audit-events"


class TestAuditTrail:
    def test_a_mutating_call_records_actor_action_target_and_request_id(self, sk_client):
        response = sk_client.post("/api/v1/pay/customers", {"customerId": "acme"}, format="json", HTTP_X_REQUEST_ID="req-abc-1")
        assert response["X-Request-Id"] == "req-abc-1"
        event = sk_client.get(URL).json()["data"][0]
        key_id = AuditEvent.objects.get().actor_id
        assert key_id.startswith("pak_")
        assert (event["actor"], event["action"], event["targetType"], event["targetId"], event["requestId"]) == (
            f"api_key:{key_id}", "customer.get_or_create", "customer", "acme", "req-abc-1"
        )

    def test_reads_and_refused_calls_record_nothing(self, sk_client):
        sk_client.get("/api/v1/pay/customers")
        sk_client.post("/api/v1/pay/customers", {"customerId": ""}, format="json")
        sk_client.delete("/api/v1/pay/customers/nobody")
        assert not AuditEvent.objects.exists()

    def test_filters_by_actor_action_and_since(self, sk_client):
        sk_client.post("/api/v1/pay/customers", {"customerId": "a"}, format="json")
        sk_client.patch("/api/v1/pay/customers/a", {"name": "A"}, format="json")
        old = AuditEvent.objects.create(actor_type="system", actor_id="job", action="demo.seed",
                                        created_at=timezone.now() - timedelta(days=3))
        key_actor = AuditEvent.objects.exclude(pk=old.pk).first().actor

        def actions(**params):
            return [e["action"] for e in sk_client.get(URL, params).json()["data"]]

        assert actions(actor=key_actor) == ["customer.update", "customer.get_or_create"]
        assert actions(actor="system:job") == ["demo.seed"]
        assert actions(actor="job") == ["demo.seed"]
        assert actions(action="customer.update") == ["customer.update"]
        since = (timezone.now() - timedelta(days=1)).isoformat()
        assert actions(since=since) == ["customer.update", "customer.get_or_create"]

    def test_a_bad_since_is_422(self, sk_client):
        response = sk_client.get(URL, {"since": "yesterday"})
        assert response.status_code == 422
        assert response.json()["error"]["details"] == [{"field": "since", "message": "must be an ISO 8601 time or epoch milliseconds"}]

    def test_pages_follow_the_cursor(self, sk_client):
        for i in range(5):
            AuditEvent.objects.create(actor_type="system", actor_id="job", action=f"a{i}", created_at=timezone.now())
        first = sk_client.get(URL, {"limit": 3}).json()
        second = sk_client.get(URL, {"limit": 3, "cursor": first["nextCursor"]}).json()
        assert [e["action"] for e in first["data"] + second["data"]] == ["a4", "a3", "a2", "a1", "a0"]
        assert second["nextCursor"] is None
