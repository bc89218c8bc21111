"""The test gateway's hosted checkout: pay an open invoice with a test card,
or complete 3-D Secure. The session id in the url is the capability (100
random bits), valid until the session expires."""

from __future__ import annotations

from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path
from django.utils import timezone

from billing.errors import BillingError
from billing.models import CheckoutSession
from billing.services.payments import card_number_payment_method, checkout_confirm, checkout_pay


def _session(session_id: str) -> CheckoutSession:
    session = CheckoutSession.objects.select_related("invoice", "subscription__product", "customer", "payment").filter(pk=session_id).first()
    if session is None:
        raise Http404("No such checkout")
    return session


def _page(request, session, *, error: str = "", status: int = 200, template: str = "checkout/pay.html"):
    lines = list(session.invoice.lines.all()) if session.invoice_id else []
    return render(request, template, {"session": session, "lines": lines, "error": error,
                                      "expired": session.expires_at <= timezone.now()}, status=status)


def pay(request, session_id: str):
    session = _session(session_id)
    if session.payment_id and session.payment.status == "requires_action" and session.status == "open":
        return HttpResponseRedirect(f"/checkout/{session.pk}/3ds/")
    if request.method != "POST":
        return _page(request, session)
    try:
        pm = card_number_payment_method(request.POST.get("cardNumber", ""))
        result = checkout_pay(session_id=session.pk, payment_method=pm, now=timezone.now())
    except BillingError as exc:
        return _page(request, _session(session_id), error=exc.message, status=422 if exc.status == 422 else 409)
    if result.status == "requires_action":
        return HttpResponseRedirect(f"/checkout/{session.pk}/3ds/")
    if result.status != "succeeded":
        return _page(request, _session(session_id), error="Your card was declined. Try another card.", status=402)
    return _done(request, _session(session_id))


def secure(request, session_id: str):
    session = _session(session_id)
    if request.method != "POST":
        return _page(request, session, template="checkout/3ds.html")
    try:
        result = checkout_confirm(session_id=session.pk, succeed=request.POST.get("outcome") == "complete", now=timezone.now())
    except BillingError as exc:
        return _page(request, _session(session_id), error=exc.message, status=409, template="checkout/3ds.html")
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
