"""The service credits API (base /api/v1/credits/): debit, refund, balance.

Each view checks the signed request (``HmacAuthentication``) and its body,
makes one call to credits.services or credits.selectors and renders the
result. A replayed debit or refund answers the first response again, with
``Idempotent-Replayed: true``.
"""

from __future__ import annotations

import json

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.api.parsers import StrictJSONParser, check_text
from billing.api.throttling import ServiceRateThrottle
from credits.api.auth import HmacAuthentication, SignedServiceRequired
from credits.api.errors import exception_handler
from credits.models import CreditEntry
from credits.selectors import wallet_balance
from credits.services import InvalidRequest, check_amount, credit_debit, credit_refund

MAX_METADATA_BYTES = 8 * 1024


def _schema(name: str, **fields):
    return inline_serializer(name, fields)


_ERRORS = {
    400: OpenApiResponse(description="INVALID_REQUEST: bad shape, or an amount that is not a positive integer"),
    401: OpenApiResponse(description="UNAUTHORIZED: missing, bad, stale or replayed signature"),
}
_DEBIT_IN = _schema(
    "CreditDebitIn", workspaceId=serializers.CharField(), amount=serializers.IntegerField(min_value=1),
    jobId=serializers.CharField(), sourceService=serializers.CharField(),
    actorUserId=serializers.CharField(required=False), metadata=serializers.DictField(required=False),
    idempotencyKey=serializers.CharField(required=False),
)
_DEBIT_OUT = _schema(
    "CreditDebitOut", ledgerEntryId=serializers.CharField(), workspaceId=serializers.CharField(),
    amount=serializers.IntegerField(), jobId=serializers.CharField(), sourceService=serializers.CharField(),
    balanceSubscriptionAfter=serializers.IntegerField(), balanceTopupAfter=serializers.IntegerField(),
    totalBalanceAfter=serializers.IntegerField(), createdAt=serializers.DateTimeField(),
)
_REFUND_IN = _schema(
    "CreditRefundIn", workspaceId=serializers.CharField(), refundForJobId=serializers.CharField(),
    sourceService=serializers.CharField(), reason=serializers.CharField(),
    amount=serializers.IntegerField(min_value=1, required=False), idempotencyKey=serializers.CharField(required=False),
)
_REFUND_OUT = _schema(
    "CreditRefundOut", ledgerEntryId=serializers.CharField(), refundedAmount=serializers.IntegerField(),
    totalBalanceAfter=serializers.IntegerField(), workspaceId=serializers.CharField(),
    refundForJobId=serializers.CharField(), sourceService=serializers.CharField(),
    debitLedgerEntryId=serializers.CharField(), returnedAmount=serializers.IntegerField(),
    balanceSubscriptionAfter=serializers.IntegerField(), balanceTopupAfter=serializers.IntegerField(),
    createdAt=serializers.DateTimeField(),
)
_BALANCE_OUT = _schema(
    "CreditBalanceOut", workspaceId=serializers.CharField(), balanceSubscription=serializers.IntegerField(),
    balanceTopup=serializers.IntegerField(), total=serializers.IntegerField(), reserved=serializers.IntegerField(),
    unlimited=serializers.BooleanField(), frozen=serializers.BooleanField(),
    cycle=_schema("CreditCycle", planSnapshot=serializers.DictField(allow_null=True),
                  periodStart=serializers.DateTimeField(allow_null=True),
                  periodEnd=serializers.DateTimeField(allow_null=True)),
)


def _iso(moment) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


class CreditsView(APIView):
    """Signed requests only; errors in the credits table's codes."""

    authentication_classes = [HmacAuthentication]
    permission_classes = [SignedServiceRequired]
    throttle_classes = [ServiceRateThrottle]  # per X-Service-Name, after the signature is checked
    parser_classes = [StrictJSONParser]
    renderer_classes = [JSONRenderer]

    def get_exception_handler(self):
        return exception_handler

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        for name, value in kwargs.items():
            check_text(value, name)

    def body(self) -> dict:
        data = self.request.data
        if type(data) is not dict:
            raise InvalidRequest.field("body", "must be a JSON object")
        return data


class _Fields:
    """Plain checks of a JSON object's fields, collecting every problem."""

    def __init__(self, data: dict):
        self.data, self.errors = data, []

    def text(self, name: str, *, max_length: int, required: bool = True) -> str | None:
        value = self.data.get(name)
        if value is None:
            if required:
                self.errors.append({"field": name, "message": "is required"})
            return None
        if type(value) is not str or not value.strip():
            self.errors.append({"field": name, "message": "must be a non-empty string"})
            return None
        if len(value) > max_length:
            self.errors.append({"field": name, "message": f"must be at most {max_length} characters"})
            return None
        return value

    def amount(self, name: str, *, required: bool = True) -> int | None:
        if name not in self.data or (self.data[name] is None and not required):
            if required:
                self.errors.append({"field": name, "message": "is required"})
            return None
        try:
            return check_amount(self.data[name], name)
        except InvalidRequest as exc:
            self.errors.extend(exc.details)
            return None

    def metadata(self, name: str) -> dict:
        value = self.data.get(name)
        if value is None:
            return {}
        if type(value) is not dict:
            self.errors.append({"field": name, "message": "must be a JSON object"})
            return {}
        if len(json.dumps(value)) > MAX_METADATA_BYTES:
            self.errors.append({"field": name, "message": f"must be at most {MAX_METADATA_BYTES} bytes as JSON"})
            return {}
        return value

    def done(self) -> None:
        if self.errors:
            first = self.errors[0]
            raise InvalidRequest(f"{first['field']}: {first['message']}", details=self.errors)


