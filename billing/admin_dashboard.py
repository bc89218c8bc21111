"""The staff console's dashboard (/admin/dashboard/): revenue figures, a
12-month MRR and revenue chart drawn as inline SVG on the server (no script,
no CDN), the ledger's trial balance, failing webhook endpoints and frozen
credit wallets. Read-only; every figure comes from a selector.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.contrib import admin
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from billing.money import money_format
from billing.selectors.analytics import MonthPoint, analytics_summary, revenue_timeline
from billing.selectors.webhooks import webhook_endpoints_failing
from credits.models import Wallet
from ledger.selectors import trial_balance

CHART_MONTHS = 12
WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 84, 12, 16, 40
MRR_COLOUR, REVENUE_COLOUR = "#205067", "#79aec8"


def percent(rate: Decimal | None) -> str:
    """0.1111 → "11.11 %"; None (no denominator) → "–"."""
    return "–" if rate is None else f"{rate * 100:.2f} %"


def _ticks(low: int, high: int, count: int = 4) -> list[int]:
    """Gridline values from at most ``low`` to at least ``high`` in round steps (1, 2 or 5 × 10^k)."""
    raw = max(1, -(-(high - low) // count))
    magnitude = 10 ** (len(str(raw)) - 1)
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = (low // step) * step
    ticks = [start]
    while ticks[-1] < high:
        ticks.append(ticks[-1] + step)
    return ticks


def chart_svg(points: list[MonthPoint], currency: str) -> SafeString:
    """Revenue per month as bars, MRR at each month's end as a line, one
    shared axis in the currency's major units. Every value is an int we made
    and every label is escaped."""
    values = [v for p in points for v in (p.revenue, p.mrr)]
    low, high = min(0, *values), max(1, *values)
    ticks = _ticks(low, high)
    low, high = ticks[0], ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(points)

    def y(value: int) -> float:
        return TOP + plot_h * (high - value) / (high - low)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
        f'role="img" aria-labelledby="chart-title" id="mrr-revenue-chart" style="max-width:{WIDTH}px">',
        f'<title id="chart-title">MRR and revenue per month, {escape(currency.upper())}</title>',
    ]
    for tick in ticks:
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     f'stroke="#ddd" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11" fill="#666">'
                     f'{escape(money_format(tick, currency))}</text>')
    zero = y(0)
    line = []
    for i, p in enumerate(points):
        x = LEFT + i * slot
        top, bottom = sorted((y(p.revenue), zero))
        parts.append(f'<rect class="revenue" x="{x + slot * 0.2:.1f}" y="{top:.1f}" width="{slot * 0.6:.1f}" '
                     f'height="{max(bottom - top, 0):.1f}" fill="{REVENUE_COLOUR}">'
                     f'<title>{escape(p.month)} revenue {escape(money_format(p.revenue, currency))}</title></rect>')
        parts.append(f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="11" '
                     f'fill="#666">{escape(p.month)}</text>')
        line.append((x + slot / 2, y(p.mrr), p))
    parts.append('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
        MRR_COLOUR, " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy, _ in line)))
    for cx, cy, p in line:
        parts.append(f'<circle class="mrr" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{MRR_COLOUR}">'
                     f'<title>{escape(p.month)} MRR {escape(money_format(p.mrr, currency))}</title></circle>')
    legend_y = HEIGHT - 8
    parts.append(f'<rect x="{LEFT}" y="{legend_y - 9}" width="12" height="10" fill="{REVENUE_COLOUR}"/>'
                 f'<text x="{LEFT + 16}" y="{legend_y}" font-size="11">Revenue (cash, in the month)</text>'
                 f'<line x1="{LEFT + 210}" x2="{LEFT + 232}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
                 f'stroke="{MRR_COLOUR}" stroke-width="2"/>'
                 f'<text x="{LEFT + 238}" y="{legend_y}" font-size="11">MRR at the month\'s end</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))


@dataclass(frozen=True)
class Card:
    label: str
    value: str
    note: str = ""


def dashboard_view(request):
    now = timezone.now()
    summary = analytics_summary(now=now)
    currency = summary.currency
    figures = summary.figures
    points = revenue_timeline(now=now, months=CHART_MONTHS, currency=currency)
    cards = [
        Card("MRR", money_format(figures.mrr, currency), f"{figures.active_subscriptions} paying subscriptions"),
        Card("ARR", money_format(figures.arr, currency), "12 × MRR"),
        Card("Active subscriptions", str(figures.active_subscriptions), f"{figures.paying_customers} paying customers"),
        Card("Churn, 30 days", percent(figures.churn_rate),
             f"{figures.churned} of {figures.active_at_window_start} ended"),
        Card("ARPU", money_format(figures.arpu, currency), "MRR / paying customers"),
        Card("Trial conversion, 30 days", percent(figures.trial_conversion_rate),
             f"{figures.trials_converted} of {figures.trials_ended} trials"),
    ]
    other_currencies = [
        {"currency": cur, "mrr": money_format(f.mrr, cur), "arr": money_format(f.arr, cur),
         "active": f.active_subscriptions, "churn": percent(f.churn_rate), "arpu": money_format(f.arpu, cur),
         "trials": percent(f.trial_conversion_rate)}
        for cur, f in summary.by_currency.items() if cur != currency
    ]
    may_see_ledger = request.user.has_perm("ledger.view_line")
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "now": now,
        "currency": currency,
        "cards": cards,
        "other_currencies": other_currencies,
        "chart": chart_svg(points, currency),
        "points": [{"month": p.month, "revenue": money_format(p.revenue, currency),
                    "mrr": money_format(p.mrr, currency)} for p in points],
        "may_see_ledger": may_see_ledger,
        "balance": trial_balance() if may_see_ledger else None,
        "failing_webhooks": webhook_endpoints_failing(now=now),
        "frozen_wallets": list(Wallet.objects.filter(frozen=True).select_related("customer").order_by("-frozen_at", "pk")),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)
