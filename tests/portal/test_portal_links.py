from datetime import timedelta
from urllib.parse import urlparse

import pytest
from django.utils import timezone

from portal.tokens import PortalLinkExpired, PortalLinkInvalid, portal_token_make, portal_token_read
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def link_path(sk_client, customer, **extra):
    response = sk_client.post("/api/v1/pay/portal", {"customer": customer, **extra}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


class TestPortalLinkRoute:
    def test_a_link_is_valid_for_one_hour_and_opens_the_customers_page(self, sk_client, client):
        CustomerFactory(external_id="acme", name="Acme Corp")
        CustomerFactory(external_id="globex", name="Globex")
        before = timezone.now().replace(microsecond=0)
        body = link_path(sk_client, "acme", returnUrl="https://app.example.com/settings")
        after = timezone.now()
        expires = timezone.datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00"))
        # One hour from the moment the route ran (somewhere between before and after), however slow the machine.
        assert before + timedelta(hours=1) <= expires <= after + timedelta(hours=1)
        page = client.get(urlparse(body["url"]).path)
        assert page.status_code == 200
        html = page.content.decode()
        assert "Acme Corp" in html and "Globex" not in html
        assert "https://app.example.com/settings" in html

    def test_an_unknown_customer_is_404(self, sk_client):
        response = sk_client.post("/api/v1/pay/portal", {"customer": "nobody"}, format="json")
        assert response.status_code == 404

    def test_a_return_url_that_is_not_a_url_is_422(self, sk_client):
        CustomerFactory(external_id="acme")
        response = sk_client.post("/api/v1/pay/portal", {"customer": "acme", "returnUrl": "javascript:alert(1)"}, format="json")
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "returnUrl"


class TestPortalTokens:
    def test_a_token_read_within_the_hour_names_the_customer(self):
        token = portal_token_make(customer_pk=7, return_url="https://x.test")
        link = portal_token_read(token, now=timezone.now() + timedelta(minutes=59))
        assert (link.customer_pk, link.return_url) == (7, "https://x.test")

    def test_a_token_older_than_an_hour_is_expired(self):
        token = portal_token_make(customer_pk=7)
        with pytest.raises(PortalLinkExpired):
            portal_token_read(token, now=timezone.now() + timedelta(hours=1, seconds=2))

    @pytest.mark.parametrize("mutate", [lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), lambda t: "x" + t, lambda t: t.split(":")[0], lambda t: ""])
    def test_a_tampered_token_is_invalid(self, mutate):
        with pytest.raises(PortalLinkInvalid):
            portal_token_read(mutate(portal_token_make(customer_pk=7)), now=timezone.now())

    def test_a_token_for_one_customer_cannot_be_edited_into_another(self):
        import base64
        import json

        token = portal_token_make(customer_pk=7)
        payload, stamp, signature = token.split(":")
        forged = base64.urlsafe_b64encode(json.dumps({"c": 8, "r": ""}).encode()).decode().rstrip("=")
        with pytest.raises(PortalLinkInvalid):
            portal_token_read(f"{forged}:{stamp}:{signature}", now=timezone.now())


class TestPortalPages:
    def test_an_expired_link_shows_a_clear_page(self, client, settings):
        customer = CustomerFactory(name="Acme Corp")
        settings.PORTAL_LINK_TTL_SECONDS = -1
        response = client.get(f"/portal/{portal_token_make(customer_pk=customer.pk)}/")
        assert response.status_code == 403
        assert b"This link has expired" in response.content and b"Acme Corp" not in response.content

    def test_a_tampered_link_shows_a_clear_page(self, client):
        customer = CustomerFactory(name="Acme Corp")
        token = portal_token_make(customer_pk=customer.pk)
        response = client.get(f"/portal/{token[:-2]}xx/")
        assert response.status_code == 403
        assert b"This link is not valid" in response.content and b"Acme Corp" not in response.content

    def test_a_deleted_customers_link_shows_nothing_of_them(self, client, sk_client):
        customer = CustomerFactory(external_id="gone", name="Gone Inc")
        token = portal_token_make(customer_pk=customer.pk)
        sk_client.delete("/api/v1/pay/customers/gone")
        response = client.get(f"/portal/{token}/")
        assert response.status_code == 403 and b"Gone Inc" not in response.content