def _replayed(response: Response, replayed: bool) -> Response:
    if replayed:
        response["Idempotent-Replayed"] = "true"
    return response


class DebitView(CreditsView):
    @extend_schema(
        operation_id="debitCredits", tags=["credits"], request=_DEBIT_IN,
        responses={201: _DEBIT_OUT, **_ERRORS,
                   402: OpenApiResponse(description="INSUFFICIENT_CREDITS: details {required, available}"),
                   404: OpenApiResponse(description="WORKSPACE_NOT_FOUND"),
                   409: OpenApiResponse(description="DUPLICATE_REQUEST: details hold the prior entry"),
                   423: OpenApiResponse(description="WALLET_LOCKED: frozen by staff")},
    )
    def post(self, request):
        fields = _Fields(self.body())
        workspace_id = fields.text("workspaceId", max_length=255)
        amount = fields.amount("amount")
        job_id = fields.text("jobId", max_length=255)
        source_service = fields.text("sourceService", max_length=100)
        actor_user_id = fields.text("actorUserId", max_length=255, required=False)
        metadata = fields.metadata("metadata")
        idempotency_key = fields.text("idempotencyKey", max_length=255, required=False)
        fields.done()
        result = credit_debit(
            workspace_id=workspace_id, amount=amount, job_id=job_id, source_service=source_service,
            idempotency_key=idempotency_key, actor_user_id=actor_user_id or "", metadata=metadata,
            caller=request.user.name, now=timezone.now(),
        )
        return _replayed(Response(debit_body(result.entry, result.workspace_id), status=201), result.replayed)


def debit_body(entry: CreditEntry, workspace_id: str) -> dict:
    return {
        "ledgerEntryId": entry.pk,
        "workspaceId": workspace_id,
        "amount": entry.amount,
        "jobId": entry.job_id,
        "sourceService": entry.source_service,
        "balanceSubscriptionAfter": entry.balance_subscription_after,
        "balanceTopupAfter": entry.balance_topup_after,
        "totalBalanceAfter": entry.total_after,
        "createdAt": _iso(entry.created_at),
    }


class RefundView(CreditsView):
    @extend_schema(
        operation_id="refundCredits", tags=["credits"], request=_REFUND_IN,
        responses={201: _REFUND_OUT, **_ERRORS,
                   404: OpenApiResponse(description="WORKSPACE_NOT_FOUND or DEBIT_NOT_FOUND"),
                   409: OpenApiResponse(description="DUPLICATE_REQUEST: refunded in full already, or key reused")},
    )
    def post(self, request):
        fields = _Fields(self.body())
        workspace_id = fields.text("workspaceId", max_length=255)
        job_id = fields.text("refundForJobId", max_length=255)
        source_service = fields.text("sourceService", max_length=100)
        reason = fields.text("reason", max_length=500)
        amount = fields.amount("amount", required=False)
        idempotency_key = fields.text("idempotencyKey", max_length=255, required=False)
        fields.done()
        result = credit_refund(
            workspace_id=workspace_id, refund_for_job_id=job_id, source_service=source_service, reason=reason,
            amount=amount, idempotency_key=idempotency_key, caller=request.user.name, now=timezone.now(),
        )
        entry = result.entry
        body = {
            "ledgerEntryId": entry.pk,
            "refundedAmount": entry.amount,
            "totalBalanceAfter": entry.total_after,
            "workspaceId": result.workspace_id,
            "refundForJobId": entry.job_id,
            "sourceService": entry.source_service,
            "debitLedgerEntryId": result.debit.pk,
            "returnedAmount": entry.returned,
            "balanceSubscriptionAfter": entry.balance_subscription_after,
            "balanceTopupAfter": entry.balance_topup_after,
            "createdAt": _iso(entry.created_at),
        }
        return _replayed(Response(body, status=201), result.replayed)


class BalanceView(CreditsView):
    @extend_schema(operation_id="getCreditBalance", tags=["credits"],
                   responses={200: _BALANCE_OUT, 401: _ERRORS[401],
                              404: OpenApiResponse(description="WORKSPACE_NOT_FOUND")})
    def get(self, request, workspace_id: str):
        wallet = wallet_balance(workspace_id=workspace_id, now=timezone.now())
        return Response({
            "workspaceId": workspace_id,
            "balanceSubscription": wallet.balance_subscription,
            "balanceTopup": wallet.balance_topup,
            "total": wallet.total,
            "reserved": wallet.reserved,
            "unlimited": wallet.unlimited,
            "frozen": wallet.frozen,
            "cycle": {
                "planSnapshot": wallet.plan_snapshot,
                "periodStart": _iso(wallet.period_start),
                "periodEnd": _iso(wallet.period_end),
            },
        })
