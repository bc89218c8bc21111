import pytest

from billing.models import Feature, Product, ProductVersion
from tests.factories import SubscriptionFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/pay/products"

PRO = {
    "name": "Pro",
    "slug": "pro",
    "group": "plans",
    "freeTrial": {"days": 14, "requirePaymentMethod": False},
    "prices": [
        {"type": "recurring", "amount": 2900, "billingInterval": "month"},
        {"type": "recurring", "amount": 29000, "billingInterval": "year"},
        {"type": "recurring", "amount": 0, "currency": "EUR", "billingInterval": "month",
         "tiers": [{"upTo": 5, "unitAmount": 1000}, {"upTo": None, "unitAmount": 800, "flatAmount": 500}], "tiersMode": "volume"},
    ],
    "features": [
        {"slug": "api-calls", "name": "API calls", "type": "metered", "allowance": 10000, "resetInterval": "month",
         "overageAllowed": True, "overagePrice": 2},
        {"slug": "seats", "name": "Seats", "type": "seats", "allowance": 5, "overageAllowed": True, "overagePrice": 1500},
        {"slug": "sso", "name": "SSO", "type": "boolean"},
        {"slug": "ai-tokens", "type": "metered", "allowanceType": "unlimited"},
    ],
}


def create(client, body):
    return client.post(URL, body, format="json")


def error_fields(response):
    return [d["field"] for d in response.json()["error"]["details"]]


class TestCreateProduct:
    def test_a_full_product_round_trips(self, sk_client):
        response = create(sk_client, PRO)
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["id"].startswith("pprod_") and body["versionId"].startswith("pver_") and body["version"] == 1
        assert body["freeTrial"] == {"days": 14, "requirePaymentMethod": False}
        assert [(p["amount"], p["currency"], p["billingInterval"]) for p in body["prices"]] == [
            (2900, "usd", "month"), (29000, "usd", "year"), (0, "eur", "month")
        ]
        assert body["prices"][2]["tiers"] == [
            {"upTo": 5, "unitAmount": 1000, "flatAmount": 0}, {"upTo": None, "unitAmount": 800, "flatAmount": 500}
        ]
        assert body["prices"][2]["tiersMode"] == "volume"
        features = {f["slug"]: f for f in body["features"]}
        assert features["api-calls"] == {
            "slug": "api-calls", "name": "API calls", "type": "metered", "allowanceType": "fixed", "allowance": 10000,
            "resetInterval": "month", "overageAllowed": True, "overagePrice": 2, "perEntity": False,
        }
        assert features["seats"]["resetInterval"] == "none"
        assert features["sso"]["allowanceType"] is None and features["sso"]["allowance"] is None
        assert features["ai-tokens"]["allowanceType"] == "unlimited"
        assert features["ai-tokens"]["resetInterval"] == "billing_period"
        assert sk_client.get(f"{URL}/{body['id']}").json() == body
        assert sk_client.get(f"{URL}/pro").json() == body
        assert sk_client.get(URL).json() == {"data": [body]}

    def test_a_one_off_top_up_has_no_interval_and_features_that_do_not_reset(self, sk_client):
        body = create(sk_client, {"name": "1000 credits", "slug": "topup", "prices": [{"type": "one_off", "amount": 1000}],
                                  "features": [{"slug": "credits", "type": "metered", "allowance": 1000}]}).json()
        assert body["prices"][0]["billingInterval"] is None
        assert body["features"][0]["resetInterval"] == "none"

    def test_products_naming_the_same_feature_share_it(self, sk_client):
        create(sk_client, PRO)
        create(sk_client, {"name": "Team", "slug": "team", "features": [{"slug": "api-calls", "type": "metered", "allowance": 5}]})
        assert Feature.objects.filter(slug="api-calls").count() == 1

    def test_a_feature_keeps_its_type_across_products(self, sk_client):
        create(sk_client, PRO)
        response = create(sk_client, {"name": "T", "slug": "t", "features": [{"slug": "sso", "type": "metered", "allowance": 1}]})
        assert response.status_code == 422 and error_fields(response) == ["features.0.type"]
        assert not Product.objects.filter(slug="t").exists()

    def test_a_taken_slug_is_409(self, sk_client):
        create(sk_client, PRO)
        response = create(sk_client, PRO)
        assert response.status_code == 409
        assert response.json()["error"]["details"] == {"resource": "product", "field": "slug"}
        assert Product.objects.count() == 1

    @pytest.mark.parametrize(
        "change, field",
        [
            ({"slug": "Not A Slug"}, "slug"),
            ({"name": ""}, "name"),
            ({"prices": [{"type": "weekly", "amount": 1}]}, "prices.0.type"),
            ({"prices": [{"type": "recurring", "amount": 1.5}]}, "prices.0.amount"),
            ({"prices": [{"type": "recurring", "amount": "100"}]}, "prices.0.amount"),
            ({"prices": [{"type": "recurring", "amount": -1}]}, "prices.0.amount"),
            ({"prices": [{"type": "recurring", "amount": 2**63}]}, "prices.0.amount"),
            ({"prices": [{"type": "recurring", "amount": True}]}, "prices.0.amount"),
            ({"prices": [{"type": "recurring", "amount": 1, "currency": "dollars"}]}, "prices.0.currency"),
            ({"prices": [{"type": "one_off", "amount": 1, "billingInterval": "month"}]}, "prices.0.billingInterval"),
            ({"prices": [{"type": "recurring", "amount": 0, "tiers": [{"upTo": 5, "unitAmount": 1}]}]}, "prices.0.tiers"),
            ({"prices": [{"type": "recurring", "amount": 0, "tiers": [{"upTo": 5, "unitAmount": 1}, {"upTo": 3, "unitAmount": 1}, {"upTo": None, "unitAmount": 1}]}]}, "prices.0.tiers"),
            ({"prices": [{"type": "recurring", "amount": 0, "tiersMode": "volume"}]}, "prices.0.tiersMode"),
            ({"prices": [{"type": "recurring", "amount": 1}, {"type": "one_off", "amount": 1}]}, "prices"),
            ({"prices": [{"type": "recurring", "amount": 1}, {"type": "recurring", "amount": 2}]}, "prices.1"),
            ({"features": [{"slug": "f", "type": "boolean", "allowance": 3}]}, "features.0.allowance"),
            ({"features": [{"slug": "f", "type": "metered"}]}, "features.0.allowance"),
            ({"features": [{"slug": "f", "type": "metered", "allowance": 1, "overageAllowed": True}]}, "features.0.overagePrice"),
            ({"features": [{"slug": "f", "type": "metered", "allowanceType": "unlimited", "allowance": 4}]}, "features.0.allowance"),
            ({"features": [{"slug": "f", "type": "seats", "allowance": 1, "resetInterval": "month"}]}, "features.0.resetInterval"),
            ({"features": [{"slug": "f", "type": "seats", "allowance": 1, "perEntity": True}]}, "features.0.perEntity"),
            ({"features": [{"slug": "f", "type": "metered", "allowance": 1}, {"slug": "f", "type": "metered", "allowance": 2}]}, "features.1.slug"),
            ({"features": [{"slug": "f", "type": "metered", "allowance": 1, "resetInterval": "billing_period"}], "prices": []}, "features.0.resetInterval"),
            ({"freeTrial": {"days": 0}}, "freeTrial.days"),
            ({"freeTrial": {"days": 7}, "prices": [{"type": "one_off", "amount": 5}]}, "freeTrial"),
            ({"autoEnable": True, "prices": [{"type": "recurring", "amount": 5}]}, "autoEnable"),
            ({"isAddOn": "yes"}, "isAddOn"),
        ],
    )
    def test_bad_input_is_a_422_naming_the_field_and_creates_nothing(self, sk_client, change, field):
        body = {"name": "X", "slug": "x", **change}
        response = create(sk_client, body)
        assert response.status_code == 422, response.content
        assert field in error_fields(response)
        assert not Product.objects.exists() and not Feature.objects.exists()


