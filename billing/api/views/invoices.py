from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from billing.api.base import ApiView
from billing.api.fields import StrictCharField
from billing.api.pagination import decode_cursor, page, parse_limit
from billing.errors import ValidationFailed
from billing.models import Invoice
from billing.selectors.customers import customer_get
from billing.selectors.subscriptions import invoice_get, invoice_list
from billing.services.payments import payment_method_attach


class InvoiceLineOut(serializers.Serializer):
    number = serializers.IntegerField()
    kind = serializers.CharField()
    description = serializers.CharField()
    quantity = serializers.IntegerField()
    unitAmount = serializers.IntegerField(source="unit_amount")
    amount = serializers.IntegerField()


class InvoiceOut(serializers.Serializer):
    id = serializers.CharField()
    number = serializers.CharField()
    customer = serializers.CharField(source="customer.external_id")
    subscription = serializers.CharField(source="subscription_id", allow_null=True)
    reason = serializers.CharField()
    status = serializers.CharField()
    currency = serializers.CharField()
    lines = InvoiceLineOut(many=True, source="lines.all")
    subtotal = serializers.IntegerField()
    discount = serializers.IntegerField()
    total = serializers.IntegerField()
    amountPaid = serializers.IntegerField(source="amount_paid")
    amountRefunded = serializers.IntegerField(source="amount_refunded")
    attempts = serializers.IntegerField()
    nextAttemptAt = serializers.DateTimeField(source="next_attempt_at", allow_null=True)
    periodStart = serializers.DateTimeField(source="period_start", allow_null=True)
    periodEnd = serializers.DateTimeField(source="period_end", allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at")
    paidAt = serializers.DateTimeField(source="paid_at", allow_null=True)


def render_invoice(invoice: Invoice) -> dict:
    return InvoiceOut(invoice).data


class InvoiceListOut(serializers.Serializer):
    data = InvoiceOut(many=True)
    nextCursor = serializers.CharField(allow_null=True)


class InvoiceListView(ApiView):
    @extend_schema(
        operation_id="listInvoices",
        parameters=[OpenApiParameter("customer", str), OpenApiParameter("status", str),
                    OpenApiParameter("cursor", str), OpenApiParameter("limit", int)],
        responses={200: InvoiceListOut},
    )
    def get(self, request):
        status = request.query_params.get("status")
        if status and status not in Invoice.Status.values:
            raise ValidationFailed("status", f"one of {', '.join(Invoice.Status.values)}")
        customer_id = request.query_params.get("customer")
        customer = customer_get(external_id=customer_id) if customer_id else None
        limit = parse_limit(request.query_params.get("limit"))
        before = decode_cursor(request.query_params.get("cursor"), kind=tuple)
        items = invoice_list(status=status, customer=customer, before=before, limit=limit + 1)
        return Response(page(items, limit=limit, render=render_invoice, by_time=True))


class InvoiceDetailView(ApiView):
    @extend_schema(operation_id="getInvoice", responses={200: InvoiceOut})
    def get(self, request, invoice_id: str):
        return Response(render_invoice(invoice_get(invoice_id=invoice_id)))


class PaymentMethodIn(serializers.Serializer):
    paymentMethod = StrictCharField(max_length=255)


class PaymentMethodOut(serializers.Serializer):
    id = serializers.CharField()
    gateway = serializers.CharField()
    gatewayId = serializers.CharField(source="gateway_id")
    brand = serializers.CharField()
    last4 = serializers.CharField()
    isDefault = serializers.BooleanField(source="is_default")
    createdAt = serializers.DateTimeField(source="created_at")


class PaymentMethodView(ApiView):
    audit_action = {"POST": "payment_method.attach"}

    @extend_schema(operation_id="attachPaymentMethod", request=PaymentMethodIn, responses={200: PaymentMethodOut})
    def post(self, request, customer_id: str):
        customer = customer_get(external_id=customer_id)
        v = self.validated(PaymentMethodIn)
        pm = payment_method_attach(customer=customer, payment_method=v["paymentMethod"], now=timezone.now())
        self.audit_target = ("customer", customer.external_id)
        return Response(PaymentMethodOut(pm).data)
