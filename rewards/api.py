"""Merchant API views of reward programs and referral codes (secret key only):
validate, make one domain call, render."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response

from billing.api.base import ApiView
from billing.api.fields import AmountField, ExternalIdField, StrictBooleanField, StrictCharField, StrictIntegerField
from billing.api.pagination import decode_cursor, page, parse_limit
from billing.errors import ValidationFailed
from billing.selectors.customers import customer_get
from rewards.models import ReferralRedemption, RewardProgram
from rewards.selectors import referral_code_list, reward_program_list
from rewards.services import (
    grant_data,
    referral_code_create,
    referral_code_redeem,
    reward_program_create,
    reward_program_get,
)

MAX_COUNT = 2**31 - 1  # a PositiveIntegerField


# --- input ------------------------------------------------------------------


class RewardProgramIn(serializers.Serializer):
    name = StrictCharField(max_length=200)
    trigger = serializers.ChoiceField(choices=RewardProgram.Trigger.values)
    recipient = serializers.ChoiceField(choices=RewardProgram.Recipient.values)
    rewardType = serializers.ChoiceField(choices=RewardProgram.RewardType.values, source="reward_type")
    feature = StrictCharField(max_length=100, required=False, allow_null=True, source="feature_slug",
                              help_text="credits: the metered feature the credits go to (e.g. credits)")
    creditAmount = AmountField(min_value=1, required=False, allow_null=True, source="credit_amount",
                               help_text="credits: units granted to each recipient, never expiring")
    coupon = StrictCharField(max_length=64, required=False, allow_null=True, help_text="coupon: the coupon's id or code")
    maxRedemptionsPerReferrer = StrictIntegerField(min_value=1, max_value=MAX_COUNT, required=False, allow_null=True,
                                                   source="max_redemptions_per_referrer")
    active = StrictBooleanField(required=False, default=True)


class ReferralCodeIn(serializers.Serializer):
    customer = ExternalIdField()
    program = StrictCharField(max_length=32)
    code = StrictCharField(max_length=64, required=False,
                           help_text="3-64 letters, digits, '-' or '_' (stored upper case); made up when absent")


class RedeemIn(serializers.Serializer):
    code = StrictCharField(max_length=64)
    customer = ExternalIdField()


# --- output -----------------------------------------------------------------


class RewardProgramOut(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    trigger = serializers.CharField()
    recipient = serializers.CharField()
    rewardType = serializers.CharField(source="reward_type")
    feature = serializers.SerializerMethodField()
    creditAmount = serializers.IntegerField(source="credit_amount", allow_null=True)
    coupon = serializers.SerializerMethodField()
    maxRedemptionsPerReferrer = serializers.IntegerField(source="max_redemptions_per_referrer", allow_null=True)
    active = serializers.BooleanField()
    createdAt = serializers.DateTimeField(source="created_at")

    def get_feature(self, program) -> str | None:
        return program.feature.slug if program.feature_id else None

    def get_coupon(self, program) -> str | None:
        return program.coupon.code if program.coupon_id else None


class RewardProgramListOut(serializers.Serializer):
    data = RewardProgramOut(many=True)
    nextCursor = serializers.CharField(allow_null=True)


class ReferralCodeOut(serializers.Serializer):
    id = serializers.CharField()
    code = serializers.CharField()
    customer = serializers.CharField(source="customer.external_id")
    program = serializers.CharField(source="program_id")
    redemptions = serializers.SerializerMethodField()
    createdAt = serializers.DateTimeField(source="created_at")

    def get_redemptions(self, code) -> int:
        count = getattr(code, "redemption_count", None)
        return count if count is not None else code.redemptions.count()


class ReferralCodeListOut(serializers.Serializer):
    data = ReferralCodeOut(many=True)
    nextCursor = serializers.CharField(allow_null=True)


class RewardOut(serializers.Serializer):
    recipient = serializers.CharField()
    role = serializers.ChoiceField(choices=["referrer", "referee"])
    outcome = serializers.ChoiceField(choices=["credited", "coupon_applied", "coupon_issued", "not_given"])
    feature = serializers.CharField(required=False)
    amount = serializers.IntegerField(required=False)
    coupon = serializers.CharField(required=False, help_text="coupon_issued: the code to give at subscribe")
    subscription = serializers.CharField(required=False, allow_null=True, help_text="coupon_applied: the subscription whose next invoice it discounts")
    reason = serializers.CharField(required=False)


class RedemptionOut(serializers.Serializer):
    id = serializers.CharField()
    code = serializers.CharField(source="code.code")
    program = serializers.CharField(source="program_id")
    referrer = serializers.CharField(source="referrer.external_id")
    referee = serializers.CharField(source="referee.external_id")
    status = serializers.ChoiceField(choices=ReferralRedemption.Status.values)
    createdAt = serializers.DateTimeField(source="created_at")
    rewardedAt = serializers.DateTimeField(source="rewarded_at", allow_null=True)
    rewards = serializers.SerializerMethodField()

    @extend_schema_field(RewardOut(many=True))
    def get_rewards(self, redemption) -> list[dict]:
        return [grant_data(g) for g in redemption.grants.select_related("recipient", "feature", "coupon")]


def _active_param(raw: str | None) -> bool | None:
    if raw in (None, ""):
        return None
    if raw not in ("true", "false"):
        raise ValidationFailed("active", "must be true or false")
    return raw == "true"


def _list_params(request):
    limit = parse_limit(request.query_params.get("limit"))
    return decode_cursor(request.query_params.get("cursor"), kind=tuple), limit


# --- views ------------------------------------------------------------------


class RewardProgramCollectionView(ApiView):
    audit_action = {"POST": "reward_program.create"}

    @extend_schema(operation_id="createRewardProgram", request=RewardProgramIn, responses={201: RewardProgramOut})
    def post(self, request):
        v = self.validated(RewardProgramIn)
        program = reward_program_create(now=timezone.now(), **v)
        self.audit_target = ("reward_program", program.pk)
        return Response(RewardProgramOut(program).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="listRewardPrograms",
        parameters=[OpenApiParameter("active", bool), OpenApiParameter("cursor", str), OpenApiParameter("limit", int)],
        responses={200: RewardProgramListOut},
    )
    def get(self, request):
        active = _active_param(request.query_params.get("active"))
        before, limit = _list_params(request)
        items = reward_program_list(active=active, before=before, limit=limit + 1)
        return Response(page(items, limit=limit, render=lambda p: RewardProgramOut(p).data, by_time=True))


class ReferralCodeCollectionView(ApiView):
    audit_action = {"POST": "referral_code.create"}

    @extend_schema(operation_id="createReferralCode", request=ReferralCodeIn,
                   responses={201: ReferralCodeOut, 200: ReferralCodeOut})
    def post(self, request):
        v = self.validated(ReferralCodeIn)
        customer = customer_get(external_id=v["customer"])
        program = reward_program_get(program_id=v["program"])
        code, created = referral_code_create(customer=customer, program=program, code=v.get("code"), now=timezone.now())
        self.audit_target = ("referral_code", code.pk)
        return Response(ReferralCodeOut(code).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        operation_id="listReferralCodes",
        parameters=[OpenApiParameter("customer", str), OpenApiParameter("program", str),
                    OpenApiParameter("cursor", str), OpenApiParameter("limit", int)],
        responses={200: ReferralCodeListOut},
    )
    def get(self, request):
        raw_customer = request.query_params.get("customer")
        raw_program = request.query_params.get("program")
        customer = customer_get(external_id=raw_customer) if raw_customer else None
        program = reward_program_get(program_id=raw_program) if raw_program else None
        before, limit = _list_params(request)
        items = referral_code_list(customer=customer, program=program, before=before, limit=limit + 1)
        return Response(page(items, limit=limit, render=lambda c: ReferralCodeOut(c).data, by_time=True))


class ReferralRedeemView(ApiView):
    audit_action = {"POST": "referral_code.redeem"}

    @extend_schema(operation_id="redeemReferralCode", request=RedeemIn, responses={201: RedemptionOut})
    def post(self, request):
        v = self.validated(RedeemIn)
        referee = customer_get(external_id=v["customer"])
        redemption = referral_code_redeem(code=v["code"], referee=referee, now=timezone.now())
        self.audit_target = ("referral_redemption", redemption.pk)
        return Response(RedemptionOut(redemption).data, status=status.HTTP_201_CREATED)
