"""Reads for the customer portal. Every function takes the customer the link
names and reads only that customer's rows: a subscription or invoice id of
another customer is ``NotFound``, exactly like an id that does not exist."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from billing.errors import NotFound
from billing.models import Customer, Feature, Invoice, PaymentMethod, Price, Subscription
from billing.selectors.entitlements import customer_balances, usage_aggregate
from billing.selectors.plans import pricing_table
from portal.tokens import PortalLink

CHART_DAYS = 30


def portal_customer(*, link: PortalLink) -> Customer:
    """The live customer the link names. Raises NotFound (deleted since the link was made)."""
    customer = Customer.objects.filter(pk=link.customer_pk, deleted_at__isnull=True).first()
    if customer is None:
        raise NotFound("customer", str(link.customer_pk))
    return customer


# --- overview ----------------------------------------------------------------------


@dataclass(frozen=True)
class PlanLine:
    """One live subscription as the overview shows it."""

    subscription: Subscription
    status: str
    # What happens next, in words the customer reads: "Renews on", "Ends on", "Trial ends on", "Switches to … on".
    next_label: str
    next_at: datetime | None
    can_cancel: bool
    can_uncancel: bool


def _plan_line(sub: Subscription) -> PlanLine:
    if sub.cancel_at_period_end:
        label, at = "Ends on", sub.current_period_end
    elif sub.scheduled_product_id:
        label, at = f"Switches to {sub.scheduled_product.name} on", sub.current_period_end
    elif sub.status == Subscription.Status.TRIALING:
        label, at = "Trial ends on", sub.trial_end or sub.current_period_end
    elif sub.status == Subscription.Status.PAUSED:
        label, at = "Paused since", sub.paused_at
    elif sub.current_period_end and sub.billing_interval:
        label, at = "Renews on", sub.current_period_end
    else:
        label, at = "", None  # a free plan without periods
    pending = sub.cancel_at_period_end or sub.scheduled_product_id is not None
    return PlanLine(
        subscription=sub, status=sub.status, next_label=label, next_at=at,
        can_cancel=not pending and sub.status in Subscription.LIVE_STATUSES,
        can_uncancel=pending,
    )


def portal_plans_held(*, customer: Customer) -> list[PlanLine]:
    """The customer's live subscriptions (main plans first, then add-ons), oldest first."""
    subs = (
        Subscription.objects.filter(customer=customer, status__in=Subscription.LIVE_STATUSES)
        .select_related("product", "version", "scheduled_product")
        .order_by("product__is_add_on", "created_at", "id")
    )
    return [_plan_line(sub) for sub in subs]


def portal_subscription(*, customer: Customer, subscription_id: str) -> Subscription:
    """One live subscription of this customer. Raises NotFound (unknown, another customer's, ended)."""
    sub = (
        Subscription.objects.filter(pk=subscription_id, customer=customer, status__in=Subscription.LIVE_STATUSES)
        .select_related("product", "version")
        .first()
    )
    if sub is None:
        raise NotFound("subscription", subscription_id)
    return sub


# --- balances and the usage chart -----------------------------------------------------


@dataclass(frozen=True)
class BalanceRow:
    slug: str
    name: str
    granted: int
    used: int
    remaining: int
    unlimited: bool
    percent_used: int  # 0..100, for the bar
    next_reset_at: datetime | None

    @property
    def over(self) -> bool:
        return not self.unlimited and self.remaining < 0


def _feature_names(slugs) -> dict[str, str]:
    return {f.slug: (f.name if f.name != f.slug else f.slug.replace("-", " ").replace("_", " "))
            for f in Feature.objects.filter(slug__in=list(slugs))}


def portal_balances(*, customer: Customer) -> list[BalanceRow]:
    """The customer-level balances of metered and seat features (as the merchant
    API's customer shows them), with a used share for the bar."""
    balances, _flags = customer_balances(customer=customer)
    names = _feature_names(balances)
    rows = []
    for slug, b in balances.items():
        granted, used = b["granted"], b["usage"]
        percent = 0 if b["unlimited"] else 100 if granted <= 0 and used > 0 else min(100, round(100 * used / granted)) if granted else 0
        rows.append(BalanceRow(slug=slug, name=names.get(slug, slug), granted=granted, used=used, remaining=b["remaining"],
                               unlimited=b["unlimited"], percent_used=percent, next_reset_at=b["nextResetAt"]))
    return rows


