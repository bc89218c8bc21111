from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from billing.api.base import ApiView
from billing.api.fields import (
    AmountField,
    CurrencyField,
    ExternalIdField,
    StrictCharField,
    StrictIntegerField,
    TimestampField,
)
from billing.api.pagination import decode_cursor, page, parse_limit
from billing.errors import ValidationFailed
from billing.models import Coupon
from billing.money import MAX_AMOUNT
from billing.selectors.catalog import product_get
from billing.selectors.coupons import coupon_check, coupon_list
from billing.selectors.customers import customer_get
from billing.services.coupons import coupon_archive, coupon_create, coupon_get, coupon_update

MAX_REDEMPTIONS = 2**31 - 1  # a PositiveIntegerField
RESERVED_CODES = frozenset({"validate"})  # coupons/validate is a route, not a coupon


# --- input ------------------------------------------------------------------


class CouponPatchIn(serializers.Serializer):
    name = StrictCharField(max_length=200, required=False, allow_blank=True)
    maxRedemptions = StrictIntegerField(min_value=1, max_value=MAX_REDEMPTIONS, required=False, allow_null=True,
                                        source="max_redemptions")
    expiresAt = TimestampField(required=False, allow_null=True, source="expires_at")

    FIXED = ("code", "type", "value", "currency", "duration", "durationMonths")

    def validate(self, attrs):
        if isinstance(self.initial_data, dict):
            for field in self.FIXED:
                if field in self.initial_data:
                    raise serializers.ValidationError({field: "cannot change after creation; create a new coupon"})
        return attrs


class CouponIn(serializers.Serializer):
    code = ExternalIdField(max_length=64)
    name = StrictCharField(max_length=200, required=False, allow_blank=True)
    type = serializers.ChoiceField(choices=Coupon.Type.values)
    value = StrictIntegerField(min_value=1, max_value=MAX_AMOUNT)
    currency = CurrencyField(required=False)
    duration = serializers.ChoiceField(choices=Coupon.Duration.values, required=False, default=Coupon.Duration.ONCE)
    durationMonths = StrictIntegerField(min_value=1, max_value=1200, required=False, allow_null=True,
                                        source="duration_months")
    maxRedemptions = StrictIntegerField(min_value=1, max_value=MAX_REDEMPTIONS, required=False, allow_null=True,
                                        source="max_redemptions")
    expiresAt = TimestampField(required=False, allow_null=True, source="expires_at")

    def validate_code(self, value):
        if value.lower() in RESERVED_CODES:
            raise serializers.ValidationError(f"{value!r} is reserved")
        return value


class ValidateIn(serializers.Serializer):
    code = StrictCharField(max_length=64)
    customer = ExternalIdField()
    product = StrictCharField(max_length=100)
    amount = AmountField()


# --- output -----------------------------------------------------------------


class CouponOut(serializers.Serializer):
    id = serializers.CharField()
    code = serializers.CharField()
    name = serializers.CharField()
    type = serializers.CharField()
    value = serializers.IntegerField()
    currency = serializers.SerializerMethodField()
    duration = serializers.CharField()
    durationMonths = serializers.IntegerField(source="duration_months", allow_null=True)
    maxRedemptions = serializers.IntegerField(source="max_redemptions", allow_null=True)
    timesRedeemed = serializers.IntegerField(source="times_redeemed")
    expiresAt = serializers.DateTimeField(source="expires_at", allow_null=True)
    archived = serializers.BooleanField()
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")

    def get_currency(self, coupon) -> str | None:
        return coupon.currency or None


class CouponListOut(serializers.Serializer):
    data = CouponOut(many=True)
    nextCursor = serializers.CharField(allow_null=True)


class ValidateOut(serializers.Serializer):
    valid = serializers.BooleanField()
    discountAmount = serializers.IntegerField()
    finalAmount = serializers.IntegerField()
    currency = serializers.CharField()
    reason = serializers.CharField(required=False, help_text="why the coupon does not apply (only when valid is false)")


def render_coupon(coupon: Coupon) -> dict:
    return CouponOut(coupon).data


def _archived_param(raw: str | None) -> bool | None:
    if raw in (None, ""):
        return None
    if raw not in ("true", "false"):
        raise ValidationFailed("archived", "must be true or false")
    return raw == "true"


# --- views ------------------------------------------------------------------


class CouponCollectionView(ApiView):
    audit_action = {"POST": "coupon.create"}

    @extend_schema(operation_id="createCoupon", request=CouponIn, responses={201: CouponOut})
    def post(self, request):
        v = self.validated(CouponIn)
        coupon = coupon_create(now=timezone.now(), **v)
        self.audit_target = ("coupon", coupon.pk)
        return Response(render_coupon(coupon), status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="listCoupons",
        parameters=[OpenApiParameter("archived", bool), OpenApiParameter("cursor", str), OpenApiParameter("limit", int)],
        responses={200: CouponListOut},
    )
    def get(self, request):
        archived = _archived_param(request.query_params.get("archived"))
        limit = parse_limit(request.query_params.get("limit"))
        before = decode_cursor(request.query_params.get("cursor"), kind=tuple)
        items = coupon_list(archived=archived, before=before, limit=limit + 1)
        return Response(page(items, limit=limit, render=render_coupon, by_time=True))


class CouponDetailView(ApiView):
    audit_action = {"PATCH": "coupon.update"}

    @extend_schema(operation_id="getCoupon", responses={200: CouponOut})
    def get(self, request, coupon_id: str):
        return Response(render_coupon(coupon_get(id_or_code=coupon_id)))

    @extend_schema(operation_id="updateCoupon", request=CouponPatchIn, responses={200: CouponOut})
    def patch(self, request, coupon_id: str):
        coupon = coupon_get(id_or_code=coupon_id)
        v = self.validated(CouponPatchIn)
        coupon = coupon_update(coupon=coupon, now=timezone.now(), **v)
        self.audit_target = ("coupon", coupon.pk)
        return Response(render_coupon(coupon))


class CouponArchiveView(ApiView):
    audit_action = {"POST": "coupon.archive"}

    @extend_schema(operation_id="archiveCoupon", request=None, responses={200: CouponOut})
    def post(self, request, coupon_id: str):
        coupon = coupon_archive(coupon=coupon_get(id_or_code=coupon_id), now=timezone.now())
        self.audit_target = ("coupon", coupon.pk)
        return Response(render_coupon(coupon))


class CouponValidateView(ApiView):
    publishable_allowed = True  # a read: the browser checks a code before checkout

    @extend_schema(operation_id="validateCoupon", request=ValidateIn, responses={200: ValidateOut})
    def post(self, request):
        v = self.validated(ValidateIn)
        customer_get(external_id=v["customer"])
        product = product_get(id_or_slug=v["product"])
        check = coupon_check(code=v["code"], product=product, amount=v["amount"], now=timezone.now())
        body = {"valid": check.valid, "discountAmount": check.discount, "finalAmount": check.final, "currency": check.currency}
        if not check.valid:
            body["reason"] = check.reason
        return Response(body)
