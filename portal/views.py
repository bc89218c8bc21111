"""Customer portal pages, reached only through a signed one-hour link.

Every request reads the token again (``portal_page``): an expired link is a
403 "link expired" page, a tampered one a 403 "not valid" page, and neither
reaches the view, so neither changes anything. The customer comes from the
token only; every read below is scoped to that customer (another customer's
invoice id is a 404, as an unknown one is). Forms carry Django's CSRF token,
and every POST that changes something answers with a redirect (PRG). Views
parse, make one selector or service call, and render; the rules live in the
services the merchant API calls (``subscribe``, ``subscription_update``,
``payment_method_attach``) and the quote is the same ``quote_attach``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from urllib.parse import urlparse

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from billing.errors import BillingError, NotFound
from billing.models import Customer, Subscription
from billing.selectors.catalog import product_get
from billing.services.payments import card_number_payment_method, payment_method_attach
from billing.services.subscriptions import quote_attach, subscribe, subscription_update
from portal import selectors
from portal.pdf import invoice_pdf as render_invoice_pdf
from portal.security import stripe_js_sources
from portal.stripe_card import stripe_card_form, stripe_payment_method_id
from portal.tokens import PortalLink, PortalLinkExpired, PortalLinkInvalid, portal_token_read

TEST_CARDS = "4242 4242 4242 4242 succeeds · 4000 0000 0000 0002 is declined · 4000 0027 6000 3184 asks for 3-D Secure"


@dataclass(frozen=True)
class Portal:
    """What every portal view gets: the token (for links), the link, its customer, the clock."""

    token: str
    link: PortalLink
    customer: Customer
    now: datetime

    def url(self, name: str, *args) -> str:
        return reverse(f"portal:{name}", args=[self.token, *args])

    def absolute_url(self, name: str, *args) -> str:
        return f"{settings.PUBLIC_BASE_URL}{self.url(name, *args)}"

    def redirect(self, name: str, *args) -> HttpResponseRedirect:
        return HttpResponseRedirect(self.url(name, *args))


def _refused(request, *, expired: bool):
    return render(request, "portal/refused.html", {"expired": expired}, status=403)


def portal_page(view):
    """Read the token and its customer before the view; refuse, or run the view
    and render a NotFound inside it as the portal's own 404 page."""

    @wraps(view)
    def wrapped(request, token: str, *args, **kwargs):
        now = timezone.now()
        try:
            link = portal_token_read(token, now=now)
            customer = selectors.portal_customer(link=link)
        except PortalLinkExpired:
            response = _refused(request, expired=True)
        except (PortalLinkInvalid, NotFound):
            response = _refused(request, expired=False)
        else:
            p = Portal(token=token, link=link, customer=customer, now=now)
            try:
                response = view(request, p, *args, **kwargs)
            except NotFound as exc:
                response = _render(request, p, "portal/not_found.html", {"what": exc.details.get("resource", "page")}, status=404)
        add_never_cache_headers(response)  # a customer's account: never from a shared cache
        return response

    return wrapped


def _render(request, p: Portal, template: str, context: dict | None = None, *, status: int = 200, section: str = ""):
    base = {"p": p, "customer": p.customer, "return_url": p.link.return_url, "section": section}
    return render(request, template, {**base, **(context or {})}, status=status)


# --- overview -----------------------------------------------------------------------------


@require_http_methods(["GET", "HEAD"])
@portal_page
def home(request, p: Portal):
    return _render(request, p, "portal/home.html", {
        "plans": selectors.portal_plans_held(customer=p.customer),
        "balances": selectors.portal_balances(customer=p.customer),
        "charts": selectors.portal_usage_charts(customer=p.customer, now=p.now),
        "card": selectors.portal_payment_method(customer=p.customer),
    }, section="home")


# --- changing plans -----------------------------------------------------------------------


@require_http_methods(["GET", "HEAD"])
@portal_page
def plans(request, p: Portal):
    offers = selectors.portal_plan_offers(customer=p.customer)
    groups = [(title, [o for o in offers if o.kind == kind])
              for kind, title in (("plan", "Plans"), ("add_on", "Add-ons"), ("one_off", "One-off purchases"))]
    return _render(request, p, "portal/plans.html", {"groups": [g for g in groups if g[1]]}, section="plans")


@require_http_methods(["GET", "HEAD", "POST"])
@portal_page
def plan_change(request, p: Portal, slug: str):
    """GET: the exact lines ``subscribe`` would bill now (``quote_attach``).
    POST: ``subscribe``, as the merchant API's ``POST subscribe`` does: the
    default card is charged; without one, or when the card is declined or asks
    for 3-D Secure, the customer goes on to the hosted checkout."""
    product = product_get(id_or_slug=slug)
    if request.method == "POST":
        try:
            result = subscribe(customer=p.customer, product=product, quantity=1, now=p.now,
                               success_url=p.absolute_url("home"), cancel_url=p.absolute_url("plans"))
        except BillingError as exc:
            return _preview(request, p, product, error=exc.message, status=409 if exc.status == 409 else 422)
        if result.url:
            return HttpResponseRedirect(result.url)
        messages.success(request, _changed_message(product, result))
        return p.redirect("home")
    return _preview(request, p, product)


def _preview(request, p: Portal, product, *, error: str = "", status: int = 200):
    quote = None
    try:
        quote = quote_attach(customer=p.customer, product=product, quantity=1, now=p.now)
    except BillingError as exc:
        error, status = error or exc.message, status if error else (409 if exc.status == 409 else 422)
    return _render(request, p, "portal/preview.html", {
        "product": product, "quote": quote, "error": error,
        "card": selectors.portal_payment_method(customer=p.customer),
    }, status=status, section="plans")


