from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from billing.api.base import ApiView
from billing.api.fields import ExternalIdField, StrictCharField, StrictIntegerField
from billing.api.pagination import decode_cursor, page, parse_limit
from billing.api.views.customers import SubscriptionOut
from billing.api.views.invoices import render_invoice
from billing.errors import ValidationFailed
from billing.models import ApiKey, Subscription
from billing.selectors.catalog import product_get
from billing.selectors.customers import customer_get
from billing.selectors.subscriptions import subscription_list
from billing.services.customers import customer_get_or_create
from billing.services.subscriptions import (
    cancel,
    live_subscription,
    quote_attach,
    quote_update,
    subscribe,
    subscription_update,
)


@extend_schema_field({
    "oneOf": [
        {"type": "string", "description": "a customer id"},
        {"type": "object", "required": ["id"], "properties": {
            "id": {"type": "string"}, "email": {"type": "string", "format": "email"}, "name": {"type": "string"}}},
    ]
})
class CustomerRefField(serializers.Field):
    """A customer id, or {id, email?, name?} to create one on the way."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = {"id": data}
        if not isinstance(data, dict):
            raise serializers.ValidationError("must be a customer id or {id, email?, name?}")
        inner = _CustomerRefIn(data=data)
        inner.is_valid(raise_exception=True)
        return inner.validated_data

    def to_representation(self, value):
        return value


class _CustomerRefIn(serializers.Serializer):
    id = ExternalIdField()
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    name = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")


class _EnabledIn(serializers.Serializer):
    enabled = serializers.BooleanField()


class _CarryUsagesIn(serializers.Serializer):
    enabled = serializers.BooleanField()
    featureIds = serializers.ListField(child=StrictCharField(max_length=100), required=False, max_length=200)


class SubscribeIn(serializers.Serializer):
    customer = CustomerRefField()
    product = StrictCharField(max_length=100)
    quantity = StrictIntegerField(min_value=1, max_value=100_000, required=False, default=1)
    coupon = StrictCharField(max_length=64, required=False, allow_null=True)
    successUrl = serializers.URLField(max_length=2000, required=False, allow_blank=True, default="")
    cancelUrl = serializers.URLField(max_length=2000, required=False, allow_blank=True, default="")
    carryOverBalances = _EnabledIn(required=False)
    carryOverUsages = _CarryUsagesIn(required=False)


class RequiredActionOut(serializers.Serializer):
    code = serializers.ChoiceField(choices=["payment_failed", "3ds_required"])
    reason = serializers.CharField()


class SubscribeOut(serializers.Serializer):
    subscription = SubscriptionOut(allow_null=True)
    invoice = serializers.DictField(allow_null=True)
    url = serializers.CharField(allow_null=True)
    requiredAction = RequiredActionOut(allow_null=True)


class PreviewAttachIn(serializers.Serializer):
    customer = ExternalIdField()
    product = StrictCharField(max_length=100)
    quantity = StrictIntegerField(min_value=1, max_value=100_000, required=False, default=1)
    coupon = StrictCharField(max_length=64, required=False, allow_null=True)


class LineItemOut(serializers.Serializer):
    title = serializers.CharField()
    kind = serializers.CharField()
    quantity = serializers.IntegerField()
    amount = serializers.IntegerField()


class PreviewAttachOut(serializers.Serializer):
    scenario = serializers.CharField()
    lineItems = LineItemOut(many=True)
    total = serializers.IntegerField()
    currency = serializers.CharField()
    dueNow = serializers.IntegerField()
    nextCycleAt = serializers.DateTimeField(allow_null=True)


def _line_items(lines) -> list[dict]:
    return [{"title": line.description, "kind": line.kind, "quantity": line.quantity, "amount": line.amount} for line in lines]


def _render_sub(sub):
    if sub is None:
        return None
    sub.refresh_from_db()
    return SubscriptionOut(sub).data


class SubscribeView(ApiView):
    publishable_allowed = True  # checkout only: a pk key never charges a saved card
    audit_action = {"POST": "subscription.create"}

    @extend_schema(operation_id="subscribe", request=SubscribeIn, responses={200: SubscribeOut})
    def post(self, request):
        v = self.validated(SubscribeIn)
        product = product_get(id_or_slug=v["product"])
        now = timezone.now()
        ref = v["customer"]
        publishable = request.auth.type == ApiKey.Type.PUBLISHABLE
        if publishable:
            customer = customer_get(external_id=ref["id"])
            quote = quote_attach(customer=customer, product=product, quantity=v["quantity"], now=now, coupon_code=v.get("coupon"))
            if quote.scenario not in ("new", "topup") or not quote.lines:
                raise exceptions.PermissionDenied("A publishable key may only start a checkout for a paid product.")
        else:
            customer, _ = customer_get_or_create(external_id=ref["id"], name=ref["name"], email=ref["email"], now=now)
        result = subscribe(
            customer=customer, product=product, quantity=v["quantity"], now=now, coupon_code=v.get("coupon"),
            success_url=v["successUrl"], cancel_url=v["cancelUrl"],
            carry_over_balances=v.get("carryOverBalances", {}).get("enabled", False),
            carry_over_usages=v.get("carryOverUsages", {}).get("enabled", False),
            carry_over_features=v.get("carryOverUsages", {}).get("featureIds"),
            checkout_only=publishable,
        )
        self.audit_target = ("customer", customer.external_id)
        return Response({
            "subscription": _render_sub(result.subscription),
            "invoice": render_invoice(result.invoice) if result.invoice is not None else None,
            "url": result.url,
            "requiredAction": result.required_action,
        })


class PreviewAttachView(ApiView):
    @extend_schema(operation_id="previewAttach", request=PreviewAttachIn, responses={200: PreviewAttachOut})
    def post(self, request):
        v = self.validated(PreviewAttachIn)
        customer = customer_get(external_id=v["customer"])
        product = product_get(id_or_slug=v["product"])
        quote = quote_attach(customer=customer, product=product, quantity=v["quantity"], now=timezone.now(), coupon_code=v.get("coupon"))
        return Response({
            "scenario": quote.scenario, "lineItems": _line_items(quote.lines), "total": quote.total,
            "currency": quote.currency, "dueNow": quote.due_now, "nextCycleAt": quote.next_cycle_at,
        })


class UpdateIn(serializers.Serializer):
    customer = ExternalIdField()
    product = StrictCharField(max_length=100)
    cancelAction = serializers.ChoiceField(choices=["cancel_end_of_cycle", "uncancel", "cancel_immediately"], required=False)
    pause = serializers.BooleanField(required=False)
    quantity = StrictIntegerField(min_value=1, max_value=100_000, required=False)

    def validate(self, attrs):
        given = [k for k in ("cancelAction", "pause", "quantity") if k in attrs]
        if len(given) != 1:
            raise serializers.ValidationError({"cancelAction": "give exactly one of cancelAction, pause or quantity"})
        return attrs


class UpdateOut(serializers.Serializer):
    subscription = SubscriptionOut()
    invoice = serializers.DictField(allow_null=True)
    refund = serializers.IntegerField()
    requiredAction = RequiredActionOut(allow_null=True)


class PreviewUpdateOut(serializers.Serializer):
    lineItems = LineItemOut(many=True)
    total = serializers.IntegerField()
    refund = serializers.IntegerField()


def _update_args(v) -> dict:
    return {"cancel_action": v.get("cancelAction"), "pause": v.get("pause"), "quantity": v.get("quantity")}


class UpdateSubscriptionView(ApiView):
    audit_action = {"POST": "subscription.update"}

    @extend_schema(operation_id="updateSubscription", request=UpdateIn, responses={200: UpdateOut})
    def post(self, request):
        v = self.validated(UpdateIn)
        customer = customer_get(external_id=v["customer"])
        product = product_get(id_or_slug=v["product"])
        result = subscription_update(customer=customer, product=product, now=timezone.now(), **_update_args(v))
        self.audit_target = ("subscription", result.subscription.pk)
        return Response({
            "subscription": SubscriptionOut(result.subscription).data,
            "invoice": render_invoice(result.invoice) if result.invoice is not None else None,
            "refund": result.refund,
            "requiredAction": result.required_action,
        })


class PreviewUpdateView(ApiView):
    @extend_schema(operation_id="previewUpdate", request=UpdateIn, responses={200: PreviewUpdateOut})
    def post(self, request):
        v = self.validated(UpdateIn)
        customer = customer_get(external_id=v["customer"])
        product = product_get(id_or_slug=v["product"])
        q = quote_update(sub=live_subscription(customer, product), now=timezone.now(), **_update_args(v))
        return Response({"lineItems": _line_items(q.lines), "total": q.total, "refund": q.refund})


class CancelIn(serializers.Serializer):
    customer = ExternalIdField()
    product = StrictCharField(max_length=100, required=False)
    immediately = serializers.BooleanField(required=False, default=False)


class CancelOut(serializers.Serializer):
    subscription = SubscriptionOut()


class CancelView(ApiView):
    audit_action = {"POST": "subscription.cancel"}

    @extend_schema(operation_id="cancel", request=CancelIn, responses={200: CancelOut})
    def post(self, request):
        v = self.validated(CancelIn)
        customer = customer_get(external_id=v["customer"])
        product = product_get(id_or_slug=v["product"]) if v.get("product") else None
        sub = cancel(customer=customer, product=product, immediately=v["immediately"], now=timezone.now())
        self.audit_target = ("subscription", sub.pk)
        return Response({"subscription": SubscriptionOut(sub).data})


class SubscriptionListOut(serializers.Serializer):
    data = SubscriptionOut(many=True)
    nextCursor = serializers.CharField(allow_null=True)


class SubscriptionListView(ApiView):
    @extend_schema(
        operation_id="listSubscriptions",
        parameters=[OpenApiParameter("status", str), OpenApiParameter("customer", str),
                    OpenApiParameter("cursor", str), OpenApiParameter("limit", int)],
        responses={200: SubscriptionListOut},
    )
    def get(self, request):
        status = request.query_params.get("status")
        if status and status not in Subscription.Status.values:
            raise ValidationFailed("status", f"one of {', '.join(Subscription.Status.values)}")
        customer_id = request.query_params.get("customer")
        customer = customer_get(external_id=customer_id) if customer_id else None
        limit = parse_limit(request.query_params.get("limit"))
        before = decode_cursor(request.query_params.get("cursor"), kind=tuple)
        items = subscription_list(status=status, customer=customer, before=before, limit=limit + 1)
        return Response(page(items, limit=limit, render=lambda s: SubscriptionOut(s).data, by_time=True))
