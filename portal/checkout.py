"""The hosted checkout: pay an open invoice (or save a card for a trial), or
complete 3-D Secure. The session id in the url is the capability (100 random
bits), valid until the session expires.

The test gateway takes a test card number and its 3-D Secure page lets the
customer choose what the bank answers. With ``BILLING_GATEWAY=stripe`` the card
is collected as on the portal's card page (portal/stripe_card.py): a SetupIntent
per view, Stripe Elements, ``stripe.confirmCardSetup`` in the browser, and the
``pm_…`` posted as ``paymentMethod`` (its shape checked before Stripe is asked);
only that page's CSP allows Stripe.js. A Stripe charge that asks for 3-D Secure
goes to the 3-D Secure page, which reads the PaymentIntent's client secret from Stripe
(never stored) and runs ``stripe.confirmCardPayment`` in the browser; its form then makes
the server follow what Stripe says: "check again" (``checkout_confirm`` reads the
PaymentIntent's status) when the browser says it worked, else the cancel, which fails the
payment and keeps the checkout open for another card."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone

from billing.errors import BillingError
from billing.models import CheckoutSession
from billing.services.payments import (
    card_number_payment_method, checkout_authentication, checkout_confirm, checkout_pay,
)
from portal.security import stripe_js_sources
from portal.stripe_card import stripe_card_form, stripe_payment_method_id

logger = logging.getLogger(__name__)

REFUNDED = "You already have a plan of this kind, so nothing was started and the payment was refunded."
# A Stripe charge whose 3-D Secure failed or was given up in the browser: its PaymentIntent is canceled.
AUTHENTICATION_NOT_TAKEN = ("The payment was not authenticated with your bank (3-D Secure), "
                            "so the payment was not taken and nothing was charged. Try another card.")
AUTHENTICATION_UNAVAILABLE = ("Authentication with your bank (3-D Secure) cannot start on this page right now. "
                              "Nothing has been charged. "
                              "Reload the page to try again, or cancel the request to try another card.")


@dataclass(frozen=True)
class StripeAuthentication:
    """What the 3-D Secure page's script needs for ``stripe.confirmCardPayment``."""

    js_url: str
    publishable_key: str
    client_secret: str = field(repr=False)  # to the browser only: never stored or logged
    payment_method: str


def _stripe() -> bool:
    return settings.BILLING_GATEWAY == "stripe"


def _session(session_id: str) -> CheckoutSession:
    session = CheckoutSession.objects.select_related("invoice", "subscription__product", "customer", "payment").filter(pk=session_id).first()
    if session is None:
        raise Http404("No such checkout")
    return session


def _page(request, session, *, error: str = "", status: int = 200, template: str = "checkout/pay.html"):
    lines = list(session.invoice.lines.all()) if session.invoice_id else []
    expired = session.expires_at <= timezone.now()
    stripe = None
    if (template == "checkout/pay.html" and _stripe() and not expired and session.status == "open"
            and not _waits_for_3ds(session)):
        # The Stripe card form, with a fresh SetupIntent for every rendering (an error page's
        # too: the one a failed attempt used may be spent).
        try:
            stripe = stripe_card_form(customer=session.customer, now=timezone.now(), page="checkout")
        except BillingError as exc:
            if not error:
                error, status = exc.message, exc.status if exc.status >= 500 else 409
    authentication = None
    if (template == "checkout/3ds.html" and not expired and _waits_for_3ds(session)
            and session.payment.gateway == "stripe"):
        try:
            authentication = _stripe_authentication(session)
        except BillingError as exc:
            logger.warning("checkout 3ds: the PaymentIntent of payment %s could not be read: %s",
                           session.payment_id, exc.code)
            if not error:
                error, status = AUTHENTICATION_UNAVAILABLE, exc.status if exc.status >= 500 else 409
    response = render(request, template, {"session": session, "lines": lines, "error": error, "expired": expired,
                                          "stripe_gateway": _stripe(), "stripe": stripe,
                                          "authentication": authentication}, status=status)
    if stripe is not None or authentication is not None:
        response.csp_allow = stripe_js_sources()
    return response


