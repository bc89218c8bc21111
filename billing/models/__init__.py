from .api_keys import ApiKey
from .audit import AuditEvent
from .catalog import Feature, Price, Product, ProductFeature, ProductVersion
from .customers import Customer
from .idempotency import IdempotencyKey
from .subscriptions import Subscription

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Customer",
    "Feature",
    "IdempotencyKey",
    "Price",
    "Product",
    "ProductFeature",
    "ProductVersion",
    "Subscription",
]