class TestVersioning:
    def test_a_change_without_subscribers_rewrites_the_current_version(self, sk_client):
        product = create(sk_client, PRO).json()
        response = sk_client.patch(f"{URL}/pro", {"prices": [{"type": "recurring", "amount": 3900}]}, format="json")
        assert response.status_code == 200
        body = response.json()
        assert body["version"] == 1 and body["versionId"] == product["versionId"]
        assert [p["amount"] for p in body["prices"]] == [3900]
        assert body["features"] == product["features"]  # untouched fields stay

    def test_a_change_with_subscribers_makes_a_new_version_and_subscribers_stay(self, sk_client):
        v1 = create(sk_client, PRO).json()
        subscription = SubscriptionFactory(product=Product.objects.get(slug="pro"))
        body = sk_client.patch(f"{URL}/pro", {"features": [{"slug": "api-calls", "type": "metered", "allowance": 20000}]}, format="json").json()
        assert body["version"] == 2 and body["versionId"] != v1["versionId"]
        assert [f["allowance"] for f in body["features"]] == [20000]
        assert [p["amount"] for p in body["prices"]] == [2900, 29000, 0]  # carried over
        subscription.refresh_from_db()
        assert subscription.version_id == v1["versionId"]
        old = ProductVersion.objects.get(pk=v1["versionId"])
        assert old.features.count() == 4 and old.prices.count() == 3  # the old version is untouched
        versions = sk_client.get(f"{URL}/pro/versions").json()["versions"]
        assert [(v["id"], v["version"], v["subscribers"]) for v in versions] == [
            (v1["versionId"], 1, 1), (body["versionId"], 2, 0)
        ]

    def test_resending_the_same_contents_makes_no_version(self, sk_client):
        create(sk_client, PRO)
        SubscriptionFactory(product=Product.objects.get(slug="pro"))
        body = sk_client.patch(f"{URL}/pro", {"prices": PRO["prices"], "features": PRO["features"], "freeTrial": PRO["freeTrial"]}, format="json").json()
        assert body["version"] == 1

    def test_a_product_level_change_makes_no_version(self, sk_client):
        create(sk_client, PRO)
        SubscriptionFactory(product=Product.objects.get(slug="pro"))
        body = sk_client.patch(f"{URL}/pro", {"name": "Pro Plus", "group": "main"}, format="json").json()
        assert (body["version"], body["name"], body["group"]) == (1, "Pro Plus", "main")

    def test_canceled_subscribers_do_not_pin_a_version(self, sk_client):
        create(sk_client, PRO)
        SubscriptionFactory(product=Product.objects.get(slug="pro"), status="canceled")
        body = sk_client.patch(f"{URL}/pro", {"prices": [{"type": "recurring", "amount": 1}]}, format="json").json()
        assert body["version"] == 1

    def test_a_bad_patch_is_422_and_changes_nothing(self, sk_client):
        before = create(sk_client, PRO).json()
        response = sk_client.patch(f"{URL}/pro", {"name": "New", "prices": [{"type": "recurring", "amount": -5}]}, format="json")
        assert response.status_code == 422
        assert sk_client.get(f"{URL}/pro").json() == before

    def test_an_unknown_product_is_404(self, sk_client):
        for response in (sk_client.get(f"{URL}/nope"), sk_client.patch(f"{URL}/pprod_nope", {}, format="json"), sk_client.get(f"{URL}/nope/versions")):
            assert response.status_code == 404
            assert response.json()["error"]["details"]["resource"] == "product"
