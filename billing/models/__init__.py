from .api_keys import ApiKey
from .audit import AuditEvent
from .balances import Balance, BalanceBucket, BalanceLock, OverageRecord, ProductSpendCap, SpendCap
from .catalog import Feature, Price, Product, ProductFeature, ProductVersion
from .customers import Customer
from .events import OutboxEvent
from .idempotency import IdempotencyKey
from .subscriptions import Subscription
from .usage import Entity, UsageEvent

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Balance",
    "BalanceBucket",
    "BalanceLock",
    "Entity",
    "OutboxEvent",
    "OverageRecord",
    "ProductSpendCap",
    "SpendCap",
    "UsageEvent",
    "Customer",
    "Feature",
    "IdempotencyKey",
    "Price",
    "Product",
    "ProductFeature",
    "ProductVersion",
    "Subscription",
]
