"""Reads of reward programs and referral codes (newest first, cursor-paginated)."""

from __future__ import annotations

from django.db.models import Count

from billing.models import Customer
from billing.selectors.subscriptions import before_filter
from rewards.models import ReferralCode, RewardProgram


def reward_program_list(*, active: bool | None, before, limit: int) -> list[RewardProgram]:
    qs = RewardProgram.objects.select_related("feature", "coupon").order_by("-created_at", "-id")
    if active is not None:
        qs = qs.filter(active=active)
    return list(before_filter(qs, before)[:limit])


def referral_code_list(*, customer: Customer | None, program: RewardProgram | None, before, limit: int) -> list[ReferralCode]:
    qs = (ReferralCode.objects.select_related("customer", "program")
          .annotate(redemption_count=Count("redemptions")).order_by("-created_at", "-id"))
    if customer is not None:
        qs = qs.filter(customer=customer)
    if program is not None:
        qs = qs.filter(program=program)
    return list(before_filter(qs, before)[:limit])
