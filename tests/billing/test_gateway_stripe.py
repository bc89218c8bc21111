"""The Stripe gateway against a real localstripe 1.15.10 (no mock of the ``stripe``
library): through our HTTP API (save a card, subscribe, cancel with a refund, the
inbound webhook) and at the gateway level. After every test the books reconcile.

localstripe runs as a process on a free port, one per xdist worker, started with
``--from-scratch`` (tests/billing/localstripe_peer.py). What it does, and how these
tests use it:

- Customers, card PaymentMethods (made here from test card numbers, as Stripe.js
  would; ``pm_card_visa`` works too), attach, ``invoice_settings.default_payment_method``,
  SetupIntents, off-session PaymentIntents confirmed at once, Refunds on a
  PaymentIntent, ``GET /v1/events``, and signed webhook delivery to a registered url
  (``POST /_config/webhooks/<id>``, ``Stripe-Signature: t=…,v1=…``) all work.
- 4000 0000 0000 0002 is declined when attached, as at Stripe (attaching verifies the
  card): our API answers 422. A card declined at charge time is Stripe's "decline after
  attaching" card 4000 0000 0000 0341, which localstripe knows. localstripe gives no
  issuer ``decline_code``; the failure code is ``card_declined``.
- 3-D Secure, 4000 0027 6000 3184: localstripe answers the off-session PaymentIntent
  with status ``requires_action``; Stripe answers a 402 ``authentication_required``
  card error with the PaymentIntent in ``requires_payment_method``. The gateway maps
  both to requires_action; only the first can be exercised against localstripe (the
  second is checked on Stripe's documented payload shape at the end). The customer's
  authentication (Stripe.js in the browser) is localstripe's
  ``POST /v1/payment_intents/<id>/_authenticate`` with the client secret: it charges
  the card and emits ``payment_intent.succeeded``.
- A failed authentication emits no ``payment_intent.payment_failed`` at localstripe;
  that event is built here around localstripe's real PaymentIntent (whose
  ``last_payment_error`` the failed authentication set), as is Stripe's
  ``authentication_required`` failure event, which localstripe never sends.
- No idempotency keys, and no ``description`` on PaymentIntents: our front in
  localstripe_peer.py adds Stripe's idempotency rule and drops that field.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import re
import time
import urllib.parse

import pytest
from django.test import Client

from billing.errors import ValidationFailed
from billing.gateways import GatewayError, gateway_get
from billing.gateways.stripe import StripeGateway, payment_intent_result
from billing.models import CheckoutSession, Customer, GatewayEvent, Invoice, Payment, PaymentMethod, Subscription
from ledger.models import Entry
from tests.billing.billing_helpers import API, assert_books_reconcile, make_product, subscribe
from tests.billing.localstripe_peer import API_KEY, LocalStripe, free_port, running_localstripe

pytestmark = pytest.mark.django_db

WEBHOOK_SECRET = "whsec_test_billing_localstripe"
WEBHOOK = f"{API}/gateways/stripe/webhook"
SUCCESS, DECLINED_AT_CHARGE, DECLINED_AT_ATTACH, THREE_DS = (
    "4242424242424242", "4000000000000341", "4000000000000002", "4000002760003184")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="session")
def localstripe():
    yield from running_localstripe()


@pytest.fixture
def peer(localstripe, settings):
    """The Stripe gateway configured against localstripe (through our idempotency front)."""
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    return localstripe.use_as_gateway(settings)


@pytest.fixture
def direct(localstripe):
    """A client straight to localstripe: what Stripe.js or the dashboard would do (not logged by the front)."""
    return localstripe.direct_client()


@pytest.fixture
def gateway(peer) -> StripeGateway:
    return gateway_get("stripe")


@pytest.fixture(autouse=True)
def books_reconcile(db):
    yield
    assert_books_reconcile()


def card(direct, number: str) -> str:
    """A card PaymentMethod made from a test card number (Stripe.js's job)."""
    return direct.v1.payment_methods.create(
        {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}).id


def authenticate(direct, pi_id: str, *, success: bool = True) -> None:
    """The customer completes (or fails) 3-D Secure in the browser."""
    secret = direct.v1.payment_intents.retrieve(pi_id).client_secret
    direct.raw_request("post", f"/v1/payment_intents/{pi_id}/_authenticate", client_secret=secret,
                       success="true" if success else "false")


def raw_get(direct, path: str) -> dict:
    return json.loads(direct.raw_request("get", path).body)


def event_payload(direct, event_type: str, object_id: str) -> bytes:
    """localstripe's own event about ``object_id``, byte for byte."""
    for event in direct.v1.events.list({"type": event_type, "limit": 100}).auto_paging_iter():
        if event.data.object.id == object_id:
            return direct.raw_request("get", f"/v1/events/{event.id}").body.encode()
    raise AssertionError(f"localstripe has no {event_type} event for {object_id}")


def sign(payload: bytes, *, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """Stripe's signing scheme: t=<unix time>,v1=HMAC-SHA256(secret, "<t>.<payload>")."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def deliver(payload: bytes, signature: str | None = None, *, client: Client | None = None):
    """POST a webhook as Stripe does: no API key, no CSRF token, a signature header."""
    client = client or Client(enforce_csrf_checks=True)
    headers = {"HTTP_STRIPE_SIGNATURE": sign(payload) if signature is None else signature}
    return client.post(WEBHOOK, data=payload, content_type="application/json", **headers)


def customer_with_card(sk_client, direct, number: str, customer: str = "c1"):
    sk_client.post(f"{API}/customers", {"customerId": customer, "name": "Ada", "email": "ada@example.test"},
                   format="json")
    return attach(sk_client, card(direct, number), customer)


def attach(sk_client, payment_method: str, customer: str = "c1"):
    return sk_client.post(f"{API}/customers/{customer}/payment-methods", {"paymentMethod": payment_method},
                          format="json")


def subscribe_with(sk_client, direct, number: str, amount: int = 2000) -> dict:
    make_product(sk_client, "pro", amount=amount)
    assert customer_with_card(sk_client, direct, number).status_code == 200
    return subscribe(sk_client, "pro")


# --- through our HTTP API -----------------------------------------------------------


class TestSavingACard:
    def test_the_card_is_attached_to_a_stripe_customer_and_becomes_its_default(self, sk_client, peer, direct):
        response = customer_with_card(sk_client, direct, SUCCESS)
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["gateway"], body["brand"], body["last4"], body["isDefault"]) == ("stripe", "visa", "4242", True)
        ref = Customer.objects.get(external_id="c1").gateway_ref
        assert ref.startswith("cus_")
        at_stripe = raw_get(direct, f"/v1/customers/{ref}")
        assert (at_stripe["email"], at_stripe["name"]) == ("ada@example.test", "Ada")
        assert at_stripe["invoice_settings"]["default_payment_method"] == body["gatewayId"]
        assert raw_get(direct, f"/v1/payment_methods/{body['gatewayId']}")["customer"] == ref

    def test_a_second_card_takes_over_as_default_on_the_same_stripe_customer(self, sk_client, peer, direct):
        first = customer_with_card(sk_client, direct, SUCCESS).json()
        ref = Customer.objects.get(external_id="c1").gateway_ref
        second = customer_with_card(sk_client, direct, THREE_DS).json()
        assert Customer.objects.get(external_id="c1").gateway_ref == ref
        default = raw_get(direct, f"/v1/customers/{ref}")["invoice_settings"]["default_payment_method"]
        assert default == second["gatewayId"]
        assert PaymentMethod.objects.get(is_default=True).gateway_id == second["gatewayId"] != first["gatewayId"]
        assert [path for path, _ in peer.front.posts].count("/v1/customers") == 1

    def test_stripes_test_payment_method_pm_card_visa_is_saved_as_a_card_of_its_own(self, sk_client, peer):
        sk_client.post(f"{API}/customers", {"customerId": "c1"}, format="json")
        response = attach(sk_client, "pm_card_visa")
        assert response.status_code == 200, response.content
        assert response.json()["gatewayId"].startswith("pm_") and response.json()["gatewayId"] != "pm_card_visa"
        assert response.json()["last4"] == "4242"

    def test_a_card_declined_when_attached_is_a_422_and_nothing_is_saved(self, sk_client, peer, direct):
        response = customer_with_card(sk_client, direct, DECLINED_AT_ATTACH)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and error["details"][0]["field"] == "paymentMethod"
        assert "declined" in error["message"]
        assert not PaymentMethod.objects.exists()

    def test_an_unknown_payment_method_is_a_422(self, sk_client, peer):
        sk_client.post(f"{API}/customers", {"customerId": "c1"}, format="json")
        response = attach(sk_client, "pm_nosuchcard")
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "paymentMethod"


class TestSubscribeThroughStripe:
    def test_a_saved_card_is_charged_once_and_the_plan_activates(self, sk_client, peer, direct):
        body = subscribe_with(sk_client, direct, SUCCESS)
        assert body["subscription"]["status"] == "active" and body["requiredAction"] is None
        assert (body["invoice"]["status"], body["invoice"]["amountPaid"]) == ("paid", 2000)
        payment = Payment.objects.get()
        assert payment.idempotency_key == f"{body['invoice']['id']}:charge:1"
        pi = raw_get(direct, f"/v1/payment_intents/{payment.gateway_ref}")
        assert (pi["status"], pi["amount"], pi["currency"]) == ("succeeded", 2000, "usd")
        assert pi["customer"] == Customer.objects.get().gateway_ref
        assert pi["payment_method"] == PaymentMethod.objects.get().gateway_id
        assert pi["metadata"]["billing_key"] == payment.idempotency_key
        assert ("/v1/payment_intents", payment.idempotency_key) in peer.front.posts

    def test_a_declined_card_answers_payment_failed_and_activates_nothing(self, sk_client, peer, direct):
        body = subscribe_with(sk_client, direct, DECLINED_AT_CHARGE)
        assert body["requiredAction"]["code"] == "payment_failed"
        assert "card_declined" in body["requiredAction"]["reason"] and "/checkout/" in body["url"]
        assert body["subscription"]["status"] == "incomplete" and body["invoice"]["status"] == "open"
        payment = Payment.objects.get()
        assert (payment.status, payment.failure_code) == ("failed", "card_declined")
        assert raw_get(direct, f"/v1/payment_intents/{payment.gateway_ref}")["status"] == "requires_payment_method"
        assert not Subscription.objects.filter(status="active").exists()

    def test_a_3ds_card_waits_and_stripes_succeeded_event_activates_it_once(self, sk_client, peer, direct):
        body = subscribe_with(sk_client, direct, THREE_DS)
        assert body["requiredAction"]["code"] == "3ds_required" and body["subscription"]["status"] == "incomplete"
        payment = Payment.objects.get()
        assert payment.status == "requires_action"
        assert raw_get(direct, f"/v1/payment_intents/{payment.gateway_ref}")["status"] == "requires_action"
        assert CheckoutSession.objects.get().payment_id == payment.pk

        authenticate(direct, payment.gateway_ref)
        payload = event_payload(direct, "payment_intent.succeeded", payment.gateway_ref)
        first = deliver(payload)
        assert first.status_code == 200, first.content
        assert first.json() == {"received": True, "duplicate": False}
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "active"
        assert Invoice.objects.get().status == "paid"
        assert Payment.objects.get().status == "succeeded"
        assert CheckoutSession.objects.get().status == "complete"
        entries = Entry.objects.count()

        again = deliver(payload)  # Stripe retries a delivery it thinks failed
        assert again.status_code == 200 and again.json() == {"received": True, "duplicate": True}
        assert GatewayEvent.objects.count() == 1 and Entry.objects.count() == entries
        assert Payment.objects.count() == 1

    def test_a_3ds_payment_completed_after_the_slot_was_taken_is_refunded_through_stripe(self, sk_client, peer,
                                                                                        direct):
        body = subscribe_with(sk_client, direct, THREE_DS)
        make_product(sk_client, "free", amount=0,
                     features=[{"slug": "tokens", "type": "metered", "allowance": 10, "resetInterval": "month"}])
        subscribe(sk_client, "free")  # the same group: takes the slot while the payment waits
        ref = Payment.objects.get().gateway_ref
        authenticate(direct, ref)
        assert deliver(event_payload(direct, "payment_intent.succeeded", ref)).status_code == 200
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "expired"
        invoice = Invoice.objects.get(pk=body["invoice"]["id"])
        assert (invoice.status, invoice.amount_paid, invoice.amount_refunded) == ("paid", 2000, 2000)
        refund = Payment.objects.get(kind="refund")
        at_stripe = raw_get(direct, f"/v1/refunds/{refund.gateway_ref}")
        assert (at_stripe["payment_intent"], at_stripe["amount"]) == (ref, 2000)

    def test_a_3ds_payment_completed_after_its_checkout_expired_is_refunded_not_lost(self, sk_client, peer, direct):
        body = subscribe_with(sk_client, direct, THREE_DS)
        from billing.services.renewals import checkouts_expire_due

        assert checkouts_expire_due(now=CheckoutSession.objects.get().expires_at) == 1
        invoice = Invoice.objects.get(pk=body["invoice"]["id"])
        assert invoice.status == "void"
        ref = Payment.objects.get().gateway_ref
        authenticate(direct, ref)  # the customer finishes 3-D Secure anyway: Stripe takes the money
        assert deliver(event_payload(direct, "payment_intent.succeeded", ref)).status_code == 200
        charge, refund = Payment.objects.get(kind="charge"), Payment.objects.get(kind="refund")
        assert (charge.status, charge.unapplied, refund.status, refund.unapplied) == ("succeeded", True, "succeeded", True)
        at_stripe = raw_get(direct, f"/v1/refunds/{refund.gateway_ref}")
        assert (at_stripe["payment_intent"], at_stripe["amount"]) == (ref, 2000)
        assert ("/v1/refunds", refund.idempotency_key) in peer.front.posts
        invoice.refresh_from_db()
        assert (invoice.status, invoice.amount_paid, invoice.amount_refunded) == ("void", 0, 0)
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "expired"

    def test_the_checkout_confirm_step_follows_what_stripe_says(self, sk_client, client, peer, direct):
        body = subscribe_with(sk_client, direct, THREE_DS)
        path = "/checkout/" + body["url"].split("/checkout/")[1]
        early = client.post(path + "3ds/", {"outcome": "complete"})
        assert early.status_code == 409  # the customer has not authenticated at Stripe yet
        assert Payment.objects.get().status == "requires_action"
        authenticate(direct, Payment.objects.get().gateway_ref)
        done = client.post(path + "3ds/", {"outcome": "complete"})
        assert done.status_code == 200, done.content
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "active"
        # Stripe's event arrives afterwards and changes nothing.
        ref = Payment.objects.get().gateway_ref
        assert deliver(event_payload(direct, "payment_intent.succeeded", ref)).status_code == 200
        assert Payment.objects.count() == 1 and Invoice.objects.get().amount_paid == 2000

    def test_a_failed_authentication_reported_by_stripe_fails_the_payment(self, sk_client, peer, direct):
        body = subscribe_with(sk_client, direct, THREE_DS)
        ref = Payment.objects.get().gateway_ref
        authenticate(direct, ref, success=False)
        pi = raw_get(direct, f"/v1/payment_intents/{ref}")
        assert pi["last_payment_error"]["code"] == "payment_intent_authentication_failure"
        response = deliver(json.dumps({"id": f"evt_failed_{ref}", "object": "event", "created": int(time.time()),
                                       "type": "payment_intent.payment_failed", "data": {"object": pi}}).encode())
        assert response.status_code == 200, response.content
        payment = Payment.objects.get()
        assert (payment.status, payment.failure_code) == ("failed", "payment_intent_authentication_failure")
        assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "incomplete"
        assert Invoice.objects.get().status == "open"
        session = CheckoutSession.objects.get()
        assert session.status == "open" and session.payment_id is None  # the customer can pay with another card

    def test_stripes_authentication_required_failure_is_not_final(self, sk_client, peer, direct):
        subscribe_with(sk_client, direct, THREE_DS)
        ref = Payment.objects.get().gateway_ref
        pi = {**raw_get(direct, f"/v1/payment_intents/{ref}"), "status": "requires_payment_method",
              "last_payment_error": {"code": "authentication_required", "decline_code": "authentication_required"}}
        response = deliver(json.dumps({"id": f"evt_authreq_{ref}", "object": "event", "created": int(time.time()),
                                       "type": "payment_intent.payment_failed", "data": {"object": pi}}).encode())
        assert response.status_code == 200
        assert Payment.objects.get().status == "requires_action"
        assert GatewayEvent.objects.get().type == "payment_intent.payment_failed"

    def test_an_event_about_a_charge_that_never_waited_changes_nothing(self, sk_client, peer, direct):
        subscribe_with(sk_client, direct, SUCCESS)
        entries = Entry.objects.count()
        ref = Payment.objects.get().gateway_ref
        assert deliver(event_payload(direct, "payment_intent.succeeded", ref)).json()["duplicate"] is False
        assert Payment.objects.count() == 1 and Entry.objects.count() == entries

    def test_cancel_immediately_refunds_through_stripe(self, sk_client, peer, direct):
        subscribe_with(sk_client, direct, SUCCESS, amount=3000)
        response = sk_client.post(f"{API}/cancel", {"customer": "c1", "immediately": True}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["subscription"]["status"] == "canceled"
        charge, refund = Payment.objects.get(kind="charge"), Payment.objects.get(kind="refund")
        assert 2999 <= refund.amount <= 3000 and refund.gateway_ref.startswith("re_")
        at_stripe = raw_get(direct, f"/v1/refunds/{refund.gateway_ref}")
        assert (at_stripe["payment_intent"], at_stripe["amount"]) == (charge.gateway_ref, refund.amount)
        assert at_stripe["metadata"]["billing_key"] == refund.idempotency_key
        assert ("/v1/refunds", refund.idempotency_key) in peer.front.posts
        assert Invoice.objects.get().amount_refunded == refund.amount


class TestStripeWebhookSignature:
    @pytest.fixture
    def payload(self, peer, direct) -> bytes:
        """A real event of localstripe's (a customer it made), byte for byte."""
        customer = direct.v1.customers.create({"email": "hook@example.test"})
        return event_payload(direct, "customer.created", customer.id)

    def test_a_good_signature_is_processed_once_and_a_replay_is_ignored(self, payload):
        first = deliver(payload)
        assert first.status_code == 200, first.content
        assert first.json() == {"received": True, "duplicate": False}
        stored = GatewayEvent.objects.get()
        assert (stored.gateway, stored.type) == ("stripe", "customer.created")
        assert stored.event_id == json.loads(payload)["id"] and stored.payload == json.loads(payload)
        replay = deliver(payload)
        assert replay.status_code == 200 and replay.json()["duplicate"] is True
        assert GatewayEvent.objects.count() == 1

    @pytest.mark.parametrize("how", ["other secret", "tampered payload", "no header", "stale timestamp",
                                     "not a header"])
    def test_a_bad_signature_is_a_400_with_our_error_body_and_stores_nothing(self, payload, how):
        body, signature = payload, {
            "other secret": sign(payload, secret="whsec_someone_else"),
            "tampered payload": sign(payload),
            "no header": "",
            "stale timestamp": sign(payload, at=int(time.time()) - 3600),  # Stripe's tolerance is 300 s
            "not a header": "garbage",
        }[how]
        if how == "tampered payload":
            body = payload.replace(b"hook@", b"evil@")
        response = deliver(body, signature)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "INVALID_SIGNATURE" and error["message"]
        assert not GatewayEvent.objects.exists()

    def test_without_a_webhook_secret_nothing_is_accepted(self, payload, settings):
        settings.STRIPE_WEBHOOK_SECRET = ""
        response = deliver(payload)
        assert response.status_code == 503 and response.json()["error"]["code"] == "NOT_CONFIGURED"
        assert not GatewayEvent.objects.exists()

    def test_only_post_is_allowed(self, peer):
        response = Client().get(WEBHOOK)
        assert response.status_code == 405 and response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


@pytest.mark.django_db(transaction=True)
class TestLocalstripeDeliversItsWebhooks:
    """localstripe itself posts the signed event to our live server (its signature scheme is Stripe's)."""

    def test_the_succeeded_event_localstripe_sends_activates_a_3ds_subscription(self, sk_client, peer, direct,
                                                                                   live_server, settings):
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost", "127.0.0.1"]
        time.sleep(1.5)  # localstripe sends each event 1 s after it; let earlier tests' events go first
        url = live_server.url.replace("localhost", "127.0.0.1") + WEBHOOK
        register = _register_webhook(peer, url=url, events=["payment_intent.succeeded"])
        assert register == 200
        try:
            body = subscribe_with(sk_client, direct, THREE_DS)
            assert body["requiredAction"]["code"] == "3ds_required"
            delivered = peer.log().count('webhook "payment_intent.succeeded" successfully delivered')
            authenticate(direct, Payment.objects.get().gateway_ref)
            deadline = time.monotonic() + 15
            while peer.log().count('webhook "payment_intent.succeeded" successfully delivered') == delivered:
                assert 'webhook "payment_intent.succeeded" failed' not in peer.log(), peer.log()[-2000:]
                assert time.monotonic() < deadline, "localstripe did not deliver the event:\n" + peer.log()[-2000:]
                time.sleep(0.1)
            assert Subscription.objects.get(pk=body["subscription"]["id"]).status == "active"
            assert GatewayEvent.objects.get().type == "payment_intent.succeeded"
        finally:
            _register_webhook(peer, url="http://127.0.0.1:9/", events=["none"])


def _register_webhook(peer: LocalStripe, *, url: str, events: list[str]) -> int:
    body = urllib.parse.urlencode([("url", url), ("secret", WEBHOOK_SECRET), *[("events[]", e) for e in events]])
    conn = http.client.HTTPConnection("127.0.0.1", peer.port, timeout=10)
    try:
        conn.request("POST", "/_config/webhooks/billing", body=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        return conn.getresponse().status
    finally:
        conn.close()


# --- the gateway itself -------------------------------------------------------------


class TestStripeGateway:
    @pytest.fixture
    def customer_ref(self, gateway):
        return gateway.customer_ensure(customer_id=9001, email="g@example.test", name="Gateway")

    def saved(self, gateway, direct, customer_ref, number):
        return gateway.payment_method_attach(customer_ref=customer_ref, payment_method=card(direct, number),
                                             idempotency_key=f"9001:pm:{number}").gateway_id

    def charge(self, gateway, customer_ref, pm, key="pinv_test:charge:1", amount=1500):
        return gateway.charge(customer_ref=customer_ref, payment_method=pm, amount=amount, currency="USD",
                              idempotency_key=key, description="Invoice INV-000001")

    def test_a_stripe_customer_is_made_once_per_customer_of_ours(self, gateway, customer_ref, direct):
        assert gateway.customer_ensure(customer_id=9001, email="g@example.test", name="Gateway") == customer_ref
        assert gateway.customer_ensure(customer_id=9002, email="", name="") != customer_ref
        assert raw_get(direct, f"/v1/customers/{customer_ref}")["metadata"] == {"billing_customer_id": "9001"}

    def test_a_charge_that_succeeds(self, gateway, customer_ref, direct):
        result = self.charge(gateway, customer_ref, self.saved(gateway, direct, customer_ref, SUCCESS))
        assert result.status == "succeeded" and result.ref.startswith("pi_") and result.failure_code == ""
        assert raw_get(direct, f"/v1/payment_intents/{result.ref}")["amount"] == 1500

    def test_a_declined_charge_is_a_result_with_its_code_not_an_error(self, gateway, customer_ref, direct):
        result = self.charge(gateway, customer_ref, self.saved(gateway, direct, customer_ref, DECLINED_AT_CHARGE))
        assert (result.status, result.failure_code) == ("failed", "card_declined")
        assert result.ref.startswith("pi_")  # found through the declined charge: localstripe's error omits it

    def test_a_3ds_card_requires_action_until_the_customer_authenticates(self, gateway, customer_ref, direct):
        result = self.charge(gateway, customer_ref, self.saved(gateway, direct, customer_ref, THREE_DS))
        assert result.status == "requires_action" and result.ref.startswith("pi_")
        assert gateway.confirm(ref=result.ref, succeed=True).status == "requires_action"
        authenticate(direct, result.ref)
        assert gateway.confirm(ref=result.ref, succeed=True).status == "succeeded"
        # Money that moved is never reported as failed, whatever the page said.
        assert gateway.confirm(ref=result.ref, succeed=False).status == "succeeded"

    def test_confirm_of_a_payment_the_customer_gave_up_cancels_it(self, gateway, customer_ref, direct):
        result = self.charge(gateway, customer_ref, self.saved(gateway, direct, customer_ref, THREE_DS))
        confirmed = gateway.confirm(ref=result.ref, succeed=False)
        assert (confirmed.status, confirmed.failure_code) == ("failed", "authentication_failed")
        assert raw_get(direct, f"/v1/payment_intents/{result.ref}")["status"] == "canceled"

    def test_the_same_charge_key_twice_gives_the_same_payment_intent(self, gateway, customer_ref, direct, peer):
        pm = self.saved(gateway, direct, customer_ref, SUCCESS)
        first = self.charge(gateway, customer_ref, pm, key="pinv_same:charge:1")
        again = self.charge(gateway, customer_ref, pm, key="pinv_same:charge:1")
        assert again.ref == first.ref and again.status == "succeeded"
        other = self.charge(gateway, customer_ref, pm, key="pinv_same:charge:2")
        assert other.ref != first.ref
        intents = direct.v1.payment_intents.list({"limit": 100}).auto_paging_iter()
        keys = [pi.metadata.to_dict().get("billing_key", "") for pi in intents if pi.customer == customer_ref]
        assert sorted(keys) == ["pinv_same:charge:1", "pinv_same:charge:2"]

    def test_a_key_reused_for_another_amount_is_a_gateway_error(self, gateway, customer_ref, direct):
        pm = self.saved(gateway, direct, customer_ref, SUCCESS)
        self.charge(gateway, customer_ref, pm, key="pinv_reuse:charge:1")
        with pytest.raises(GatewayError) as raised:
            self.charge(gateway, customer_ref, pm, key="pinv_reuse:charge:1", amount=999)
        assert raised.value.status == 502 and raised.value.details["error"] == "IdempotencyError"

    def test_a_refund_is_made_once_per_key(self, gateway, customer_ref, direct):
        charged = self.charge(gateway, customer_ref, self.saved(gateway, direct, customer_ref, SUCCESS))
        first = gateway.refund(ref=charged.ref, amount=500, idempotency_key="pinv_test:refund:1")
        assert first.startswith("re_")
        assert gateway.refund(ref=charged.ref, amount=500, idempotency_key="pinv_test:refund:1") == first
        second = gateway.refund(ref=charged.ref, amount=300, idempotency_key="pinv_test:refund:2")
        refunds = raw_get(direct, f"/v1/refunds?payment_intent={charged.ref}")["data"]
        assert sorted((r["id"], r["amount"]) for r in refunds) == sorted([(first, 500), (second, 300)])

    def test_a_refund_resent_after_stripe_forgot_its_key_is_not_made_twice(self, gateway, customer_ref, direct, peer):
        # A pending refund of ours can be sent again more than 24 h later, when Stripe no longer
        # knows the idempotency key (the front's reset forgets it): the refund made under the key
        # (its metadata) is found and answered.
        charged = self.charge(gateway, customer_ref, self.saved(gateway, direct, customer_ref, SUCCESS))
        first = gateway.refund(ref=charged.ref, amount=500, idempotency_key="pinv_late:refund:1")
        peer.front.reset()
        assert gateway.refund(ref=charged.ref, amount=500, idempotency_key="pinv_late:refund:1") == first
        refunds = raw_get(direct, f"/v1/refunds?payment_intent={charged.ref}")["data"]
        assert [(r["id"], r["amount"]) for r in refunds] == [(first, 500)]

    def test_a_setup_intent_saves_a_card_off_session(self, gateway, customer_ref, direct):
        secret = gateway.setup_intent_create(customer_ref=customer_ref, idempotency_key="pcs_test:setup")
        intent_id = secret.split("_secret_")[0]
        intent = raw_get(direct, f"/v1/setup_intents/{intent_id}")
        assert (intent["customer"], intent["usage"], intent["client_secret"]) == (customer_ref, "off_session", secret)
        assert gateway.setup_intent_create(customer_ref=customer_ref, idempotency_key="pcs_test:setup") == secret
        # Stripe.js confirms it with the card the customer typed.
        confirmed = direct.v1.setup_intents.confirm(intent_id, {"payment_method": card(direct, SUCCESS)})
        assert confirmed.status == "succeeded"

    def test_every_mutating_call_carries_an_idempotency_key_of_ours(self, gateway, customer_ref, direct, peer):
        pm = self.saved(gateway, direct, customer_ref, SUCCESS)
        charged = self.charge(gateway, customer_ref, pm)
        gateway.refund(ref=charged.ref, amount=100, idempotency_key="pinv_test:refund:1")
        waiting = self.charge(gateway, customer_ref, self.saved(gateway, direct, customer_ref, THREE_DS),
                              key="pinv_test:charge:2")
        gateway.confirm(ref=waiting.ref, succeed=False)
        gateway.setup_intent_create(customer_ref=customer_ref, idempotency_key="pcs_test:setup")
        keys = [key for _, key in peer.front.posts]
        assert len(keys) == 10 and not [k for k in keys if UUID4.match(k)]  # stripe-python's own keys are uuid4
        assert set(keys) == {"cus:9001", f"9001:pm:{SUCCESS}:attach", f"9001:pm:{SUCCESS}:default",
                             "pinv_test:charge:1", "pinv_test:refund:1", f"9001:pm:{THREE_DS}:attach",
                             f"9001:pm:{THREE_DS}:default", "pinv_test:charge:2", f"{waiting.ref}:cancel",
                             "pcs_test:setup"}

    def test_api_and_network_errors_are_gateway_errors(self, gateway, customer_ref, direct, peer):
        declined = self.charge(gateway, customer_ref, self.saved(gateway, direct, customer_ref, DECLINED_AT_CHARGE))
        with pytest.raises(GatewayError) as refused:  # Stripe refuses to refund a failed payment
            gateway.refund(ref=declined.ref, amount=100, idempotency_key="pinv_test:refund:9")
        assert refused.value.status == 502 and refused.value.code == "GATEWAY_ERROR"
        unreachable = StripeGateway(api_key=API_KEY, api_base=f"http://127.0.0.1:{free_port()}")
        with pytest.raises(GatewayError) as down:
            unreachable.customer_ensure(customer_id=1, email="", name="")
        assert down.value.details["error"] == "APIConnectionError"
        with pytest.raises(GatewayError):
            StripeGateway(api_key="", api_base=peer.url).customer_ensure(customer_id=1, email="", name="")

    def test_an_unknown_payment_method_is_a_validation_error(self, gateway, customer_ref):
        with pytest.raises(ValidationFailed):
            gateway.payment_method_attach(customer_ref=customer_ref, payment_method="pm_nosuchcard")


class TestStripeAnswersLocalstripeNeverGives:
    """Stripe's documented shapes for an off-session charge that needs 3-D Secure
    (localstripe answers requires_action instead, see the module docstring)."""

    AUTH_REQUIRED = {"id": "pi_auth", "object": "payment_intent", "status": "requires_payment_method",
                     "last_payment_error": {"code": "authentication_required",
                                            "decline_code": "authentication_required"}}

    def test_a_payment_intent_waiting_for_on_session_authentication_requires_action(self):
        assert payment_intent_result(self.AUTH_REQUIRED).status == "requires_action"
        declined = {**self.AUTH_REQUIRED, "last_payment_error": {"code": "card_declined",
                                                                 "decline_code": "insufficient_funds"}}
        assert (payment_intent_result(declined).status, payment_intent_result(declined).failure_code) == (
            "failed", "insufficient_funds")

    def test_its_payment_failed_event_is_not_a_final_outcome(self):
        event = {"id": "evt_1", "type": "payment_intent.payment_failed", "data": {"object": self.AUTH_REQUIRED}}
        assert StripeGateway.event_charge_outcome(event) is None
        succeeded = {"id": "evt_2", "type": "payment_intent.succeeded",
                     "data": {"object": {**self.AUTH_REQUIRED, "status": "succeeded", "last_payment_error": None}}}
        assert StripeGateway.event_charge_outcome(succeeded).status == "succeeded"
