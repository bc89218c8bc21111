import hashlib
import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import ApiKey
from billing.services.api_keys import api_key_create

pytestmark = pytest.mark.django_db

UNAUTHORIZED = {"code": "UNAUTHORIZED", "message": "Invalid API key.", "details": None}


def client_with(raw_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


class TestAuthentication:
    def test_a_request_without_a_key_gets_401_unauthorized(self, anon_client):
        response = anon_client.get("/api/v1/pay/customers")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHORIZED"
        assert response["WWW-Authenticate"] == "Bearer"

    def test_an_unknown_key_gets_401(self):
        response = client_with("cp_sk_" + "x" * 43).get("/api/v1/pay/customers")
        assert response.status_code == 401
        assert response.json()["error"] == UNAUTHORIZED

    def test_a_revoked_key_gets_401_indistinguishable_from_an_unknown_one(self, sk_client):
        key, raw = api_key_create(name="soon revoked", type="secret", now=timezone.now())
        assert client_with(raw).get("/api/v1/pay/customers").status_code == 200
        assert sk_client.delete(f"/api/v1/pay/api-keys/{key.pk}").status_code == 204
        revoked = client_with(raw).get("/api/v1/pay/customers")
        unknown = client_with(raw[:-1] + ("A" if raw[-1] != "A" else "B")).get("/api/v1/pay/customers")
        assert revoked.status_code == unknown.status_code == 401
        assert revoked.json() == unknown.json()

    def test_a_revoked_key_stops_working_on_the_very_next_request(self, sk_client):
        key, raw = api_key_create(name="hot", type="secret", now=timezone.now())
        client = client_with(raw)
        assert client.get("/api/v1/pay/ping").status_code == 200
        assert sk_client.delete(f"/api/v1/pay/api-keys/{key.pk}").status_code == 204
        assert client.get("/api/v1/pay/ping").status_code == 401

    def test_use_is_written_to_last_used_at_at_most_once_a_minute(self):
        created = timezone.now() - timedelta(hours=1)
        key, raw = api_key_create(name="used", type="publishable", now=created)
        assert client_with(raw).get("/api/v1/pay/ping").status_code == 200
        first = ApiKey.objects.get(pk=key.pk).last_used_at
        assert first is not None and first > created
        client_with(raw).get("/api/v1/pay/ping")
        assert ApiKey.objects.get(pk=key.pk).last_used_at == first

    @pytest.mark.parametrize("header", ["cp_sk_abc", "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "bearer cp_sk_x"])
    def test_a_malformed_authorization_header_gets_401(self, header):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        assert client.get("/api/v1/pay/customers").status_code == 401

    def test_a_publishable_key_is_refused_with_403_on_a_secret_route(self, pk_client):
        for method, path in [("get", "/api/v1/pay/customers"), ("post", "/api/v1/pay/api-keys"), ("get", "/api/v1/pay/ledger/trial-balance")]:
            response = getattr(pk_client, method)(path, {}, format="json") if method == "post" else pk_client.get(path)
            assert response.status_code == 403, path
            assert response.json()["error"]["code"] == "FORBIDDEN"

    def test_a_publishable_key_refused_changes_nothing(self, pk_client):
        pk_client.post("/api/v1/pay/customers", {"customerId": "c1"}, format="json")
        from billing.models import Customer

        assert not Customer.objects.exists()


class TestApiKeyRoutes:
    def test_creating_a_secret_key_returns_the_raw_key_once(self, sk_client):
        response = sk_client.post("/api/v1/pay/api-keys", {"name": "backend", "type": "secret"}, format="json")
        assert response.status_code == 201
        body = response.json()
        assert body["id"].startswith("pak_")
        assert body["rawKey"].startswith("cp_sk_")
        assert body["maskedKey"].startswith("cp_sk_") and body["rawKey"] not in body["maskedKey"]
        assert client_with(body["rawKey"]).get("/api/v1/pay/customers").status_code == 200
        listed = sk_client.get("/api/v1/pay/api-keys").json()["data"]
        assert body["rawKey"] not in str(listed)
        assert {k["id"] for k in listed} >= {body["id"]}

    def test_a_publishable_key_has_the_pk_prefix(self, sk_client):
        body = sk_client.post("/api/v1/pay/api-keys", {"name": "web", "type": "publishable"}, format="json").json()
        assert body["rawKey"].startswith("cp_pk_") and body["type"] == "publishable"

    def test_a_bad_type_is_a_422_naming_the_field(self, sk_client):
        response = sk_client.post("/api/v1/pay/api-keys", {"name": "x", "type": "admin"}, format="json")
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "type"

    def test_revoking_an_unknown_key_is_404(self, sk_client):
        response = sk_client.delete("/api/v1/pay/api-keys/pak_nope")
        assert response.status_code == 404
        assert response.json()["error"]["details"]["resource"] == "api_key"

    def test_no_stored_column_holds_the_raw_key(self, sk_client):
        body = sk_client.post("/api/v1/pay/api-keys", {"name": "backend", "type": "secret"}, format="json").json()
        raw = body["rawKey"]
        key = ApiKey.objects.get(pk=body["id"])
        assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM billing_apikey WHERE id = %s", [key.pk])
            row = cursor.fetchone()
        assert all(raw not in str(value) for value in row)
        # The secret part is 43 random characters; the stored mask keeps 8 of them.
        secret = raw[len("cp_sk_"):]
        assert sum(ch in key.masked_key for ch in [secret[i:i + 9] for i in range(len(secret) - 8)]) == 0


class TestCreateApiKeyCommand:
    def test_it_prints_only_the_raw_key_on_the_last_line_and_the_key_works(self):
        out = io.StringIO()
        call_command("createapikey", "--name", "ops", "--type", "secret", stdout=out)
        raw = out.getvalue().strip().splitlines()[-1]
        assert raw.startswith("cp_sk_")
        assert client_with(raw).get("/api/v1/pay/customers").status_code == 200

    def test_a_publishable_key_from_the_command_is_refused_on_secret_routes(self):
        out = io.StringIO()
        call_command("createapikey", "--name", "web", "--type", "publishable", stdout=out)
        raw = out.getvalue().strip().splitlines()[-1]
        assert raw.startswith("cp_pk_")
        assert client_with(raw).get("/api/v1/pay/customers").status_code == 403
