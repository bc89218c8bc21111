"""Reward programs and referral codes through the HTTP layer: create and list
programs and codes, redeem a code; credits on sign-up to both sides (seen in
``GET customers/{id}`` balances), rewards on the referee's first payment only
(and once, however many invoices follow), coupons put on a subscription or
handed out; self-referral, a second redemption, unknown codes and bad input
refused without changing anything; and, on PostgreSQL, concurrent redemptions
of one referee giving exactly one success.

After every test the books reconcile: credits are not money, so a reward posts
no ledger entry."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import AuditEvent, Balance, BalanceBucket, Invoice, OutboxEvent, Subscription
from ledger.models import Entry
from rewards.models import ReferralCode, ReferralRedemption, RewardGrant
from tests.billing.billing_helpers import API, add_card, assert_books_reconcile, cycle, make_product, subscribe

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def books_reconcile():
    yield
    assert_books_reconcile()


@pytest.fixture
def shop(sk_client):
    """A free plan that makes the ``credits`` feature, a paid plan, customers
    acme (the referrer), bob and carol."""
    make_product(sk_client, "starter", amount=0, group="", features=[{"slug": "credits", "type": "metered", "allowance": 10}])
    make_product(sk_client, "pro", amount=2000)
    make_product(sk_client, "beta", amount=0, group="", features=[{"slug": "beta", "type": "boolean"}])
    for customer_id, name in (("acme", "Acme Inc"), ("bob", "Bob"), ("carol", "Carol")):
        response = sk_client.post(f"{API}/customers", {"customerId": customer_id, "name": name}, format="json")
        assert response.status_code == 201, response.content
    return sk_client


def create_program(client, expect=201, **body):
    body = {"name": "Give 50", "trigger": "sign_up", "recipient": "both", "rewardType": "credits",
            "feature": "credits", "creditAmount": 50, **body}
    response = client.post(f"{API}/reward-programs", body, format="json")
    assert response.status_code == expect, response.content
    return response.json()


def create_code(client, program, customer="acme", expect=201, **body):
    response = client.post(f"{API}/referral-codes", {"customer": customer, "program": program, **body}, format="json")
    assert response.status_code == expect, response.content
    return response.json()


def redeem(client, code, customer="bob"):
    return client.post(f"{API}/referral-codes/redeem", {"code": code, "customer": customer}, format="json")


def create_coupon(client, code="FRIEND25", **body):
    body = {"code": code, "type": "percentage", "value": 25, "duration": "once", **body}
    response = client.post(f"{API}/coupons", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def credits_granted(client, customer) -> int:
    """The ``credits`` balance as ``GET customers/{id}`` shows it (0 when there is none)."""
    response = client.get(f"{API}/customers/{customer}")
    assert response.status_code == 200, response.content
    return response.json()["balances"].get("credits", {}).get("granted", 0)


def error(response) -> tuple[int, str, list[str]]:
    body = response.json()["error"]
    fields = [d["field"] for d in body["details"]] if isinstance(body["details"], list) else []
    return response.status_code, body["code"], fields


# --- programs ----------------------------------------------------------------------


class TestCreateProgram:
    def test_a_credits_program_is_created_with_its_terms_on_the_wire(self, shop):
        body = create_program(shop, name="Friends", recipient="referee", maxRedemptionsPerReferrer=5)
        assert body["id"].startswith("prwp_")
        assert {k: body[k] for k in ("name", "trigger", "recipient", "rewardType", "feature", "creditAmount", "coupon",
                                     "maxRedemptionsPerReferrer", "active")} == {
            "name": "Friends", "trigger": "sign_up", "recipient": "referee", "rewardType": "credits",
            "feature": "credits", "creditAmount": 50, "coupon": None, "maxRedemptionsPerReferrer": 5, "active": True}
        assert AuditEvent.objects.filter(action="reward_program.create", target_id=body["id"]).exists()

    def test_a_coupon_program_names_its_coupon_by_code_or_id(self, shop):
        coupon = create_coupon(shop)
        by_code = create_program(shop, rewardType="coupon", feature=None, creditAmount=None, coupon="FRIEND25")
        by_id = create_program(shop, rewardType="coupon", trigger="first_payment", coupon=coupon["id"],
                               **{"feature": None, "creditAmount": None})
        assert by_code["coupon"] == by_id["coupon"] == "FRIEND25"
        assert by_code["feature"] is None and by_code["creditAmount"] is None

    @pytest.mark.parametrize("change, field", [
        ({"trigger": "birthday"}, "trigger"),
        ({"recipient": "everyone"}, "recipient"),
        ({"rewardType": "cash"}, "rewardType"),
        ({"creditAmount": 0}, "creditAmount"),
        ({"creditAmount": "50"}, "creditAmount"),
        ({"creditAmount": None}, "creditAmount"),
        ({"feature": None}, "feature"),
        ({"feature": "beta"}, "feature"),  # boolean: nothing to credit
        ({"coupon": "FRIEND25"}, "coupon"),  # a credits reward has no coupon
        ({"name": ""}, "name"),
        ({"maxRedemptionsPerReferrer": 0}, "maxRedemptionsPerReferrer"),
        ({"active": "yes"}, "active"),
    ])
    def test_bad_input_is_422_naming_the_field_and_creates_nothing(self, shop, change, field):
        create_coupon(shop)
        body = {k: v for k, v in {"name": "P", "trigger": "sign_up", "recipient": "both", "rewardType": "credits",
                                  "feature": "credits", "creditAmount": 50, **change}.items() if v is not None}
        response = shop.post(f"{API}/reward-programs", body, format="json")
        assert error(response) == (422, "VALIDATION_ERROR", [field])
        assert shop.get(f"{API}/reward-programs").json()["data"] == []

    def test_a_coupon_program_needs_a_redeemable_coupon_and_no_credits(self, shop):
        create_coupon(shop)
        base = {"name": "P", "trigger": "sign_up", "recipient": "both", "rewardType": "coupon"}
        assert error(shop.post(f"{API}/reward-programs", base, format="json")) == (422, "VALIDATION_ERROR", ["coupon"])
        mixed = {**base, "coupon": "FRIEND25", "creditAmount": 5}
        assert error(shop.post(f"{API}/reward-programs", mixed, format="json")) == (422, "VALIDATION_ERROR", ["creditAmount"])
        assert shop.post(f"{API}/coupons/FRIEND25/archive").status_code == 200
        archived = {**base, "coupon": "FRIEND25"}
        assert error(shop.post(f"{API}/reward-programs", archived, format="json")) == (422, "VALIDATION_ERROR", ["coupon"])

    def test_an_unknown_feature_or_coupon_is_404(self, shop):
        response = shop.post(f"{API}/reward-programs", {"name": "P", "trigger": "sign_up", "recipient": "both",
                                                        "rewardType": "credits", "feature": "gold", "creditAmount": 5}, format="json")
        assert response.status_code == 404 and response.json()["error"]["details"]["resource"] == "feature"
        response = shop.post(f"{API}/reward-programs", {"name": "P", "trigger": "sign_up", "recipient": "both",
                                                        "rewardType": "coupon", "coupon": "NOPE"}, format="json")
        assert response.status_code == 404 and response.json()["error"]["details"]["resource"] == "coupon"

    def test_a_publishable_key_may_not_create_or_list_programs(self, shop, pk_client):
        assert pk_client.post(f"{API}/reward-programs", {"name": "P"}, format="json").status_code == 403
        assert pk_client.get(f"{API}/reward-programs").status_code == 403
        assert pk_client.post(f"{API}/referral-codes/redeem", {"code": "X", "customer": "bob"}, format="json").status_code == 403


class TestListPrograms:
    def test_programs_are_listed_newest_first_a_page_at_a_time(self, shop):
        ids = [create_program(shop, name=f"P{i}")["id"] for i in range(3)]
        first = shop.get(f"{API}/reward-programs?limit=2").json()
        assert [p["id"] for p in first["data"]] == ids[::-1][:2] and first["nextCursor"]
        second = shop.get(f"{API}/reward-programs?limit=2&cursor={first['nextCursor']}").json()
        assert [p["id"] for p in second["data"]] == ids[:1] and second["nextCursor"] is None

    def test_the_active_filter_and_bad_list_parameters(self, shop):
        on = create_program(shop)["id"]
        off = create_program(shop, active=False)["id"]
        assert [p["id"] for p in shop.get(f"{API}/reward-programs?active=true").json()["data"]] == [on]
        assert [p["id"] for p in shop.get(f"{API}/reward-programs?active=false").json()["data"]] == [off]
        assert error(shop.get(f"{API}/reward-programs?active=maybe")) == (422, "VALIDATION_ERROR", ["active"])
        assert error(shop.get(f"{API}/reward-programs?cursor=nope")) == (422, "VALIDATION_ERROR", ["cursor"])
        assert error(shop.get(f"{API}/reward-programs?limit=0")) == (422, "VALIDATION_ERROR", ["limit"])


# --- codes -------------------------------------------------------------------------


class TestReferralCodes:
    def test_a_made_up_code_is_readable_and_starts_with_the_customers_name(self, shop):
        program = create_program(shop)["id"]
        body = create_code(shop, program)
        assert re.fullmatch(r"ACMEIN-[23456789ABCDEFGHJKMNPQRSTVWXYZ]{5}", body["code"]), body["code"]
        assert body["id"].startswith("prc_")
        assert (body["customer"], body["program"], body["redemptions"]) == ("acme", program, 0)

    def test_a_given_code_is_kept_upper_case(self, shop):
        program = create_program(shop)["id"]
        assert create_code(shop, program, code="acme-friends")["code"] == "ACME-FRIENDS"

    def test_asking_again_returns_the_customers_code_for_the_program(self, shop):
        program = create_program(shop)["id"]
        first = create_code(shop, program)
        again = create_code(shop, program, expect=200)
        assert again == first
        assert create_code(shop, program, code=first["code"].lower(), expect=200)["id"] == first["id"]
        other = shop.post(f"{API}/referral-codes", {"customer": "acme", "program": program, "code": "OTHER1"}, format="json")
        assert error(other)[:2] == (409, "CONFLICT")
        assert ReferralCode.objects.count() == 1

    def test_a_code_taken_by_another_customer_is_409(self, shop):
        program = create_program(shop)["id"]
        create_code(shop, program, code="SHARED")
        response = shop.post(f"{API}/referral-codes", {"customer": "bob", "program": program, "code": "shared"}, format="json")
        assert error(response)[:2] == (409, "CONFLICT")
        assert ReferralCode.objects.count() == 1

    @pytest.mark.parametrize("body, field", [
        ({"code": "a b"}, "code"),
        ({"code": "ab"}, "code"),
        ({"code": "-LEADING"}, "code"),
        ({"code": "redeem"}, "code"),
        ({"code": 12345}, "code"),
        ({"customer": ""}, "customer"),
        ({"customer": 7}, "customer"),
        ({"program": None}, "program"),
    ])
    def test_bad_input_is_422_naming_the_field(self, shop, body, field):
        program = create_program(shop)["id"]
        response = shop.post(f"{API}/referral-codes", {"customer": "acme", "program": program, **body}, format="json")
        assert error(response) == (422, "VALIDATION_ERROR", [field])
        assert not ReferralCode.objects.exists()

    def test_an_unknown_customer_or_program_is_404(self, shop):
        program = create_program(shop)["id"]
        response = shop.post(f"{API}/referral-codes", {"customer": "nobody", "program": program}, format="json")
        assert response.status_code == 404 and response.json()["error"]["details"]["resource"] == "customer"
        response = shop.post(f"{API}/referral-codes", {"customer": "acme", "program": "prwp_nope"}, format="json")
        assert response.status_code == 404 and response.json()["error"]["details"]["resource"] == "reward_program"

    def test_codes_are_listed_by_customer_with_their_redemptions(self, shop):
        program = create_program(shop)["id"]
        acme = create_code(shop, program)
        bob = create_code(shop, program, customer="bob")
        assert redeem(shop, acme["code"], customer="carol").status_code == 201
        listed = shop.get(f"{API}/referral-codes?customer=acme").json()
        assert [(c["code"], c["redemptions"]) for c in listed["data"]] == [(acme["code"], 1)]
        everyone = shop.get(f"{API}/referral-codes?limit=1").json()
        assert [c["id"] for c in everyone["data"]] == [bob["id"]] and everyone["nextCursor"]
        rest = shop.get(f"{API}/referral-codes?limit=1&cursor={everyone['nextCursor']}").json()
        assert [c["id"] for c in rest["data"]] == [acme["id"]] and rest["nextCursor"] is None
        assert shop.get(f"{API}/referral-codes?customer=nobody").status_code == 404


# --- redeem: sign-up ------------------------------------------------------------------


class TestRedeemOnSignUp:
    def test_credits_go_to_both_sides_at_once(self, shop):
        program = create_program(shop, creditAmount=50)["id"]
        code = create_code(shop, program)["code"]
        entries = Entry.objects.count()
        response = redeem(shop, code.lower())  # codes match whatever the case
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["id"].startswith("prr_")
        assert (body["code"], body["referrer"], body["referee"], body["status"]) == (code, "acme", "bob", "rewarded")
        assert body["rewardedAt"]
        assert sorted(body["rewards"], key=lambda r: r["role"]) == [
            {"recipient": "bob", "role": "referee", "outcome": "credited", "feature": "credits", "amount": 50},
            {"recipient": "acme", "role": "referrer", "outcome": "credited", "feature": "credits", "amount": 50},
        ]
        assert credits_granted(shop, "acme") == credits_granted(shop, "bob") == 50
        assert credits_granted(shop, "carol") == 0
        # a grant that never expires, and no money moved
        buckets = BalanceBucket.objects.filter(balance__feature__slug="credits")
        assert [(b.kind, b.granted, b.expires_at) for b in buckets] == [("grant", 50, None)] * 2
        assert Entry.objects.count() == entries
        event = OutboxEvent.objects.get(type="referral.rewarded")
        assert (event.data["redemptionId"], event.data["referrer"], event.data["referee"]) == (body["id"], "acme", "bob")
        assert AuditEvent.objects.filter(action="referral.rewarded", target_id=body["id"]).exists()
        assert AuditEvent.objects.filter(action="referral_code.redeem", target_id=body["id"]).exists()

    def test_credits_add_to_what_the_plan_gives_and_can_be_spent(self, shop):
        program = create_program(shop, recipient="referee", creditAmount=40)["id"]
        code = create_code(shop, program)["code"]
        subscribe(shop, "starter", customer="bob")  # 10 credits from the plan
        assert redeem(shop, code).status_code == 201
        assert credits_granted(shop, "bob") == 50
        assert credits_granted(shop, "acme") == 0  # the program rewards the referee only
        check = shop.post(f"{API}/check", {"customer": "bob", "feature": "credits", "requiredBalance": 45,
                                           "sendEvent": True}, format="json").json()
        assert check["allowed"] is True and check["balance"] == 5

    def test_redeeming_ones_own_code_is_422_and_changes_nothing(self, shop):
        code = create_code(shop, create_program(shop)["id"])["code"]
        response = redeem(shop, code, customer="acme")
        assert error(response) == (422, "VALIDATION_ERROR", ["customer"])
        assert not ReferralRedemption.objects.exists() and not Balance.objects.filter(feature__slug="credits").exists()

    def test_a_referee_redeems_once_even_with_another_code(self, shop):
        program = create_program(shop)["id"]
        acme = create_code(shop, program)["code"]
        carol = create_code(shop, program, customer="carol")["code"]
        assert redeem(shop, acme).status_code == 201
        for again in (acme, carol):
            response = redeem(shop, again)
            assert error(response)[:2] == (409, "CONFLICT")
        assert ReferralRedemption.objects.count() == 1
        assert (credits_granted(shop, "bob"), credits_granted(shop, "acme"), credits_granted(shop, "carol")) == (50, 50, 0)

    def test_an_unknown_code_or_customer_is_404(self, shop):
        create_code(shop, create_program(shop)["id"], code="ACME-1")
        response = redeem(shop, "NOPE-1")
        assert response.status_code == 404 and response.json()["error"]["details"]["resource"] == "referral_code"
        response = redeem(shop, "ACME-1", customer="nobody")
        assert response.status_code == 404 and response.json()["error"]["details"]["resource"] == "customer"
        assert not ReferralRedemption.objects.exists()

    @pytest.mark.parametrize("body, field", [({"code": ""}, "code"), ({"code": None}, "code"), ({"code": 5}, "code"),
                                             ({"customer": ""}, "customer"), ({"customer": None}, "customer")])
    def test_bad_redeem_input_is_422(self, shop, body, field):
        create_code(shop, create_program(shop)["id"], code="ACME-1")
        response = shop.post(f"{API}/referral-codes/redeem", {"code": "ACME-1", "customer": "bob", **body}, format="json")
        assert error(response) == (422, "VALIDATION_ERROR", [field])
        assert not ReferralRedemption.objects.exists()

    def test_an_inactive_program_refuses_redemptions(self, shop):
        code = create_code(shop, create_program(shop, active=False)["id"])["code"]
        assert error(redeem(shop, code))[:2] == (409, "CONFLICT")
        assert not ReferralRedemption.objects.exists()

    def test_a_referrer_is_rewarded_at_most_the_programs_maximum(self, shop):
        code = create_code(shop, create_program(shop, maxRedemptionsPerReferrer=1, recipient="referrer")["id"])["code"]
        assert redeem(shop, code, customer="bob").status_code == 201
        response = redeem(shop, code, customer="carol")
        assert error(response)[:2] == (409, "CONFLICT")
        assert response.json()["error"]["details"]["maxRedemptionsPerReferrer"] == 1
        assert credits_granted(shop, "acme") == 50
        assert ReferralRedemption.objects.count() == 1

    def test_a_deleted_referrers_code_is_404(self, shop):
        code = create_code(shop, create_program(shop)["id"])["code"]
        assert shop.delete(f"{API}/customers/acme").status_code == 204
        assert redeem(shop, code).status_code == 404


# --- redeem: first payment --------------------------------------------------------------


class TestRewardOnFirstPayment:
    def test_the_reward_waits_for_the_referees_first_paid_invoice_and_comes_once(self, shop):
        code = create_code(shop, create_program(shop, trigger="first_payment", creditAmount=100)["id"])["code"]
        body = redeem(shop, code).json()
        assert (body["status"], body["rewards"], body["rewardedAt"]) == ("pending", [], None)
        assert credits_granted(shop, "acme") == credits_granted(shop, "bob") == 0
        subscribe(shop, "starter", customer="bob")  # a free plan: an invoice of 0 is no payment
        assert credits_granted(shop, "acme") == 0
        add_card(shop, customer="bob")
        paid = subscribe(shop, "pro", customer="bob")["invoice"]
        assert (paid["status"], paid["amountPaid"]) == ("paid", 2000)
        assert credits_granted(shop, "acme") == 100
        assert credits_granted(shop, "bob") == 110  # 10 from the free plan + 100
        redemption = ReferralRedemption.objects.get()
        assert redemption.status == "rewarded" and RewardGrant.objects.count() == 2
        event = OutboxEvent.objects.get(type="referral.rewarded")
        assert event.data["invoiceId"] == paid["id"]
        # the renewal is paid too: nothing more is given
        sub = Subscription.objects.get(customer__external_id="bob", product__slug="pro")
        cycle(sub.current_period_end + timedelta(seconds=1))
        assert Invoice.objects.filter(customer__external_id="bob", status="paid", amount_paid__gt=0).count() == 2
        assert credits_granted(shop, "acme") == 100
        assert RewardGrant.objects.count() == 2 and OutboxEvent.objects.filter(type="referral.rewarded").count() == 1

    def test_a_checkout_refunded_because_its_slot_was_taken_rewards_nothing(self, shop, client):
        code = create_code(shop, create_program(shop, trigger="first_payment", creditAmount=100)["id"])["code"]
        assert redeem(shop, code).status_code == 201
        make_product(shop, "basic", amount=0, features=[{"slug": "tokens", "type": "metered", "allowance": 5, "resetInterval": "month"}])
        checkout = subscribe(shop, "pro", customer="bob")  # no card: a checkout url
        subscribe(shop, "basic", customer="bob")  # the same group: takes the slot meanwhile
        page = client.post("/checkout/" + checkout["url"].split("/checkout/")[1], {"cardNumber": "4242424242424242"})
        assert page.status_code == 409 and b"refunded" in page.content
        invoice = Invoice.objects.get(pk=checkout["invoice"]["id"])
        assert (invoice.amount_paid, invoice.amount_refunded) == (2000, 2000)
        # the payment did not stand, so the referral still waits for a real first payment
        assert ReferralRedemption.objects.get().status == "pending" and not RewardGrant.objects.exists()
        assert credits_granted(shop, "acme") == 0

    def test_a_customer_who_has_paid_before_cannot_redeem_a_first_payment_code(self, shop):
        code = create_code(shop, create_program(shop, trigger="first_payment")["id"])["code"]
        add_card(shop, customer="bob")
        subscribe(shop, "pro", customer="bob")
        assert error(redeem(shop, code)) == (422, "VALIDATION_ERROR", ["customer"])
        assert not ReferralRedemption.objects.exists() and credits_granted(shop, "acme") == 0

    def test_a_payment_by_someone_else_rewards_nothing(self, shop):
        code = create_code(shop, create_program(shop, trigger="first_payment")["id"])["code"]
        assert redeem(shop, code).status_code == 201
        add_card(shop, customer="carol")
        subscribe(shop, "pro", customer="carol")
        assert ReferralRedemption.objects.get().status == "pending"
        assert credits_granted(shop, "acme") == 0


# --- coupon rewards --------------------------------------------------------------------


class TestCouponRewards:
    def test_the_coupon_goes_on_the_referrers_subscription_and_to_the_referee_as_a_code(self, shop):
        create_coupon(shop, code="FRIEND25", value=25)
        program = create_program(shop, rewardType="coupon", coupon="FRIEND25", feature=None, creditAmount=None)
        program_id = program["id"]
        add_card(shop, customer="acme")
        subscribe(shop, "pro", customer="acme")  # acme pays 2000 a month, no coupon
        code = create_code(shop, program_id)["code"]
        body = redeem(shop, code).json()
        acme_sub = Subscription.objects.get(customer__external_id="acme")
        assert sorted(body["rewards"], key=lambda r: r["role"]) == [
            {"recipient": "bob", "role": "referee", "outcome": "coupon_issued", "coupon": "FRIEND25", "subscription": None},
            {"recipient": "acme", "role": "referrer", "outcome": "coupon_applied", "coupon": "FRIEND25",
             "subscription": acme_sub.pk},
        ]
        assert shop.get(f"{API}/coupons/FRIEND25").json()["timesRedeemed"] == 1
        # acme's next invoice: 2000 − 25 % = 1500; the one after is full price again (a "once" coupon)
        cycle(acme_sub.current_period_end + timedelta(seconds=1))
        acme_sub.refresh_from_db()
        cycle(acme_sub.current_period_end + timedelta(seconds=1))
        totals = list(Invoice.objects.filter(customer__external_id="acme").order_by("created_at", "id").values_list("total", flat=True))
        assert totals == [2000, 1500, 2000]
        # bob uses the code he was given at subscribe
        add_card(shop, customer="bob")
        assert subscribe(shop, "pro", customer="bob", coupon="FRIEND25")["invoice"]["total"] == 1500
        assert shop.get(f"{API}/coupons/FRIEND25").json()["timesRedeemed"] == 2

    def test_a_coupon_the_program_can_no_longer_give_refuses_a_sign_up_redeem(self, shop):
        create_coupon(shop, code="ONE", maxRedemptions=1)
        code = create_code(shop, create_program(shop, rewardType="coupon", coupon="ONE", feature=None, creditAmount=None,
                                                recipient="referrer")["id"])["code"]
        assert shop.post(f"{API}/coupons/ONE/archive").status_code == 200
        assert error(redeem(shop, code))[:2] == (409, "CONFLICT")
        assert not ReferralRedemption.objects.exists()

    def test_at_a_first_payment_an_unusable_coupon_is_recorded_and_the_payment_stands(self, shop):
        create_coupon(shop, code="ONE")
        code = create_code(shop, create_program(shop, rewardType="coupon", coupon="ONE", feature=None, creditAmount=None,
                                                recipient="referrer", trigger="first_payment")["id"])["code"]
        assert redeem(shop, code).status_code == 201
        assert shop.post(f"{API}/coupons/ONE/archive").status_code == 200
        add_card(shop, customer="bob")
        assert subscribe(shop, "pro", customer="bob")["invoice"]["status"] == "paid"
        grant = RewardGrant.objects.get()
        assert (grant.outcome, grant.reason) == ("not_given", "coupon is archived")
        assert ReferralRedemption.objects.get().status == "rewarded"


class TestRewardEvent:
    def test_a_webhook_endpoint_may_subscribe_to_referral_rewarded(self, shop):
        response = shop.post(f"{API}/webhooks", {"url": "https://example.com/hooks", "events": ["referral.rewarded"]}, format="json")
        assert response.status_code == 201, response.content
        assert response.json()["events"] == ["referral.rewarded"]