def _changed_message(product, result) -> str:
    sub: Subscription | None = result.subscription
    if sub is not None and sub.scheduled_product_id == product.pk:
        return f"{product.name} starts on {sub.current_period_end:%d %B %Y}, when your current period ends. Nothing was charged today."
    if sub is not None and sub.status == Subscription.Status.TRIALING:
        return f"Your free trial of {product.name} has started."
    if result.invoice is not None:
        return f"You are now on {product.name}. Invoice {result.invoice.number} is paid."
    return f"You are now on {product.name}."


# --- cancel and keep ------------------------------------------------------------------------


@require_http_methods(["GET", "HEAD", "POST"])
@portal_page
def cancel(request, p: Portal, subscription_id: str):
    """GET: what cancelling means (the plan runs to the period end). POST: cancel at the period end."""
    sub = selectors.portal_subscription(customer=p.customer, subscription_id=subscription_id)
    if request.method == "POST":
        try:
            sub = subscription_update(customer=p.customer, product=sub.product, cancel_action="cancel_end_of_cycle", now=p.now).subscription
        except BillingError as exc:
            return _render(request, p, "portal/cancel.html", {"sub": sub, "error": exc.message}, status=409, section="home")
        when = f" on {sub.current_period_end:%d %B %Y}" if sub.current_period_end else ""
        messages.success(request, f"{sub.product.name} is cancelled and ends{when}. You can keep it until then.")
        return p.redirect("home")
    return _render(request, p, "portal/cancel.html", {"sub": sub}, section="home")


@require_POST
@portal_page
def uncancel(request, p: Portal, subscription_id: str):
    """Keep the plan: undo a cancellation (or a scheduled switch) at the period end."""
    sub = selectors.portal_subscription(customer=p.customer, subscription_id=subscription_id)
    try:
        subscription_update(customer=p.customer, product=sub.product, cancel_action="uncancel", now=p.now)
    except BillingError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{sub.product.name} will renew as usual.")
    return p.redirect("home")


# --- invoices -------------------------------------------------------------------------------


@require_http_methods(["GET", "HEAD"])
@portal_page
def invoices(request, p: Portal):
    return _render(request, p, "portal/invoices.html", {"invoices": selectors.portal_invoices(customer=p.customer)},
                   section="invoices")


@require_http_methods(["GET", "HEAD"])
@portal_page
def invoice(request, p: Portal, invoice_id: str):
    inv = selectors.portal_invoice(customer=p.customer, invoice_id=invoice_id)
    return _render(request, p, "portal/invoice.html", {"invoice": inv, "lines": list(inv.lines.all()),
                                                        "payments": list(inv.payments.all())}, section="invoices")


@require_http_methods(["GET", "HEAD"])
@portal_page
def invoice_pdf(request, p: Portal, invoice_id: str):
    inv = selectors.portal_invoice(customer=p.customer, invoice_id=invoice_id)
    issuer = urlparse(p.link.return_url).hostname or "" if p.link.return_url else ""
    response = HttpResponse(render_invoice_pdf(invoice=inv, issuer=issuer), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="invoice-{inv.number}.pdf"'
    return response


# --- payment method ---------------------------------------------------------------------------


@require_http_methods(["GET", "HEAD", "POST"])
@portal_page
def payment_method(request, p: Portal):
    """Save a card through ``payment_method_attach``, as ``POST customers/{id}/payment-methods``
    does, and make it the default.

    The test gateway: a card number form (the checkout page's test cards). The Stripe
    gateway: GET makes a SetupIntent for the customer (``setup_intent_create``) and renders
    Stripe Elements' card field; the page's script confirms the SetupIntent in the browser
    (``stripe.confirmCardSetup``) and submits the ``pm_…`` it saved as ``paymentMethod``,
    a plain form POST answered by a redirect like every other change here. The page's CSP
    allows Stripe.js and Stripe's API (``stripe_js_sources``), and only this page's."""
    offline = settings.BILLING_GATEWAY == "test"
    if request.method == "POST":
        try:
            if offline:
                payment_method_id = card_number_payment_method(request.POST.get("cardNumber", ""))
            else:
                payment_method_id = stripe_payment_method_id(request.POST.get("paymentMethod", ""))
            pm = payment_method_attach(customer=p.customer, payment_method=payment_method_id, now=p.now)
        except BillingError as exc:
            return _card_page(request, p, offline, error=exc.message, status=422 if exc.status == 422 else 409)
        messages.success(request, f"Your {pm.brand.title()} card ending {pm.last4} is now used for payments.")
        return p.redirect("home")
    return _card_page(request, p, offline)


def _card_page(request, p: Portal, offline: bool, *, error: str = "", status: int = 200):
    stripe = None
    if not offline:
        # A fresh SetupIntent for every rendering, an error page's too: the one the failed
        # attempt used may be spent (confirmed, or canceled by a declined card).
        try:
            stripe = stripe_card_form(customer=p.customer, now=p.now, page="portal card page")
        except BillingError as exc:
            if not error:
                error, status = exc.message, exc.status if exc.status >= 500 else 409
    response = _render(request, p, "portal/payment_method.html", {
        "card": selectors.portal_payment_method(customer=p.customer), "offline": offline, "error": error,
        "test_cards": TEST_CARDS, "stripe": stripe,
    }, status=status, section="card")
    if stripe is not None:
        response.csp_allow = stripe_js_sources()
    return response
