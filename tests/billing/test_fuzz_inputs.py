"""Hostile input of any shape: never a 5xx, and a refused request changes nothing."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.models import AuditEvent, Customer, Feature, IdempotencyKey, Product

pytestmark = pytest.mark.django_db

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**53, 2**63, 2**63 - 1, 10**15, 10**15 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "\ud800", "a/b", "😀" * 70, "pro", "usd", "recurring", "metered", "month"]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


def body_for(fields):
    return st.dictionaries(st.sampled_from(fields) | st.text(max_size=10), json_values, max_size=len(fields) + 1)


def snapshot():
    return (Customer.objects.count(), Product.objects.count(), Feature.objects.count(), AuditEvent.objects.count())


def send(client, method, url, body):
    raw = json.dumps(body, allow_nan=True)
    return getattr(client, method)(url, raw, content_type="application/json")


CUSTOMER_FIELDS = ["customerId", "name", "email", "metadata"]
PRODUCT_FIELDS = ["name", "slug", "group", "isAddOn", "autoEnable", "freeTrial", "prices", "features"]
PRICE = st.fixed_dictionaries({"type": st.sampled_from(["recurring", "one_off", "x"])}, optional={
    "amount": json_values, "currency": json_values, "billingInterval": json_values, "tiers": json_values, "tiersMode": json_values})
FEATURE = st.fixed_dictionaries({"slug": st.sampled_from(["f", "g", "bad slug"]), "type": st.sampled_from(["boolean", "metered", "seats"])}, optional={
    "allowance": json_values, "allowanceType": json_values, "resetInterval": json_values, "overageAllowed": json_values,
    "overagePrice": json_values, "perEntity": json_values})


class TestFuzzedBodies:
    @FUZZ
    @given(body=body_for(CUSTOMER_FIELDS))
    def test_create_customer(self, sk_client, body):
        before = snapshot()
        response = send(sk_client, "post", "/api/v1/pay/customers", body)
        assert response.status_code < 500, response.content
        if response.status_code >= 400:
            assert snapshot() == before
            assert response.json()["error"]["code"]

    @FUZZ
    @given(body=st.fixed_dictionaries({"name": json_values, "slug": st.sampled_from(["p", "q", ""])},
                                      optional={"prices": st.lists(PRICE, max_size=3), "features": st.lists(FEATURE, max_size=3),
                                                "freeTrial": json_values, "autoEnable": json_values, "isAddOn": json_values}))
    def test_create_product(self, sk_client, body):
        before = snapshot()
        response = send(sk_client, "post", "/api/v1/pay/products", body)
        assert response.status_code < 500, response.content
        if response.status_code >= 400:
            assert snapshot() == before

    @FUZZ
    @given(body=body_for(PRODUCT_FIELDS))
    def test_update_product(self, sk_client, body):
        sk_client.post("/api/v1/pay/products", {"name": "Base", "slug": "base"}, format="json")
        before = (snapshot(), sk_client.get("/api/v1/pay/products/base").content)
        response = send(sk_client, "patch", "/api/v1/pay/products/base", body)
        assert response.status_code < 500, response.content
        if response.status_code >= 400:
            assert (snapshot(), sk_client.get("/api/v1/pay/products/base").content) == before

    @FUZZ
    @given(path_id=st.text(min_size=1, max_size=30), key=st.text(max_size=30))
    def test_odd_path_ids_and_idempotency_keys(self, sk_client, path_id, key):
        from urllib.parse import quote

        before = (snapshot(), IdempotencyKey.objects.count())
        headers = {"HTTP_IDEMPOTENCY_KEY": key} if key.isascii() else {}
        response = sk_client.patch(f"/api/v1/pay/customers/{quote(path_id, safe='')}", {"name": "x"}, format="json", **headers)
        assert response.status_code < 500, response.content
        assert response.status_code in (404, 422)
        assert snapshot() == before[0]
