from urllib.parse import quote

import pytest

from billing.models import AuditEvent, Customer, Price
from tests.factories import CustomerFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/pay/customers"


def fields(response):
    return {d["field"] for d in response.json()["error"]["details"]}


class TestGetOrCreateCustomer:
    def test_a_new_id_creates_a_customer_with_201(self, sk_client):
        response = sk_client.post(URL, {"customerId": "acme", "name": "Acme", "email": "ops@acme.test", "metadata": {"plan": "x"}}, format="json")
        assert response.status_code == 201
        body = response.json()
        assert body["id"] == "acme" and body["name"] == "Acme" and body["email"] == "ops@acme.test"
        assert body["metadata"] == {"plan": "x"}
        assert body["subscriptions"] == [] and body["balances"] == {} and body["flags"] == {} and body["paymentMethods"] == []

    def test_a_known_id_returns_the_existing_customer_unchanged_with_200(self, sk_client):
        sk_client.post(URL, {"customerId": "acme", "name": "Acme"}, format="json")
        response = sk_client.post(URL, {"customerId": "acme", "name": "Other"}, format="json")
        assert response.status_code == 200
        assert response.json()["name"] == "Acme"
        assert Customer.objects.count() == 1

    def test_ids_in_any_script_round_trip_through_the_url(self, sk_client):
        for customer_id in ["клиент-1", "顧客 7", "a+b@c.d", "x?y#z", "😀"]:
            assert sk_client.post(URL, {"customerId": customer_id}, format="json").status_code == 201
            response = sk_client.get(f"{URL}/{quote(customer_id, safe='')}")
            assert response.status_code == 200, customer_id
            assert response.json()["id"] == customer_id

    @pytest.mark.parametrize(
        "body, field",
        [
            ({}, "customerId"),
            ({"customerId": ""}, "customerId"),
            ({"customerId": 42}, "customerId"),
            ({"customerId": "a/b"}, "customerId"),
            ({"customerId": " padded"}, "customerId"),
            ({"customerId": "x" * 256}, "customerId"),
            ({"customerId": "tab\there"}, "customerId"),
            ({"customerId": "c", "email": "not-an-email"}, "email"),
            ({"customerId": "c", "name": 7}, "name"),
            ({"customerId": "c", "metadata": ["a"]}, "metadata"),
            ({"customerId": "c", "metadata": {str(i): i for i in range(51)}}, "metadata"),
            ({"customerId": "c", "name": "nul\x00byte"}, "name"),
            ({"customerId": "c", "metadata": {"deep": {"er": "\x00"}}}, "metadata.deep.er"),
        ],
    )
    def test_bad_input_is_a_422_naming_the_field_and_changes_nothing(self, sk_client, body, field):
        response = sk_client.post(URL, body, format="json")
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert field in fields(response)
        assert not Customer.objects.exists()
        assert not AuditEvent.objects.exists()

    @pytest.mark.parametrize(
        "raw",
        [b"{", b'{"customerId": "a", "customerId": "b"}', b'{"customerId": NaN}', b'"just a string"', b"[1,2]",
         b'{"customerId": "\\ud800"}', b"\xff\xfe", b"[" * 100 + b"]" * 100],
    )
    def test_malformed_json_is_a_422_and_changes_nothing(self, sk_client, raw):
        response = sk_client.post(URL, raw, content_type="application/json")
        assert response.status_code == 422, response.content
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert not Customer.objects.exists()

    def test_a_non_json_content_type_is_refused_with_415(self, sk_client):
        response = sk_client.post(URL, "customerId=a", content_type="application/x-www-form-urlencoded")
        assert response.status_code == 415
        assert response.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


class TestGetUpdateDeleteCustomer:
    def test_an_unknown_customer_is_404_naming_the_resource(self, sk_client):
        response = sk_client.get(f"{URL}/nobody")
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "NOT_FOUND" and error["details"]["resource"] == "customer"

    def test_patch_changes_only_the_given_fields(self, sk_client):
        CustomerFactory(external_id="acme", name="Acme", email="a@acme.test", metadata={"k": 1})
        response = sk_client.patch(f"{URL}/acme", {"name": "Acme Inc"}, format="json")
        assert response.status_code == 200
        body = response.json()
        assert body["name"] == "Acme Inc" and body["email"] == "a@acme.test" and body["metadata"] == {"k": 1}
        response = sk_client.patch(f"{URL}/acme", {"metadata": {"j": 2}}, format="json")
        assert response.json()["metadata"] == {"j": 2}

    def test_patch_with_bad_input_is_422_and_changes_nothing(self, sk_client):
        CustomerFactory(external_id="acme", name="Acme")
        response = sk_client.patch(f"{URL}/acme", {"name": "ok", "email": "nope"}, format="json")
        assert response.status_code == 422 and fields(response) == {"email"}
        assert Customer.objects.get().name == "Acme"

    def test_delete_hides_the_customer_and_frees_the_id(self, sk_client):
        CustomerFactory(external_id="acme")
        assert sk_client.delete(f"{URL}/acme").status_code == 204
        assert sk_client.get(f"{URL}/acme").status_code == 404
        assert sk_client.delete(f"{URL}/acme").status_code == 404
        assert sk_client.post(URL, {"customerId": "acme"}, format="json").status_code == 201
        assert Customer.objects.filter(external_id="acme").count() == 2  # history keeps the old one

    def test_a_customer_with_a_live_paid_subscription_cannot_be_deleted(self, sk_client):
        subscription = SubscriptionFactory(customer__external_id="acme")
        Price.objects.create(version=subscription.version, type="recurring", amount=2900, currency="usd", billing_interval="month")
        response = sk_client.delete(f"{URL}/acme")
        assert response.status_code == 409
        assert response.json()["error"]["details"]["subscriptions"] == [subscription.pk]
        assert Customer.objects.get().deleted_at is None

    def test_deleting_a_customer_ends_their_free_subscriptions(self, sk_client):
        subscription = SubscriptionFactory(customer__external_id="acme")
        assert sk_client.delete(f"{URL}/acme").status_code == 204
        subscription.refresh_from_db()
        assert subscription.status == "canceled" and subscription.canceled_at is not None

    def test_get_shows_the_customers_subscriptions(self, sk_client):
        subscription = SubscriptionFactory(customer__external_id="acme", product__slug="pro")
        body = sk_client.get(f"{URL}/acme").json()
        assert [(s["id"], s["product"], s["status"], s["version"]) for s in body["subscriptions"]] == [
            (subscription.pk, "pro", "active", 1)
        ]


class TestListCustomers:
    def test_pages_follow_the_cursor_newest_first_without_gaps_or_repeats(self, sk_client):
        ids = [CustomerFactory(external_id=f"c{i:02d}").external_id for i in range(25)]
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
            body = sk_client.get(URL, params).json()
            seen += [c["id"] for c in body["data"]]
            pages += 1
            cursor = body["nextCursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == list(reversed(ids))

    def test_deleted_customers_are_not_listed(self, sk_client):
        CustomerFactory(external_id="keep")
        sk_client.delete(f"{URL}/{CustomerFactory(external_id='gone').external_id}")
        assert [c["id"] for c in sk_client.get(URL).json()["data"]] == ["keep"]

    @pytest.mark.parametrize("params, field", [({"cursor": "garbage!"}, "cursor"), ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "ten"}, "limit")])
    def test_a_bad_cursor_or_limit_is_422(self, sk_client, params, field):
        response = sk_client.get(URL, params)
        assert response.status_code == 422 and fields(response) == {field}
