"""The portal's card page with the Stripe gateway, over HTTP against a real localstripe
(tests/billing/localstripe_peer.py; no mock of the ``stripe`` library).

GET makes a SetupIntent for the customer and renders Stripe Elements from STRIPE_JS_URL
with its client secret; what Stripe.js then does in the browser (confirm the SetupIntent
with the card typed) is done here with the stripe library straight against localstripe,
and the page's form is posted with the ``pm_…`` it saved, as the page's script does.
tests/e2e/test_portal_stripe_browser.py runs the same page in Chromium.

Also: bad ``paymentMethod`` values are a 422 that changes nothing (not even a call to
Stripe), a gateway error is a 4xx on the page, and the Content-Security-Policy of this
page allows Stripe.js's and Stripe's API origins while every other page stays strict."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from billing.models import Customer, PaymentMethod
from portal import security
from portal.tokens import portal_token_make
from tests.billing.billing_helpers import API
from tests.billing.localstripe_peer import PUBLISHABLE_KEY, free_port, running_localstripe

pytestmark = pytest.mark.django_db

SUCCESS, DECLINED_AT_ATTACH = "4242424242424242", "4000000000000002"


@pytest.fixture(scope="module")
def localstripe():
    yield from running_localstripe()


@pytest.fixture
def peer(localstripe, settings):
    """The Stripe gateway against localstripe (through the idempotency front), and Stripe.js
    served by it: the fake Stripe.js calls the API at its own origin, so both are the front's."""
    return localstripe.use_as_gateway(settings, stripe_js=True)


@pytest.fixture
def direct(localstripe):
    """Straight to localstripe: what Stripe.js does in the customer's browser."""
    return localstripe.direct_client()


@pytest.fixture
def c1(peer, sk_client):
    sk_client.post(f"{API}/customers", {"customerId": "c1", "name": "Ada", "email": "ada@example.test"}, format="json")
    return Customer.objects.get(external_id="c1")


_links: dict[int, str] = {}


def link(customer: Customer) -> str:
    """The customer's portal path, one per test (a token made a second later differs)."""
    if customer.pk not in _links:
        _links[customer.pk] = f"/portal/{portal_token_make(customer_pk=customer.pk)}/"
    return _links[customer.pk]


@pytest.fixture(autouse=True)
def fresh_links():
    _links.clear()


def html(response) -> str:
    return response.content.decode()


def client_secret(page) -> str:
    return re.search(r'data-client-secret="(seti_\w+?_secret_\w+)"', html(page)).group(1)


def csp(response) -> dict[str, str]:
    """The policy as {directive: sources}, with this response's nonce written as NONCE."""
    policy = re.sub(r"'nonce-[A-Za-z0-9_\-]+'", "'nonce-NONCE'", response["Content-Security-Policy"])
    return dict(d.strip().split(" ", 1) for d in policy.split(";"))


def card(direct, number: str) -> str:
    """A card PaymentMethod made from a test card number (Stripe.js's job)."""
    return direct.v1.payment_methods.create(
        {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}).id


def confirm_in_browser(direct, secret: str, number: str) -> str:
    """Stripe.js's confirmCardSetup: the card typed, sent to Stripe with the SetupIntent."""
    intent_id = secret.split("_secret_")[0]
    confirmed = direct.v1.setup_intents.confirm(intent_id, {"payment_method": card(direct, number)})
    assert confirmed.status == "succeeded"
    return confirmed.payment_method


def stripe_default_card(direct, customer: Customer) -> str | None:
    customer.refresh_from_db()
    return direct.v1.customers.retrieve(customer.gateway_ref).invoice_settings.default_payment_method


def attach_calls(peer) -> list[str]:
    return [path for path, _ in peer.front.posts if path.startswith("/v1/payment_methods/")]


