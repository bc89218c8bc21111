"""Collecting a card with Stripe.js, shared by the portal's card page and the hosted
checkout when ``BILLING_GATEWAY=stripe``.

The page gets a SetupIntent for the customer (``setup_intent_create``) and renders
templates/stripe/card_form.html: Stripe Elements' card field from ``STRIPE_JS_URL`` with
``STRIPE_PUBLISHABLE_KEY`` and a nonce'd script that confirms the SetupIntent in the browser
(``stripe.confirmCardSetup``) and posts the ``pm_…`` it saved as ``paymentMethod``, a plain
form POST. The view checks that value with ``stripe_payment_method_id`` before anything is
sent to Stripe, and widens only that response's CSP with ``stripe_js_sources``."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from billing.errors import BillingError, ValidationFailed
from billing.models import Customer
from billing.services.payments import setup_intent_create

logger = logging.getLogger(__name__)

# Stripe's object ids are at most 255 characters; a PaymentMethod's starts with pm_.
STRIPE_PAYMENT_METHOD_ID = re.compile(r"pm_[A-Za-z0-9_]{1,252}")


def stripe_payment_method_id(value: str) -> str:
    """The posted ``paymentMethod``, if it has a Stripe PaymentMethod id's shape.
    Raises ValidationFailed (422) otherwise, before any call to Stripe."""
    if not value:
        raise ValidationFailed("paymentMethod", "no card was sent: enter the card and save it again")
    if not STRIPE_PAYMENT_METHOD_ID.fullmatch(value):
        raise ValidationFailed("paymentMethod",
                               "not a Stripe payment method id (pm_ and up to 252 letters, digits or _)")
    return value


@dataclass(frozen=True)
class StripeCardForm:
    """What the Stripe card form needs: Stripe.js, the publishable key, this view's SetupIntent."""

    js_url: str
    publishable_key: str
    client_secret: str


def stripe_card_form(*, customer: Customer, now: datetime, page: str) -> StripeCardForm:
    """A fresh SetupIntent for the customer and what the template needs to confirm it.
    ``page`` names the page in the log line. Raises BillingError (503 not configured, or
    the gateway refused), GatewayError."""
    if not settings.STRIPE_PUBLISHABLE_KEY:
        logger.warning("%s: STRIPE_PUBLISHABLE_KEY is not set, so Stripe.js cannot be used", page)
        raise BillingError("Cards cannot be saved on this page right now.", code="NOT_CONFIGURED", status=503)
    secret = setup_intent_create(customer=customer, now=now)
    return StripeCardForm(js_url=settings.STRIPE_JS_URL, publishable_key=settings.STRIPE_PUBLISHABLE_KEY,
                          client_secret=secret)
