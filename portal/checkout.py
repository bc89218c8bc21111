"""The hosted checkout: pay an open invoice (or save a card for a trial), or
complete 3-D Secure. The session id in the url is the capability (100 random
bits), valid until the session expires.

The test gateway takes a test card number and its 3-D Secure page lets the
customer choose what the bank answers. With ``BILLING_GATEWAY=stripe`` the card
is collected as on the portal's card page (portal/stripe_card.py): a SetupIntent
per view, Stripe Elements, ``stripe.confirmCardSetup`` in the browser, and the
``pm_…`` posted as ``paymentMethod`` (its shape checked before Stripe is asked);
only that page's CSP allows Stripe.js. A Stripe charge that asks for 3-D Secure
cannot be finished here yet (that needs the PaymentIntent's client secret in the
browser, which the gateway does not hand out): the waiting PaymentIntent is
canceled, so nothing is taken, and the page says so and offers the form again."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone

from billing.errors import BillingError
from billing.models import CheckoutSession
from billing.services.payments import card_number_payment_method, checkout_confirm, checkout_pay
from portal.security import stripe_js_sources
from portal.stripe_card import stripe_card_form, stripe_payment_method_id

REFUNDED = "You already have a plan of this kind, so nothing was started and the payment was refunded."
# A Stripe charge that asks for 3-D Secure: the PaymentIntent is canceled at once (see the module docstring).
AUTHENTICATION_NOT_TAKEN = ("Your bank asked to authenticate this payment (3-D Secure), which this page cannot do yet, "
                            "so the payment was not taken and nothing was charged. Try another card.")
AUTHENTICATION_WAITING = ("Your bank asked to authenticate this payment (3-D Secure), which this page cannot do yet. "
                          "Nothing has been charged. Cancel the request to try another card.")


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
    response = render(request, template, {"session": session, "lines": lines, "error": error, "expired": expired,
                                          "stripe_gateway": _stripe(), "stripe": stripe}, status=status)
    if stripe is not None:
        response.csp_allow = stripe_js_sources()
    return response


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
    if result.status == "requires_action":
        if result.payment is not None and result.payment.gateway == "stripe":
            return _authentication_not_taken(request, session_id)
        return _to("checkout-3ds", session)
    if result.status == "refunded":
        return _page(request, _session(session_id), status=409, error=REFUNDED)
    if result.status != "succeeded":
        return _page(request, _session(session_id), error="Your card was declined. Try another card.", status=402)
    return _done(request, _session(session_id))


def _authentication_not_taken(request, session_id: str):
    """A Stripe charge waits for 3-D Secure, which this page cannot finish: cancel its
    PaymentIntent (``checkout_confirm(succeed=False)``; the payment fails, the checkout
    stays open) and show the card form again with why. If Stripe cannot be reached, the
    payment still waits and the 3-D Secure page offers the cancel again."""
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
    stripe = session.payment.gateway == "stripe"
    if stripe and request.method != "POST":
        # A Stripe charge that waits (a default card charged by ``subscribe``, or a cancel in
        # ``pay`` that did not go through): this page cannot authenticate, so it says so and
        # offers to cancel; "check again" still follows what Stripe says, as before.
        return _page(request, session, error=AUTHENTICATION_WAITING, status=402, template="checkout/3ds.html")
    if stripe and request.POST.get("outcome") != "complete":
        return _authentication_not_taken(request, session_id)
    if request.method != "POST":
        return _page(request, session, template="checkout/3ds.html")
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
