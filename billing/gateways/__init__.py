"""Payment gateways behind one small interface (``base.Gateway``).

``gateway_get()`` returns the configured one: ``BILLING_GATEWAY=test`` (the
default, offline) or ``stripe``.
"""

from __future__ import annotations

from django.conf import settings

from billing.gateways.base import ChargeResult, Gateway, GatewayError, SavedCard


def gateway_get(name: str | None = None) -> Gateway:
    name = name or settings.BILLING_GATEWAY
    if name == "test":
        from billing.gateways.test import TestGateway

        return TestGateway()
    if name == "stripe":
        from billing.gateways.stripe import StripeGateway

        return StripeGateway()
    raise ValueError(f"unknown gateway {name!r}")


__all__ = ["ChargeResult", "Gateway", "GatewayError", "SavedCard", "gateway_get"]