def _stripe_authentication(session) -> StripeAuthentication:
    """The waiting PaymentIntent's client secret, read from Stripe for this view.
    Raises BillingError (503 without a publishable key), Conflict, GatewayError."""
    if not settings.STRIPE_PUBLISHABLE_KEY:
        raise BillingError("Stripe.js is not configured.", code="NOT_CONFIGURED", status=503)
    intent = checkout_authentication(session_id=session.pk, now=timezone.now())
    return StripeAuthentication(js_url=settings.STRIPE_JS_URL, publishable_key=settings.STRIPE_PUBLISHABLE_KEY,
                                client_secret=intent.client_secret, payment_method=intent.payment_method)


def _waits_for_3ds(session) -> bool:
    return session.status == "open" and session.payment_id is not None and session.payment.status == "requires_action"


def _to(name: str, session) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse(name, args=[session.pk]))


def pay(request, session_id: str):
    session = _session(session_id)
    if session.status == "complete":
        # A reload of the page a payment answered re-sends its form: show the
        # result instead of refusing a second payment.
        if request.method == "POST":
            return _to("checkout", session)
        return render(request, "checkout/done.html", {"session": session})
    if _waits_for_3ds(session):
        return _to("checkout-3ds", session)
    if request.method != "POST":
        return _page(request, session)
    try:
        if _stripe():
            pm = stripe_payment_method_id(request.POST.get("paymentMethod", ""))
        else:
            pm = card_number_payment_method(request.POST.get("cardNumber", ""))
        result = checkout_pay(session_id=session.pk, payment_method=pm, now=timezone.now())
    except BillingError as exc:
        return _page(request, _session(session_id), error=exc.message, status=422 if exc.status == 422 else 409)
    if result.status == "requires_action":  # 3-D Secure, on the test gateway's page or with Stripe.js
        return _to("checkout-3ds", session)
    if result.status == "refunded":
        return _page(request, _session(session_id), status=409, error=REFUNDED)
    if result.status != "succeeded":
        return _page(request, _session(session_id), error="Your card was declined. Try another card.", status=402)
    return _done(request, _session(session_id))


def _authentication_not_taken(request, session_id: str):
    """The customer's 3-D Secure for a Stripe charge failed or was given up in the browser:
    cancel its PaymentIntent (``checkout_confirm(succeed=False)``, which still follows
    Stripe: a PaymentIntent that succeeded meanwhile is taken as paid; otherwise the payment
    fails and the checkout stays open) and show the card form again with why. If Stripe
    cannot be reached, the payment still waits and the 3-D Secure page is shown again."""
    try:
        result = checkout_confirm(session_id=session_id, succeed=False, now=timezone.now())
    except BillingError:
        return _to("checkout-3ds", _session(session_id))
    if result.status == "succeeded":  # the customer finished it elsewhere meanwhile
        return _done(request, _session(session_id))
    if result.status == "refunded":
        return _page(request, _session(session_id), status=409, error=REFUNDED)
    return _page(request, _session(session_id), error=AUTHENTICATION_NOT_TAKEN, status=402)


def secure(request, session_id: str):
    session = _session(session_id)
    if not _waits_for_3ds(session):
        # Paid, failed or never asked for: the checkout page tells which.
        return _to("checkout", session)
    if request.method != "POST":
        # With Stripe (a card charged by ``pay``, or a default card charged by ``subscribe``)
        # the page runs stripe.confirmCardPayment and posts what the browser saw.
        return _page(request, session, template="checkout/3ds.html")
    if session.payment.gateway == "stripe" and request.POST.get("outcome") != "complete":
        return _authentication_not_taken(request, session_id)
    try:
        result = checkout_confirm(session_id=session.pk, succeed=request.POST.get("outcome") == "complete", now=timezone.now())
    except BillingError as exc:
        return _page(request, _session(session_id), error=exc.message, status=409, template="checkout/3ds.html")
    if result.status == "refunded":
        return _page(request, _session(session_id), status=409, error=REFUNDED)
    if result.status != "succeeded":
        return _page(request, _session(session_id), error="Authentication failed. Try again or use another card.", status=402)
    return _done(request, _session(session_id))


def _done(request, session):
    if session.success_url:
        return HttpResponseRedirect(session.success_url)
    return render(request, "checkout/done.html", {"session": session})


urlpatterns = [
    path("<str:session_id>/", pay, name="checkout"),
    path("<str:session_id>/3ds/", secure, name="checkout-3ds"),
]
