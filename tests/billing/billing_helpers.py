"""Shared helpers of the subscription and invoicing tests (HTTP only)."""

from __future__ import annotations

from datetime import datetime

from django.core.management import call_command
from django.db.models import Sum
from rest_framework.test import APIClient

from billing.selectors.audit_ledger import audit_books
from ledger.models import Line

API = "/api/v1/pay"


def client_for(raw_key: str) -> APIClient:
    """An API client that sends ``raw_key`` as its bearer key (one per thread in the race tests)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def make_product(client, slug, amount=0, interval="month", group="plans", features=None, **extra):
    prices = []
    if amount is not None and (amount or extra.get("tiers")):
        price = {"type": "recurring", "amount": amount, "billingInterval": interval}
        if extra.get("tiers"):
            price["tiers"] = extra.pop("tiers")
            price["tiersMode"] = extra.pop("tiersMode", "graduated")
        prices = [price]
    body = {"name": slug.title(), "slug": slug, "group": group, "prices": prices,
            "features": features if features is not None else [
                {"slug": "tokens", "type": "metered", "allowance": 1000, "resetInterval": "billing_period"}],
            **extra}
    response = client.post(f"{API}/products", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def make_topup(client, slug="credits-pack", amount=500, allowance=100):
    body = {"name": "Credits", "slug": slug, "prices": [{"type": "one_off", "amount": amount}],
            "features": [{"slug": "tokens", "type": "metered", "allowance": allowance}]}
    response = client.post(f"{API}/products", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def add_card(client, customer="c1", pm="pm_card_visa"):
    client.post(f"{API}/customers", {"customerId": customer}, format="json")
    response = client.post(f"{API}/customers/{customer}/payment-methods", {"paymentMethod": pm}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def subscribe(client, product, customer="c1", expect=200, **extra):
    response = client.post(f"{API}/subscribe", {"customer": customer, "product": product, **extra}, format="json")
    assert response.status_code == expect, response.content
    return response.json()


def cycle(now: datetime) -> None:
    call_command("run_billing_cycle", "--now", now.isoformat())


def account_balance(code: str) -> int:
    """Debit minus credit of one account."""
    lines = Line.objects.filter(account_id=code)
    debit = lines.filter(side="debit").aggregate(s=Sum("amount"))["s"] or 0
    credit = lines.filter(side="credit").aggregate(s=Sum("amount"))["s"] or 0
    return debit - credit


def assert_books_reconcile() -> None:
    """The ledger agrees with the invoices and payments (``audit_books``, the books
    part of ``manage.py audit_ledger``): every entry balances; each invoice and
    payment has its own entry, once; paid and refunded amounts match the payments;
    and per currency Receivable = unpaid part of open invoices, Cash = charges −
    refunds, Revenue and Discounts = those of invoices not void, Bad debt = the
    unpaid part of uncollectible ones."""
    violations = audit_books()
    assert not violations, "books do not reconcile:\n" + "\n".join(map(str, violations))
