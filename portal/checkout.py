"""The test gateway's hosted checkout: pay an open invoice with a test card,
or complete 3-D Secure. The session id in the url is the capability (100
random bits), valid until the session expires."""

from __future__ import annotations

from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone

from billing.errors import BillingError
from billing.models import CheckoutSession
from billing.services.payments import card_number_payment_method, checkout_confirm, checkout_pay

REFUNDED = "You already have a plan of this kind, so nothing was started and the payment was refunded."


def _session(session_id: str) -> CheckoutSession:
    session = CheckoutSession.objects.select_related("invoice", "subscription__product", "customer", "payment").filter(pk=session_id).first()
    if session is None:
        raise Http404("No such checkout")
    return session


def _page(request, session, *, error: str = "", status: int = 200, template: str = "checkout/pay.html"):
    lines = list(session.invoice.lines.all()) if session.invoice_id else []
    return render(request, template, {"session": session, "lines": lines, "error": error,
                                      "expired": session.expires_at <= timezone.now()}, status=status)


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
        pm = card_number_payment_method(request.POST.get("cardNumber", ""))
        result = checkout_pay(session_id=session.pk, payment_method=pm, now=timezone.now())
    except BillingError as exc:
        return _page(request, _session(session_id), error=exc.message, status=422 if exc.status == 422 else 409)
    if result.status == "requires_action":
        return _to("checkout-3ds", session)
    if result.status == "refunded":
        return _page(request, _session(session_id), status=409, error=REFUNDED)
    if result.status != "succeeded":
        return _page(request, _session(session_id), error="Your card was declined. Try another card.", status=402)
    return _done(request, _session(session_id))


def secure(request, session_id: str):
    session = _session(session_id)
    if not _waits_for_3ds(session):
        # Paid, failed or never asked for: the checkout page tells which.
        return _to("checkout", session)
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
