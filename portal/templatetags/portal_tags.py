"""Display filters of the portal pages."""

from __future__ import annotations

from urllib.parse import urlparse

from django import template

from billing.money import money_format

register = template.Library()


@register.filter
def money(amount, currency):
    """``{{ invoice.total|money:invoice.currency }}`` → "$20.00"."""
    if amount is None:
        return ""
    return money_format(int(amount), currency or "usd")


@register.filter
def site_name(url: str) -> str:
    """The host of a return url, for "Back to app.example.com"."""
    return urlparse(url).hostname or url


@register.filter
def number(value) -> str:
    return f"{int(value):,}"


@register.filter
def label(value: str) -> str:
    """"past_due" → "Past due"."""
    return str(value).replace("_", " ").capitalize()
