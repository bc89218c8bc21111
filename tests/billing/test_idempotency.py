import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import ApiKey, AuditEvent, Customer, IdempotencyKey, Product
from billing.services.api_keys import api_key_create
from billing.tasks import purge_idempotency_keys
from tests.conftest import postgres_only
from tests.factories import CustomerFactory, ProductFactory

URL = "/api/v1/pay/customers"


def post(client, body, key, url=URL):
    return client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


@pytest.mark.django_db
class TestReplay:
    def test_a_retry_with_the_same_key_and_body_replays_the_first_answer(self, sk_client):
        first = post(sk_client, {"customerId": "acme", "name": "Acme"}, "k-1")
        second = post(sk_client, {"customerId": "acme", "name": "Acme"}, "k-1")
        assert first.status_code == second.status_code == 201
        assert second.content == first.content
        assert second["Idempotent-Replayed"] == "true"
        assert not first.has_header("Idempotent-Replayed")
        assert Customer.objects.count() == 1
        assert AuditEvent.objects.filter(action="customer.get_or_create").count() == 1

    def test_json_key_order_and_spacing_do_not_make_another_body(self, sk_client):
        post(sk_client, {"customerId": "acme", "name": "Acme"}, "k-1")
        retry = sk_client.post(URL, '{ "name":"Acme",  "customerId":"acme" }', content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-1")
        assert retry["Idempotent-Replayed"] == "true"

    def test_the_same_key_with_another_body_is_422_and_performs_nothing(self, sk_client):
        post(sk_client, {"customerId": "acme"}, "k-1")
        response = post(sk_client, {"customerId": "other"}, "k-1")
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
        assert list(Customer.objects.values_list("external_id", flat=True)) == ["acme"]

    def test_the_same_key_on_another_route_is_another_request(self, sk_client):
        post(sk_client, {"customerId": "acme"}, "k-1")
        response = post(sk_client, {"name": "k", "type": "secret"}, "k-1", url="/api/v1/pay/api-keys")
        assert response.status_code == 422 and response.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"

    def test_a_key_still_in_flight_is_409(self, sk_client):
        api_key = ApiKey.objects.get(key_hash__isnull=False, name="test secret")
        from billing.api.idempotency import request_fingerprint

        now = timezone.now()
        IdempotencyKey.objects.create(
            api_key=api_key, key="k-1", method="POST", path=URL, created_at=now, expires_at=now + timedelta(hours=1),
            request_hash=request_fingerprint(method="POST", path=URL, body=b'{"customerId":"acme"}'),
        )
        response = post(sk_client, {"customerId": "acme"}, "k-1")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
        assert not Customer.objects.exists()

    def test_keys_are_scoped_per_api_key(self, sk_client):
        _, raw = api_key_create(name="second", type="secret", now=timezone.now())
        other = APIClient()
        other.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        post(sk_client, {"customerId": "acme"}, "k-1")
        response = post(other, {"customerId": "beta"}, "k-1")
        assert response.status_code == 201 and not response.has_header("Idempotent-Replayed")

    def test_an_expired_key_runs_the_request_again(self, sk_client):
        post(sk_client, {"customerId": "acme"}, "k-1")
        IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        sk_client.delete(f"{URL}/acme")
        response = post(sk_client, {"customerId": "acme"}, "k-1")
        assert response.status_code == 201 and not response.has_header("Idempotent-Replayed")
        assert Customer.objects.filter(deleted_at__isnull=True).count() == 1

    def test_a_validation_error_is_kept_and_replayed_like_any_answer(self, sk_client):
        first = post(sk_client, {"customerId": ""}, "k-1")
        second = post(sk_client, {"customerId": ""}, "k-1")
        assert first.status_code == second.status_code == 422
        assert second["Idempotent-Replayed"] == "true" and second.content == first.content

    @pytest.mark.parametrize("key", ["", "has space", "x" * 256, "tab\tkey", "ключ"])
    def test_a_malformed_key_is_422_naming_the_header(self, sk_client, key):
        response = post(sk_client, {"customerId": "acme"}, key)
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "Idempotency-Key"
        assert not Customer.objects.exists()


@pytest.mark.django_db
class TestEveryMutatingRouteReplays:
    """Each mutating route of the foundation, called twice with one key, acts once."""

    @pytest.fixture
    def world(self):
        CustomerFactory(external_id="acme")
        ProductFactory(slug="pro")

    @pytest.mark.parametrize(
        "method, url, body, count",
        [
            ("post", "/api/v1/pay/customers", {"customerId": "new"}, lambda: Customer.objects.count()),
            ("patch", "/api/v1/pay/customers/acme", {"name": "Renamed"}, None),
            ("delete", "/api/v1/pay/customers/acme", None, None),
            ("post", "/api/v1/pay/products", {"name": "Basic", "slug": "basic"}, lambda: Product.objects.count()),
            ("patch", "/api/v1/pay/products/pro", {"name": "Pro 2"}, None),
            ("post", "/api/v1/pay/portal", {"customer": "acme"}, None),
        ],
    )
    def test_the_second_call_replays(self, sk_client, world, method, url, body, count):
        call = lambda: getattr(sk_client, method)(url, body, format="json", HTTP_IDEMPOTENCY_KEY="once")  # noqa: E731
        first = call()
        assert first.status_code < 300, first.content
        before = count() if count else None
        audits = AuditEvent.objects.count()
        second = call()
        assert second.status_code == first.status_code
        assert second.content == first.content
        assert second["Idempotent-Replayed"] == "true"
        assert AuditEvent.objects.count() == audits
        if count:
            assert count() == before

    def test_a_replayed_key_creation_never_repeats_the_raw_key_and_it_is_not_stored(self, sk_client):
        first = post(sk_client, {"name": "k", "type": "secret"}, "mk-1", url="/api/v1/pay/api-keys")
        raw = first.json()["rawKey"]
        assert raw.startswith("cp_sk_")
        second = post(sk_client, {"name": "k", "type": "secret"}, "mk-1", url="/api/v1/pay/api-keys")
        assert second["Idempotent-Replayed"] == "true"
        assert second.json()["rawKey"] is None
        assert {k: v for k, v in second.json().items() if k != "rawKey"} == {
            k: v for k, v in first.json().items() if k != "rawKey"
        }
        assert not IdempotencyKey.objects.filter(response_body__contains=raw[6:]).exists()

    def test_revoking_a_key_replays(self, sk_client):
        key, _ = api_key_create(name="victim", type="secret", now=timezone.now())
        first = sk_client.delete(f"/api/v1/pay/api-keys/{key.pk}", HTTP_IDEMPOTENCY_KEY="once")
        second = sk_client.delete(f"/api/v1/pay/api-keys/{key.pk}", HTTP_IDEMPOTENCY_KEY="once")
        assert first.status_code == second.status_code == 204
        assert second["Idempotent-Replayed"] == "true"


@pytest.mark.django_db
class TestPurge:
    def test_the_purge_job_deletes_expired_keys_only_and_is_audited(self, sk_client):
        post(sk_client, {"customerId": "a"}, "old")
        post(sk_client, {"customerId": "b"}, "new")
        IdempotencyKey.objects.filter(key="old").update(expires_at=timezone.now() - timedelta(minutes=1))
        purge_idempotency_keys()
        assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
        event = AuditEvent.objects.get(action="idempotency.purge")
        assert event.actor == "system:purge_idempotency_keys" and event.data == {"deleted": 1}


@pytest.mark.django_db(transaction=True)
class TestConcurrentRetries:
    pytestmark = postgres_only

    def test_twenty_concurrent_requests_with_one_key_create_exactly_one_customer(self):
        _, raw = api_key_create(name="race", type="secret", now=timezone.now())
        barrier = threading.Barrier(20)
        results = []
        lock = threading.Lock()

        def worker():
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
            try:
                barrier.wait()
                response = post(client, {"customerId": "raced", "name": "R"}, "race-key")
                with lock:
                    results.append((response.status_code, response.get("Idempotent-Replayed"), response.json()))
            finally:
                connection.close()

        threads = [threading.Thread(target=worker) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert len(results) == 20
        assert Customer.objects.filter(external_id="raced").count() == 1
        fresh = [r for r in results if r[0] == 201 and r[1] is None]
        replayed = [r for r in results if r[0] == 201 and r[1] == "true"]
        in_flight = [r for r in results if r[0] == 409]
        assert len(fresh) == 1
        assert len(fresh) + len(replayed) + len(in_flight) == 20
        assert all(r[2]["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS" for r in in_flight)
        assert all(r[2] == fresh[0][2] for r in replayed)
        assert AuditEvent.objects.filter(action="customer.get_or_create").count() == 1