@dataclass(frozen=True)
class Bar:
    day: str  # ISO date
    value: int
    x: int
    y: int
    height: int


@dataclass
class UsageChart:
    slug: str
    name: str
    total: int
    peak: int
    first_day: str
    last_day: str
    bars: list[Bar] = field(default_factory=list)
    width: int = 0
    height: int = 0


# Drawing box of one chart (SVG user units); the page scales it to its width.
BAR_STEP, BAR_WIDTH, PLOT_HEIGHT, TOP_PAD = 20, 14, 120, 4


def _chart(slug: str, name: str, series: list[dict], total: int) -> UsageChart:
    peak = max((max(d["value"], 0) for d in series), default=0)
    bars = []
    for i, d in enumerate(series):
        value = max(d["value"], 0)  # a day of give-backs shows as empty, not below the axis
        h = 0 if not peak else max(1 if value else 0, round(PLOT_HEIGHT * value / peak))
        bars.append(Bar(day=d["period"], value=d["value"], x=i * BAR_STEP + (BAR_STEP - BAR_WIDTH) // 2,
                        y=TOP_PAD + PLOT_HEIGHT - h, height=h))
    return UsageChart(slug=slug, name=name, total=total, peak=peak, bars=bars,
                      first_day=series[0]["period"] if series else "", last_day=series[-1]["period"] if series else "",
                      width=len(series) * BAR_STEP, height=PLOT_HEIGHT + TOP_PAD)


def portal_usage_charts(*, customer: Customer, now: datetime, days: int = CHART_DAYS) -> list[UsageChart]:
    """Usage per day over the last ``days`` days (today included) of every
    metered feature the customer has a balance of, through the same aggregate
    as ``GET events/aggregate``; bar geometry computed here, drawn by the template."""
    balances, _flags = customer_balances(customer=customer)
    features = Feature.objects.filter(slug__in=list(balances), type=Feature.Type.METERED).order_by("slug")
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    names = _feature_names(f.slug for f in features)
    charts = []
    for feature in features:
        series, total = usage_aggregate(customer=customer, feature=feature, since=since, until=now, group_by="day")
        charts.append(_chart(feature.slug, names[feature.slug], series, total))
    return charts


# --- plans ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanOffer:
    slug: str
    name: str
    price: str
    features: list[str]
    scenario: str  # new | current | upgrade | downgrade
    kind: str  # plan | add_on | one_off


def portal_plan_offers(*, customer: Customer) -> list[PlanOffer]:
    """The pricing table for this customer: plans, then add-ons, then one-off purchases."""
    offers = []
    for row in pricing_table(customer=customer):
        product = row.product
        one_off = any(p.type == Price.Type.ONE_OFF for p in product.current_version.prices.all())
        kind = "one_off" if one_off else "add_on" if product.is_add_on else "plan"
        offers.append(PlanOffer(slug=product.slug, name=product.name, price=row.formatted_price, features=row.features,
                                scenario=row.scenario, kind=kind))
    return offers


# --- invoices and the card on file -------------------------------------------------------


def portal_invoices(*, customer: Customer, limit: int = 100) -> list[Invoice]:
    """The customer's invoices, newest first (void ones included: they were sent)."""
    return list(Invoice.objects.filter(customer=customer).order_by("-created_at", "-id")[:limit])


def portal_invoice(*, customer: Customer, invoice_id: str) -> Invoice:
    """One invoice of this customer with its lines and payments. Raises NotFound
    (unknown, or another customer's: the two are not told apart)."""
    invoice = (
        Invoice.objects.filter(pk=invoice_id, customer=customer)
        .select_related("customer", "subscription__product")
        .prefetch_related("lines", "payments")
        .first()
    )
    if invoice is None:
        raise NotFound("invoice", invoice_id)
    return invoice


def portal_payment_method(*, customer: Customer) -> PaymentMethod | None:
    return PaymentMethod.objects.filter(customer=customer, is_default=True).first()
