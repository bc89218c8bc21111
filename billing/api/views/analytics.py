from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from billing.api.base import ApiView
from billing.errors import ValidationFailed
from billing.money import CURRENCY_RE
from billing.selectors.analytics import MAX_MONTHS, analytics_summary, revenue_timeline


class FiguresOut(serializers.Serializer):
    mrr = serializers.IntegerField()
    arr = serializers.IntegerField()
    activeSubscriptions = serializers.IntegerField(source="active_subscriptions")
    payingCustomers = serializers.IntegerField(source="paying_customers")
    arpu = serializers.IntegerField()
    churnRate = serializers.DecimalField(source="churn_rate", max_digits=5, decimal_places=4, coerce_to_string=False,
                                         allow_null=True, help_text="null when nothing was paying at the window start")
    churned = serializers.IntegerField()
    activeAtWindowStart = serializers.IntegerField(source="active_at_window_start")
    trialConversionRate = serializers.DecimalField(source="trial_conversion_rate", max_digits=5, decimal_places=4,
                                                   coerce_to_string=False, allow_null=True,
                                                   help_text="null when no trial ended in the window")
    trialsConverted = serializers.IntegerField(source="trials_converted")
    trialsEnded = serializers.IntegerField(source="trials_ended")


class AnalyticsOut(FiguresOut):
    currency = serializers.CharField()
    windowStart = serializers.DateTimeField()
    windowEnd = serializers.DateTimeField()
    byCurrency = serializers.DictField(child=FiguresOut())


class MonthOut(serializers.Serializer):
    month = serializers.CharField(help_text="YYYY-MM (UTC)")
    revenue = serializers.IntegerField()
    mrr = serializers.IntegerField()


class TimelineOut(serializers.Serializer):
    currency = serializers.CharField()
    data = MonthOut(many=True)


def _currency_param(request) -> str | None:
    currency = request.query_params.get("currency") or None
    if currency is not None and not CURRENCY_RE.match(currency):
        raise ValidationFailed("currency", "must be a lowercase three-letter ISO 4217 code")
    return currency


def _months_param(request) -> int:
    raw = request.query_params.get("months")
    if raw in (None, ""):
        return 12
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_MONTHS:
        raise ValidationFailed("months", f"must be a whole number from 1 to {MAX_MONTHS}")
    return int(raw)


class AnalyticsView(ApiView):
    @extend_schema(
        operation_id="analytics",
        parameters=[OpenApiParameter("currency", str, description="the top-level figures' currency "
                                                                  "(default BILLING_DEFAULT_CURRENCY)")],
        responses={200: AnalyticsOut},
    )
    def get(self, request):
        result = analytics_summary(now=timezone.now(), currency=_currency_param(request))
        body = dict(FiguresOut(result.figures).data)
        body.update(
            currency=result.currency,
            windowStart=serializers.DateTimeField().to_representation(result.window_start),
            windowEnd=serializers.DateTimeField().to_representation(result.now),
            byCurrency={cur: FiguresOut(figures).data for cur, figures in result.by_currency.items()},
        )
        return Response(body)


class RevenueTimelineView(ApiView):
    @extend_schema(
        operation_id="revenueTimeline",
        parameters=[OpenApiParameter("months", int, description=f"1..{MAX_MONTHS}, default 12"),
                    OpenApiParameter("currency", str)],
        responses={200: TimelineOut},
    )
    def get(self, request):
        months = _months_param(request)
        currency = _currency_param(request)
        points = revenue_timeline(now=timezone.now(), months=months, currency=currency)
        return Response({"currency": currency or settings.BILLING_DEFAULT_CURRENCY,
                         "data": [MonthOut(p).data for p in points]})
