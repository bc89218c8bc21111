"""The rewards pages of the staff console: each renders with its row, and none
can add, change or delete (programs and codes are made through the API, and a
given reward is history)."""

import pytest
from django.contrib.admin.utils import quote

from rewards.models import ReferralCode, ReferralRedemption, RewardGrant, RewardProgram
from tests.billing.billing_helpers import API, make_product

pytestmark = pytest.mark.django_db

MODELS = {"rewardprogram": RewardProgram, "referralcode": ReferralCode, "referralredemption": ReferralRedemption,
          "rewardgrant": RewardGrant}


@pytest.fixture
def rows(sk_client):
    make_product(sk_client, "starter", amount=0, group="", features=[{"slug": "credits", "type": "metered", "allowance": 10}])
    for customer in ("acme", "bob"):
        sk_client.post(f"{API}/customers", {"customerId": customer}, format="json")
    program = sk_client.post(f"{API}/reward-programs", {"name": "P", "trigger": "sign_up", "recipient": "referee",
                                                        "rewardType": "credits", "feature": "credits", "creditAmount": 5},
                             format="json").json()["id"]
    code = sk_client.post(f"{API}/referral-codes", {"customer": "acme", "program": program}, format="json").json()["code"]
    assert sk_client.post(f"{API}/referral-codes/redeem", {"code": code, "customer": "bob"}, format="json").status_code == 201
    return {name: model.objects.get() for name, model in MODELS.items()}


@pytest.mark.parametrize("model", MODELS)
def test_every_changelist_and_change_page_renders(admin_client, rows, model):
    response = admin_client.get(f"/admin/rewards/{model}/")
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [rows[model]]
    assert admin_client.get(f"/admin/rewards/{model}/{quote(rows[model].pk)}/change/").status_code == 200


@pytest.mark.parametrize("model", MODELS)
def test_nothing_is_added_changed_or_deleted_here(admin_client, rows, model):
    obj = rows[model]
    assert admin_client.get(f"/admin/rewards/{model}/add/").status_code == 403
    assert admin_client.post(f"/admin/rewards/{model}/{quote(obj.pk)}/delete/", {"post": "yes"}).status_code == 403
    assert MODELS[model].objects.filter(pk=obj.pk).exists()


def test_a_redemption_shows_what_it_gave(admin_client, rows):
    page = admin_client.get(f"/admin/rewards/referralredemption/{quote(rows['referralredemption'].pk)}/change/")
    assert "credited" in page.content.decode().lower()
