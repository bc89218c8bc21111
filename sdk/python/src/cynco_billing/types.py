"""The shapes of the merchant API's answers (API.md), as TypedDicts: plain dicts at
run time, with their wire (camelCase) keys, checked by a type checker."""

from __future__ import annotations

from typing import Any, List, Optional, TypedDict


class Page(TypedDict):
    """A cursor-paginated list: pass ``nextCursor`` back as ``cursor`` for the next page."""

    data: List[dict]
    nextCursor: Optional[str]


class ListOf(TypedDict):
    data: List[dict]


class FeatureBalance(TypedDict):
    granted: int
    usage: int
    remaining: int
    unlimited: bool
    nextResetAt: Optional[str]


class Subscription(TypedDict, total=False):
    id: str
    product: str
    productId: str
    versionId: str
    version: int
    status: str
    quantity: int
    currentPeriodStart: Optional[str]
    currentPeriodEnd: Optional[str]
    trialEnd: Optional[str]
    cancelAtPeriodEnd: bool
    canceledAt: Optional[str]


class Customer(TypedDict, total=False):
    id: str
    name: str
    email: str
    metadata: dict
    subscriptions: List[Subscription]
    balances: dict[str, FeatureBalance]
    flags: dict[str, bool]
    paymentMethods: List[dict]


class PaymentMethod(TypedDict, total=False):
    id: str
    brand: str
    last4: str
    isDefault: bool


class Product(TypedDict, total=False):
    id: str
    slug: str
    name: str
    version: int
    group: str
    isAddOn: bool
    autoEnable: bool
    prices: List[dict]
    features: List[dict]


class CheckResult(TypedDict, total=False):
    allowed: bool
    code: str
    customerId: str
    feature: str
    balance: Optional[int]
    granted: Optional[int]
    usage: Optional[int]
    unlimited: bool
    lockId: Optional[str]


class TrackResult(TypedDict):
    eventId: Any
    balance: Optional[int]
    usage: Optional[int]


class TrackBatchItem(TypedDict, total=False):
    """One event's answer in ``track_batch``: the fields of a track answer, or ``error``."""

    eventId: str
    balance: int
    usage: int
    replayed: bool  # a repeated idempotencyKey: eventId is the first event's
    error: dict  # {code, message, details}, as a single track would raise it


class TrackBatchResult(TypedDict):
    results: List[TrackBatchItem]


class FinalizeLockResult(TypedDict):
    lockId: str
    status: str
    consumed: int
    released: int
    balance: Optional[int]


class InvoiceLine(TypedDict):
    description: str
    quantity: int
    unitAmount: int
    amount: int


class Invoice(TypedDict, total=False):
    id: str
    number: str
    customer: str
    status: str
    currency: str
    lines: List[InvoiceLine]
    subtotal: int
    discount: int
    total: int
    amountPaid: int
    periodStart: Optional[str]
    periodEnd: Optional[str]


class SubscribeResult(TypedDict, total=False):
    subscription: Optional[Subscription]
    invoice: Optional[Invoice]
    url: Optional[str]
    requiredAction: Optional[dict]


class Preview(TypedDict, total=False):
    lineItems: List[dict]
    total: int
    currency: str
    dueNow: int
    nextCycleAt: Optional[str]


class SpendCap(TypedDict, total=False):
    cap: Optional[int]
    spent: int
    remaining: Optional[int]
    currency: str


class PortalLink(TypedDict):
    url: str
    expiresAt: str


class ApiKey(TypedDict, total=False):
    id: str
    name: str
    type: str
    rawKey: Optional[str]
    maskedKey: str


class Coupon(TypedDict, total=False):
    id: str
    code: str
    type: str
    value: int
    duration: str


class CouponValidation(TypedDict, total=False):
    valid: bool
    discountAmount: int
    finalAmount: int
    reason: Optional[str]


class Webhook(TypedDict, total=False):
    id: str
    url: str
    events: List[str]
    secret: str


class WebhookTest(TypedDict):
    delivered: bool
    status: Optional[int]
    latencyMs: int
    error: Optional[str]
    eventId: str


class TrialBalanceAccount(TypedDict):
    code: str
    name: str
    debit: int
    credit: int
    balance: int
    currency: str


class TrialBalance(TypedDict):
    accounts: List[TrialBalanceAccount]
    totalDebit: int
    totalCredit: int


class LedgerEntry(TypedDict):
    id: Any
    postedAt: str
    memo: str
    source: str
    lines: List[dict]


class Analytics(TypedDict, total=False):
    mrr: int
    arr: int
    activeSubscriptions: int
    churnRate: float
    arpu: int
    trialConversionRate: float
    currency: str


class AuditEvent(TypedDict, total=False):
    id: Any
    actor: str
    action: str
    targetType: str
    targetId: str
    createdAt: str