class TestTheCardForm:
    def test_get_makes_a_setup_intent_for_the_customer_and_renders_stripe_elements(self, c1, peer, direct):
        page = Client().get(link(c1) + "payment-method/")
        assert page.status_code == 200
        text = html(page)
        c1.refresh_from_db()
        assert c1.gateway_ref.startswith("cus_")  # the Stripe customer was made for the intent
        intent = direct.v1.setup_intents.retrieve(client_secret(page).split("_secret_")[0])
        assert intent.customer == c1.gateway_ref
        assert (intent.usage, intent.status) == ("off_session", "requires_payment_method")
        assert f'<script src="{peer.url}/js.stripe.com/v3/"></script>' in text
        assert f'data-publishable-key="{PUBLISHABLE_KEY}"' in text
        assert f'action="{link(c1)}payment-method/"' in text and 'name="csrfmiddlewaretoken"' in text
        assert 'name="paymentMethod"' in text and 'id="card-element"' in text
        assert "stripe.confirmCardSetup(" in text and "form.submit()" in text
        nonce = re.search(r"'nonce-([^']+)'", page["Content-Security-Policy"]).group(1)
        inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", text)
        assert inline and all(f'nonce="{nonce}"' in tag for tag in inline)
        assert not re.search(r"<[^>]+\son[a-z]+=", text)  # no inline event handler
        assert "does not load" not in text

    def test_every_view_gets_its_own_setup_intent(self, c1, peer):
        first = client_secret(Client().get(link(c1) + "payment-method/"))
        second = client_secret(Client().get(link(c1) + "payment-method/"))
        assert first != second
        keys = [key for path, key in peer.front.posts if path == "/v1/setup_intents"]
        assert len(keys) == 2 and len(set(keys)) == 2 and all(k.startswith(f"{c1.pk}:seti:") for k in keys)

    def test_without_a_publishable_key_the_page_says_so_with_no_script(self, c1, settings):
        settings.STRIPE_PUBLISHABLE_KEY = ""
        page = Client().get(link(c1) + "payment-method/")
        assert page.status_code == 503
        assert "Cards cannot be saved on this page right now" in html(page)
        assert "<script" not in html(page) and "js.stripe.com" not in page["Content-Security-Policy"]

    def test_when_stripe_cannot_be_reached_the_page_says_so(self, c1, settings):
        settings.STRIPE_API_BASE = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        page = Client().get(link(c1) + "payment-method/")
        assert page.status_code == 502
        assert "The payment gateway did not complete the request." in html(page) and "<script" not in html(page)


