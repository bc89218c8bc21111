"""Customer portal pages, reached only through a signed one-hour link."""

from __future__ import annotations

from django.shortcuts import render
from django.utils import timezone

from billing.models import Customer
from billing.selectors.customers import customer_subscriptions
from portal.tokens import PortalLinkExpired, PortalLinkInvalid, portal_token_read


def _refused(request, *, expired: bool):
    return render(request, "portal/refused.html", {"expired": expired}, status=403)


def home(request, token: str):
    try:
        link = portal_token_read(token, now=timezone.now())
    except PortalLinkExpired:
        return _refused(request, expired=True)
    except PortalLinkInvalid:
        return _refused(request, expired=False)
    customer = Customer.objects.filter(pk=link.customer_pk, deleted_at__isnull=True).first()
    if customer is None:
        return _refused(request, expired=False)
    return render(
        request,
        "portal/home.html",
        {"customer": customer, "subscriptions": customer_subscriptions(customer=customer), "return_url": link.return_url},
    )
