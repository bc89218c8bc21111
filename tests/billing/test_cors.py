import pytest

ORIGIN = "https://app.example.com"


@pytest.fixture(autouse=True)
def allowed(settings):
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]


@pytest.mark.django_db
class TestCors:
    def test_a_publishable_route_answers_an_allowed_origin(self, pk_client):
        response = pk_client.get("/api/v1/pay/ping", HTTP_ORIGIN=ORIGIN)
        assert response.status_code == 200
        assert response["Access-Control-Allow-Origin"] == ORIGIN and response["Vary"] == "Origin"

    def test_a_preflight_is_answered_without_a_key(self, anon_client):
        response = anon_client.options("/api/v1/pay/check", HTTP_ORIGIN=ORIGIN, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
        assert response.status_code == 204
        assert response["Access-Control-Allow-Origin"] == ORIGIN
        assert "Authorization" in response["Access-Control-Allow-Headers"]

    def test_another_origin_gets_no_cors_headers(self, pk_client):
        response = pk_client.get("/api/v1/pay/ping", HTTP_ORIGIN="https://evil.example")
        assert not response.has_header("Access-Control-Allow-Origin")

    def test_secret_routes_never_answer_cors(self, sk_client, anon_client):
        assert not sk_client.get("/api/v1/pay/customers", HTTP_ORIGIN=ORIGIN).has_header("Access-Control-Allow-Origin")
        preflight = anon_client.options("/api/v1/pay/customers", HTTP_ORIGIN=ORIGIN, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
        assert not preflight.has_header("Access-Control-Allow-Origin")
