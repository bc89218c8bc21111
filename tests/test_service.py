"""Health, readiness, the OpenAPI schema and the docs page served offline."""

import re

import pytest


class TestHealth:
    def test_healthz_answers_without_a_key(self, client):
        response = client.get("/healthz")
        assert response.status_code == 200 and response.json() == {"status": "ok"}

    @pytest.mark.django_db
    def test_readyz_checks_the_database_and_the_broker(self, client):
        response = client.get("/readyz")
        assert response.status_code == 200, response.content
        assert response.json()["checks"]["database"] == "ok"
        assert response.json()["checks"]["broker"] == "ok"

    @pytest.mark.django_db
    def test_readyz_is_503_when_the_broker_is_down(self, client, settings):
        settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["broker"] == "down"


class TestSchemaAndDocs:
    def test_the_schema_lists_every_route_of_the_foundation(self, client):
        response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
        assert response.status_code == 200
        paths = response.json()["paths"]
        for path in ["/api/v1/pay/customers", "/api/v1/pay/customers/{customer_id}", "/api/v1/pay/products",
                     "/api/v1/pay/products/{product_id}", "/api/v1/pay/products/{product_id}/versions",
                     "/api/v1/pay/api-keys", "/api/v1/pay/api-keys/{key_id}", "/api/v1/pay/audit-events",
                     "/api/v1/pay/ledger/trial-balance", "/api/v1/pay/ledger/entries", "/api/v1/pay/portal"]:
            assert path in paths, path
        operation_ids = {op["operationId"] for item in paths.values() for op in item.values() if isinstance(op, dict)}
        assert {"getOrCreateCustomer", "getCustomer", "updateCustomer", "deleteCustomer", "listCustomers",
                "createProduct", "listProducts", "getProduct", "updateProduct", "listProductVersions",
                "createApiKey", "listApiKeys", "revokeApiKey", "listAuditEvents", "trialBalance",
                "listLedgerEntries", "portal"} <= operation_ids

    def test_the_docs_page_loads_its_assets_from_this_server(self, client):
        page = client.get("/api/docs/")
        assert page.status_code == 200
        html = page.content.decode()
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
        assert assets, "the docs page names no assets"
        for asset in assets:
            assert asset.startswith("/static/"), f"{asset} is not served by us"
            assert client.get(asset).status_code == 200, asset

    @pytest.mark.parametrize("debug", [False, True])
    def test_an_unknown_api_route_is_a_json_404_in_debug_too(self, client, settings, debug):
        settings.DEBUG = debug
        for path in ["/api/v1/pay/nothing-here", "/api/v1/pay/customers/a/b/c", "/api/"]:
            response = client.get(path)
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "NOT_FOUND"

    def test_an_unknown_api_route_posted_with_csrf_checks_on_is_a_json_404(self):
        from django.test import Client

        response = Client(enforce_csrf_checks=True).post("/api/v1/pay/nothing-here", {}, content_type="application/json")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"

    @pytest.mark.django_db
    def test_a_wrong_method_is_a_json_405(self, sk_client):
        response = sk_client.put("/api/v1/pay/customers", {}, format="json")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
