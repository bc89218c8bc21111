from .api_keys import ApiKey
from .audit import AuditEvent
from .balances import Balance, BalanceBucket, BalanceLock, OverageRecord, ProductSpendCap, SpendCap
from .coupons import Coupon, CouponRedemption
from .catalog import Feature, Price, Product, ProductFeature, ProductVersion
from .customers import Customer
from .events import OutboxEvent
from .idempotency import IdempotencyKey
from .invoices import CheckoutSession, GatewayEvent, Invoice, InvoiceCounter, InvoiceLine, Payment, PaymentMethod
from .subscriptions import Subscription
from .usage import Entity, UsageEvent
from .webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "CheckoutSession",
    "Coupon",
    "CouponRedemption",
    "GatewayEvent",
    "Invoice",
    "InvoiceCounter",
    "InvoiceLine",
    "Payment",
    "PaymentMethod",
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
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