class TestSavingTheCard:
    def test_the_pm_of_the_confirmed_setup_intent_becomes_the_default_card(self, c1, peer, direct):
        browser = Client(enforce_csrf_checks=True)
        page = browser.get(link(c1) + "payment-method/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html(page)).group(1)
        pm = confirm_in_browser(direct, client_secret(page), SUCCESS)
        response = browser.post(link(c1) + "payment-method/", {"csrfmiddlewaretoken": csrf, "paymentMethod": pm})
        assert response.status_code == 302 and response["Location"] == link(c1)
        saved = PaymentMethod.objects.get(customer=c1, is_default=True)
        assert (saved.gateway, saved.gateway_id, saved.brand, saved.last4) == ("stripe", pm, "visa", "4242")
        assert stripe_default_card(direct, c1) == pm
        home = browser.get(response["Location"])
        assert "Your Visa card ending 4242 is now used for payments." in html(home)
        assert "Visa ending 4242" in html(home)

    def test_a_new_card_replaces_the_old_default(self, c1, peer, direct):
        base = link(c1) + "payment-method/"
        first = confirm_in_browser(direct, client_secret(Client().get(base)), SUCCESS)
        assert Client().post(base, {"paymentMethod": first}).status_code == 302
        page = Client().get(base)
        assert "Visa card ending 4242" in html(page)
        second = confirm_in_browser(direct, client_secret(page), "5555555555554444")
        assert Client().post(base, {"paymentMethod": second}).status_code == 302
        defaults = PaymentMethod.objects.filter(customer=c1, is_default=True)
        assert list(defaults.values_list("gateway_id", flat=True)) == [second]
        assert PaymentMethod.objects.filter(customer=c1).count() == 2
        assert stripe_default_card(direct, c1) == second

    def test_a_card_declined_by_stripe_is_a_422_on_the_page_with_a_fresh_form_and_saves_nothing(self, c1, peer, direct):
        base = link(c1) + "payment-method/"
        spent = client_secret(Client().get(base))
        declined = card(direct, DECLINED_AT_ATTACH)
        page = Client().post(base, {"paymentMethod": declined})
        assert page.status_code == 422
        assert "the card was declined (card_declined)" in html(page)
        assert client_secret(page) != spent  # a new attempt gets a SetupIntent of its own
        assert not PaymentMethod.objects.exists() and stripe_default_card(direct, c1) is None

    def test_after_a_declined_card_another_card_can_be_saved(self, c1, peer, direct):
        base = link(c1) + "payment-method/"
        declined = card(direct, DECLINED_AT_ATTACH)
        page = Client().post(base, {"paymentMethod": declined})
        assert page.status_code == 422
        pm = confirm_in_browser(direct, client_secret(page), SUCCESS)
        response = Client().post(base, {"paymentMethod": pm})
        assert response.status_code == 302, html(response)
        assert PaymentMethod.objects.get(customer=c1).gateway_id == pm and stripe_default_card(direct, c1) == pm

    def test_an_unknown_pm_is_a_422_and_saves_nothing(self, c1, peer, direct):
        page = Client().post(link(c1) + "payment-method/", {"paymentMethod": "pm_doesNotExist123"})
        assert page.status_code == 422 and "no such payment method at Stripe" in html(page)
        assert not PaymentMethod.objects.exists()

    def test_a_gateway_error_shows_on_the_page_with_a_4xx_and_saves_nothing(self, c1, peer, direct, settings):
        pm = confirm_in_browser(direct, client_secret(Client().get(link(c1) + "payment-method/")), SUCCESS)
        settings.STRIPE_API_BASE = f"http://127.0.0.1:{free_port()}"  # Stripe is unreachable
        page = Client().post(link(c1) + "payment-method/", {"paymentMethod": pm})
        assert page.status_code == 409
        assert "The payment gateway did not complete the request." in html(page)
        assert not PaymentMethod.objects.exists() and stripe_default_card(direct, c1) is None

    @pytest.mark.parametrize("value", [
        "", "card_1234", "pm_", "PM_1234", "pm_" + "a" * 253, "pm_abc def", "pm_abc\n", "pm_<script>", "pm_abc-1",
        "pm_abc/../cus_1", "seti_123_secret_456", "pm_é",
    ])
    def test_a_bad_payment_method_value_is_a_422_that_changes_nothing(self, c1, peer, direct, value):
        page = Client().post(link(c1) + "payment-method/", {"paymentMethod": value})
        assert page.status_code == 422
        assert "paymentMethod:" in html(page)
        assert not PaymentMethod.objects.exists()
        assert attach_calls(peer) == []  # Stripe was not even asked

    def test_a_missing_payment_method_is_a_422_too(self, c1, peer):
        page = Client().post(link(c1) + "payment-method/", {"cardNumber": SUCCESS})
        assert page.status_code == 422 and "paymentMethod: no card was sent" in html(page)
        assert not PaymentMethod.objects.exists() and attach_calls(peer) == []

    def test_the_longest_well_formed_id_is_asked_of_stripe(self, c1, peer):
        page = Client().post(link(c1) + "payment-method/", {"paymentMethod": "pm_" + "a" * 252})
        assert page.status_code == 422 and "no such payment method at Stripe" in html(page)
        assert len(attach_calls(peer)) == 1

    def test_the_card_goes_to_the_customer_of_the_link_only(self, c1, peer, direct, sk_client):
        sk_client.post(f"{API}/customers", {"customerId": "c2"}, format="json")
        c2 = Customer.objects.get(external_id="c2")
        Client().get(link(c2) + "payment-method/")  # c2 has a Stripe customer too
        pm = confirm_in_browser(direct, client_secret(Client().get(link(c1) + "payment-method/")), SUCCESS)
        assert Client().post(link(c1) + "payment-method/", {"paymentMethod": pm}).status_code == 302
        assert PaymentMethod.objects.get().customer == c1
        assert stripe_default_card(direct, c1) == pm and stripe_default_card(direct, c2) is None
        assert direct.v1.payment_methods.retrieve(pm).customer == c1.gateway_ref


class TestContentSecurityPolicy:
    def test_the_card_page_allows_stripe_js_and_the_stripe_api_and_nothing_else_more(self, c1, peer):
        card_page = csp(Client().get(link(c1) + "payment-method/"))
        home = csp(Client().get(link(c1)))
        assert card_page["script-src"] == f"'self' 'nonce-NONCE' {peer.url}"
        assert card_page["frame-src"] == f"'self' {peer.url}"
        assert card_page["connect-src"] == f"'self' {peer.url}"
        others = {k: v for k, v in card_page.items() if k not in ("script-src", "frame-src", "connect-src")}
        assert others == {k: v for k, v in home.items() if k != "script-src"}
        assert "unsafe-inline" not in str(card_page) and "unsafe-eval" not in str(card_page)

    def test_every_other_portal_page_stays_strict_with_the_stripe_gateway(self, c1, peer):
        strict = {
            "default-src": "'self'", "script-src": "'self' 'nonce-NONCE'", "style-src": "'self' 'nonce-NONCE'",
            "img-src": "'self' data:", "object-src": "'none'", "base-uri": "'none'", "frame-ancestors": "'none'",
        }
        for path in ("", "plans/", "invoices/"):
            response = Client().get(link(c1) + path)
            assert response.status_code == 200, path
            assert csp(response) == strict, path
        # and a POST that fails validation renders the form again, with its own allowance
        refused = Client().post(link(c1) + "payment-method/", {"paymentMethod": "nope"})
        assert refused.status_code == 422 and csp(refused)["connect-src"] == f"'self' {peer.url}"

    def test_the_card_page_of_the_test_gateway_stays_strict(self, c1, settings):
        settings.BILLING_GATEWAY = "test"
        response = Client().get(link(c1) + "payment-method/")
        assert response.status_code == 200 and 'name="cardNumber"' in html(response)
        assert set(csp(response)) == {"default-src", "script-src", "style-src", "img-src", "object-src", "base-uri",
                                      "frame-ancestors"}
        assert csp(response)["script-src"] == "'self' 'nonce-NONCE'"

    def test_stripes_own_origins_by_default(self, settings):
        settings.STRIPE_JS_URL = "https://js.stripe.com/v3/"
        settings.STRIPE_API_BASE = ""
        assert security.stripe_js_sources() == {
            "script-src": ("https://js.stripe.com",),
            "frame-src": ("https://js.stripe.com", "https://hooks.stripe.com"),  # 3-D Secure frames
            "connect-src": ("https://api.stripe.com",),
        }
