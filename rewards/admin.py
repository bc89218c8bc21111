"""Staff console for rewards: programs, referral codes, redemptions and what
each gave, read-only (they are made through the API, and a given reward is
history)."""

from __future__ import annotations

from django.contrib import admin

from billing.admin import ReadOnlyAdmin, ReadOnlyInline
from rewards.models import ReferralCode, ReferralRedemption, RewardGrant, RewardProgram

NOTE = ("Reward programs and referral codes are made through the API (POST /api/v1/pay/reward-programs, "
        "/referral-codes, /referral-codes/redeem); a redemption and its rewards are history, never edited.")


@admin.register(RewardProgram)
class RewardProgramAdmin(ReadOnlyAdmin):
    admin_note = NOTE
    list_display = ["name", "id", "trigger", "recipient", "reward_type", "feature", "credit_amount", "coupon",
                    "max_redemptions_per_referrer", "active", "created_at"]
    list_filter = ["trigger", "recipient", "reward_type", "active"]
    search_fields = ["name", "=id"]
    list_select_related = ["feature", "coupon"]


@admin.register(ReferralCode)
class ReferralCodeAdmin(ReadOnlyAdmin):
    admin_note = NOTE
    list_display = ["code", "customer", "program", "created_at"]
    list_filter = ["program"]
    search_fields = ["code", "=id", "customer__external_id"]
    list_select_related = ["customer", "program"]


class RewardGrantInline(ReadOnlyInline):
    model = RewardGrant
    fields = ["recipient", "role", "outcome", "feature", "amount", "coupon", "subscription", "reason", "created_at"]
    show_change_link = False


@admin.register(ReferralRedemption)
class ReferralRedemptionAdmin(ReadOnlyAdmin):
    admin_note = NOTE
    list_display = ["id", "code", "referrer", "referee", "program", "status", "created_at", "rewarded_at"]
    list_filter = ["status", "program"]
    search_fields = ["=id", "code__code", "referrer__external_id", "referee__external_id"]
    list_select_related = ["code", "referrer", "referee", "program"]
    date_hierarchy = "created_at"
    inlines = [RewardGrantInline]


@admin.register(RewardGrant)
class RewardGrantAdmin(ReadOnlyAdmin):
    admin_note = NOTE
    list_display = ["id", "redemption", "recipient", "role", "outcome", "feature", "amount", "coupon", "created_at"]
    list_filter = ["outcome", "role"]
    search_fields = ["=redemption__id", "recipient__external_id"]
    list_select_related = ["redemption", "recipient", "feature", "coupon"]
