"""Revenue analytics read from our own rows: subscriptions (their price
snapshot) for MRR, churn and trial conversion, payments for revenue.

Every figure is per currency (no conversion); the README's "Analytics"
section defines each one. In short, with ``at`` an instant:

- a subscription is *paying at ``at``* when it has a recurring price, was
  activated (``current_period_start`` set; abandoned checkouts never were),
  its paid time had begun (``trial_end`` if it had a trial, ``created_at``
  otherwise), it had not ended (``ended_at`` null or after ``at``), it is not
  paused since before ``at``, and it is not a trial that never converted
  (still trialing, or ended at or before its ``trial_end``). ``past_due``
  counts: it is owed until it lapses. We keep no status history, so a pause
  that was resumed, or a coupon used up since, is not seen in the past.
- its monthly value: period price × quantity (``unit_amount`` snapshot; the
  version's tiers for a tiered price, via ``monthly_value``), less a live
  recurring coupon (percentage: × (100 - p) / 100; fixed: minus the value per
  period, never below 0), × the interval's monthly factor (week 52/12,
  month 1, year 1/12). The sum is rounded once, half up, to minor units.

The sums run in SQL (grouped by currency, interval and coupon, with one
filtered sum per instant, so a 36-month timeline is one query); only
subscriptions on a tiered price are valued one by one, since their price is
not a product of two columns.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db.models import BigIntegerField, Case, Count, Exists, F, OuterRef, Q, Sum, Value, When
from django.db.models.functions import Coalesce, Greatest, TruncMonth

from billing.models import Payment, Price, Subscription
from billing.money import round_minor
from billing.services.subscriptions import MONTHLY_FACTOR, monthly_value

WINDOW = timedelta(days=30)
RATE_PLACES = Decimal("0.0001")
MAX_MONTHS = 36


@dataclass(frozen=True, slots=True)
class CurrencyFigures:
    currency: str
    mrr: int
    arr: int
    active_subscriptions: int
    paying_customers: int
    arpu: int
    churn_rate: Decimal | None
    churned: int
    active_at_window_start: int
    trial_conversion_rate: Decimal | None
    trials_converted: int
    trials_ended: int


@dataclass(frozen=True, slots=True)
class Analytics:
    now: datetime
    window_start: datetime
    currency: str
    figures: CurrencyFigures
    by_currency: dict[str, CurrencyFigures] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MonthPoint:
    month: str  # "YYYY-MM"
    revenue: int
    mrr: int


# --- predicates ---------------------------------------------------------------


def _replaced() -> Exists:
    """The subscription was replaced by a plan change: the same customer got a
    subscription in the same slot at the instant it ended."""
    return Exists(
        Subscription.objects.filter(customer=OuterRef("customer"), slot=OuterRef("slot"), created_at=OuterRef("ended_at"))
        .exclude(pk=OuterRef("pk"))
    )


def _tiered() -> Exists:
    return Exists(Price.objects.filter(version=OuterRef("version"), type="recurring", tiers__isnull=False))


def _unconverted_trial() -> Q:
    trial = Q(trial_end__isnull=False)
    return trial & (Q(status=Subscription.Status.TRIALING) | Q(ended_at__lte=F("trial_end")))


def _paying_at(at: datetime) -> Q:
    """The subscriptions paying at ``at`` (see the module docstring)."""
    started = Q(trial_end__isnull=False, trial_end__lte=at) | Q(trial_end__isnull=True, created_at__lte=at)
    paused = Q(status=Subscription.Status.PAUSED) & (Q(paused_at__isnull=True) | Q(paused_at__lte=at))
    return (
        Q(billing_interval__in=list(MONTHLY_FACTOR), current_period_start__isnull=False)
        & ~Q(status=Subscription.Status.INCOMPLETE)
        & started
        & (Q(ended_at__isnull=True) | Q(ended_at__gt=at))
        & ~paused
        & ~_unconverted_trial()
    )


def _paid(qs):
    """Keep subscriptions with a price (a flat amount above 0, or tiers)."""
    return qs.annotate(tiered=_tiered()).filter(Q(unit_amount__gt=0) | Q(tiered=True))


def _paying(at: datetime):
    return _paid(Subscription.objects.filter(_paying_at(at)))


# --- MRR ----------------------------------------------------------------------


def _live_coupon() -> Q:
    return Q(coupon__isnull=False) & (Q(coupon_cycles_left__isnull=True) | Q(coupon_cycles_left__gt=0))


def _discounted(monthly: Decimal, *, percent: int, fixed_monthly: Decimal) -> Decimal:
    return max(monthly - fixed_monthly, Decimal(0)) * (100 - percent) / 100


def _mrr_exact(instants: list[datetime]) -> list[dict[str, Decimal]]:
    """Unrounded monthly value per currency of the subscriptions paying at
    each of ``instants``: one grouped query with one filtered sum per instant
    (plus one for the few subscriptions on tiered prices)."""
    live = _live_coupon()
    candidates = _paid(
        Subscription.objects.filter(
            billing_interval__in=list(MONTHLY_FACTOR), current_period_start__isnull=False, created_at__lte=max(instants)
        )
        .exclude(status=Subscription.Status.INCOMPLETE)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gt=min(instants)))
    ).annotate(
        percent=Case(When(live & Q(coupon__type="percentage"), then=F("coupon__value")), default=Value(0),
                     output_field=BigIntegerField()),
        fixed=Case(When(live & Q(coupon__type="fixed"), then=F("coupon__value")), default=Value(0),
                   output_field=BigIntegerField()),
    )
    net = Greatest(F("unit_amount") * F("quantity") - F("fixed"), Value(0), output_field=BigIntegerField())
    sums = {f"at{i}": Sum(net, filter=_paying_at(at), output_field=BigIntegerField()) for i, at in enumerate(instants)}
    totals: list[dict[str, Decimal]] = [defaultdict(Decimal) for _ in instants]
    flat = candidates.filter(tiered=False).values("currency", "billing_interval", "percent").annotate(**sums).order_by()
    for row in flat:
        factor = MONTHLY_FACTOR[row["billing_interval"]]
        for i in range(len(instants)):
            if row[f"at{i}"]:
                totals[i][row["currency"]] += Decimal(row[f"at{i}"]) * (100 - row["percent"]) / 100 * factor
    tiered = candidates.filter(tiered=True).annotate(
        **{f"at{i}": Case(When(_paying_at(at), then=Value(True)), default=Value(False)) for i, at in enumerate(instants)}
    ).select_related("version")
    for sub in tiered:
        monthly = monthly_value(sub.version, sub.quantity)
        fixed_monthly = Decimal(sub.fixed) * MONTHLY_FACTOR[sub.billing_interval]
        for i in range(len(instants)):
            if getattr(sub, f"at{i}"):
                totals[i][sub.currency] += _discounted(monthly, percent=sub.percent, fixed_monthly=fixed_monthly)
    return [dict(t) for t in totals]


def mrr_at(*, at: datetime) -> dict[str, int]:
    """MRR per currency at ``at``, rounded once, half up."""
    return {currency: round_minor(value) for currency, value in _mrr_exact([at])[0].items()}


# --- the summary --------------------------------------------------------------


def _rate(numerator: int, denominator: int) -> Decimal | None:
    if not denominator:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(RATE_PLACES, rounding=ROUND_HALF_UP)


def _counts(qs, **aggregates) -> dict[str, dict[str, int]]:
    return {row.pop("currency"): row for row in qs.values("currency").annotate(**aggregates).order_by()}


def analytics_summary(*, now: datetime, currency: str | None = None) -> Analytics:
    """Every figure per currency as of ``now``; the top-level ones for
    ``currency`` (default ``BILLING_DEFAULT_CURRENCY``). Churn and trial
    conversion look at the 30 days before ``now``: (now - 30 days, now]."""
    currency = currency or settings.BILLING_DEFAULT_CURRENCY
    start = now - WINDOW
    mrr = mrr_at(at=now)
    active = _counts(_paying(now), subscriptions=Count("id"), customers=Count("customer", distinct=True))
    at_start = _paying(start).annotate(replaced=_replaced())
    churn = _counts(
        at_start,
        base=Count("id"),
        churned=Count("id", filter=Q(ended_at__gt=start, ended_at__lte=now, replaced=False)),
    )
    trials = (
        _paid(Subscription.objects.filter(trial_end__gt=start, trial_end__lte=now, current_period_start__isnull=False))
        .exclude(status=Subscription.Status.TRIALING)
        .annotate(replaced=_replaced())
    )
    converted = Q(ended_at__isnull=True) | Q(ended_at__gt=F("trial_end")) | Q(replaced=True)
    trial_counts = _counts(trials, ended=Count("id"), converted=Count("id", filter=converted))

    by_currency = {}
    for cur in sorted({currency, *mrr, *active, *churn, *trial_counts}):
        m = mrr.get(cur, 0)
        a = active.get(cur, {"subscriptions": 0, "customers": 0})
        c = churn.get(cur, {"base": 0, "churned": 0})
        t = trial_counts.get(cur, {"ended": 0, "converted": 0})
        by_currency[cur] = CurrencyFigures(
            currency=cur,
            mrr=m,
            arr=12 * m,
            active_subscriptions=a["subscriptions"],
            paying_customers=a["customers"],
            arpu=round_minor(Decimal(m) / a["customers"]) if a["customers"] else 0,
            churn_rate=_rate(c["churned"], c["base"]),
            churned=c["churned"],
            active_at_window_start=c["base"],
            trial_conversion_rate=_rate(t["converted"], t["ended"]),
            trials_converted=t["converted"],
            trials_ended=t["ended"],
        )
    return Analytics(now=now, window_start=start, currency=currency, figures=by_currency[currency], by_currency=by_currency)


# --- the timeline ---------------------------------------------------------------


def _month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def _add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def revenue_timeline(*, now: datetime, months: int = 12, currency: str | None = None) -> list[MonthPoint]:
    """The last ``months`` calendar months (UTC), oldest first, the current one
    last. ``revenue``: succeeded charges minus succeeded refunds whose payment
    was made that month (cash basis). ``mrr``: MRR at the month's last instant
    (at ``now`` for the current month)."""
    if not 1 <= months <= MAX_MONTHS:
        raise ValueError(f"months must be 1..{MAX_MONTHS}")
    currency = currency or settings.BILLING_DEFAULT_CURRENCY
    current = _month_start(now)
    first = _add_months(current, -(months - 1))
    signed = Case(When(kind=Payment.Kind.REFUND, then=-F("amount")), default=F("amount"), output_field=BigIntegerField())
    cash = (
        Payment.objects.filter(status=Payment.Status.SUCCEEDED, currency=currency, created_at__gte=first, created_at__lte=now)
        # A charge the gateway made for an invoice no longer open is held and paid back
        # (2100, unapplied cash): it never was revenue, nor is its refund.
        .exclude(unapplied=True).exclude(refund_of__unapplied=True)
        .annotate(month=TruncMonth("created_at", tzinfo=UTC))
        .values("month")
        .annotate(net=Coalesce(Sum(signed), 0, output_field=BigIntegerField()))
        .order_by()
    )
    revenue = {row["month"].astimezone(UTC).strftime("%Y-%m"): row["net"] for row in cash}
    month_starts = [_add_months(first, i) for i in range(months)]
    month_ends = [min(_add_months(month, 1) - timedelta(microseconds=1), now) for month in month_starts]
    mrr = _mrr_exact(month_ends)
    return [
        MonthPoint(month=month.strftime("%Y-%m"), revenue=revenue.get(month.strftime("%Y-%m"), 0),
                   mrr=round_minor(mrr[i].get(currency, Decimal(0))))
        for i, month in enumerate(month_starts)
    ]
