from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from billing.api.base import ApiView, query_time
from billing.api.pagination import decode_cursor, page, parse_limit
from billing.errors import ValidationFailed
from billing.money import CURRENCY_RE
from ledger.selectors import entry_list, trial_balance


class TrialBalanceRowOut(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    type = serializers.CharField()
    debit = serializers.IntegerField()
    credit = serializers.IntegerField()
    balance = serializers.IntegerField()
    currency = serializers.CharField()


class TrialBalanceOut(serializers.Serializer):
    accounts = TrialBalanceRowOut(many=True)
    totalDebit = serializers.IntegerField(source="total_debit")
    totalCredit = serializers.IntegerField(source="total_credit")
    totalsByCurrency = serializers.DictField(source="totals_by_currency", child=serializers.DictField())


class LineOut(serializers.Serializer):
    account = serializers.CharField(source="account_id")
    side = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()


class EntryOut(serializers.Serializer):
    id = serializers.IntegerField()
    postedAt = serializers.DateTimeField(source="posted_at")
    memo = serializers.CharField()
    source = serializers.CharField()
    reversalOf = serializers.IntegerField(source="reversal_of_id", allow_null=True)
    lines = LineOut(many=True, source="lines.all")


class EntryListOut(serializers.Serializer):
    data = EntryOut(many=True)
    nextCursor = serializers.CharField(allow_null=True)


class TrialBalanceView(ApiView):
    @extend_schema(
        operation_id="trialBalance",
        parameters=[OpenApiParameter("at", str, description="ISO 8601 or epoch ms"), OpenApiParameter("currency", str)],
        responses={200: TrialBalanceOut},
    )
    def get(self, request):
        currency = request.query_params.get("currency") or None
        if currency is not None and not CURRENCY_RE.match(currency):
            raise ValidationFailed("currency", "must be a lowercase three-letter ISO 4217 code")
        result = trial_balance(at=query_time(request, "at"), currency=currency)
        return Response(TrialBalanceOut(result).data)


class LedgerEntryListView(ApiView):
    @extend_schema(
        operation_id="listLedgerEntries",
        parameters=[
            OpenApiParameter("since", str, description="ISO 8601 or epoch ms"),
            OpenApiParameter("account", str),
            OpenApiParameter("cursor", str),
            OpenApiParameter("limit", int),
        ],
        responses={200: EntryListOut},
    )
    def get(self, request):
        limit = parse_limit(request.query_params.get("limit"))
        entries = entry_list(
            since=query_time(request, "since"),
            account=request.query_params.get("account") or None,
            before_id=decode_cursor(request.query_params.get("cursor")),
            limit=limit + 1,
        )
        return Response(page(entries, limit=limit, render=lambda e: EntryOut(e).data))
