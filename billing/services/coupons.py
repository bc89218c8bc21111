"""Coupons: create, update, archive, validate, and their use on invoices.

A discount is computed on an invoice's subtotal and rounded once
(``round_minor``, half up). ``times_redeemed`` grows only by one conditional
UPDATE (``… WHERE times_redeemed < max_redemptions``), so concurrent
redemptions never exceed ``max_redemptions``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F, Q

from billing.errors import Conflict, NotFound, ValidationFailed
from billing.models import Coupon, CouponRedemption
from billing.money import round_minor


class CouponInvalid(ValidationFailed):
    def __init__(self, reason: str):
        super().__init__("coupon", reason)
        self.reason = reason


def coupon_get(*, id_or_code: str) -> Coupon:
    coupon = Coupon.objects.filter(Q(pk=id_or_code) | Q(code=id_or_code)).first()
    if coupon is None:
        raise NotFound("coupon", id_or_code)
    return coupon


def coupon_usable(*, code: str, now: datetime, currency: str | None = None) -> Coupon:
    """The coupon for ``code`` if it can be redeemed now. Raises CouponInvalid
    with the reason: unknown, archived, expired, fully redeemed, other currency."""
    coupon = Coupon.objects.filter(code=code).first()
    if coupon is None:
        raise CouponInvalid("unknown coupon")
    if coupon.archived:
        raise CouponInvalid("coupon is archived")
    if coupon.expires_at is not None and coupon.expires_at <= now:
        raise CouponInvalid("coupon has expired")
    if coupon.max_redemptions is not None and coupon.times_redeemed >= coupon.max_redemptions:
        raise CouponInvalid("coupon has been fully redeemed")
    if coupon.type == Coupon.Type.FIXED and currency and coupon.currency and coupon.currency != currency:
        raise CouponInvalid(f"coupon is in {coupon.currency}, the price in {currency}")
    return coupon


def coupon_discount(*, coupon: Coupon, subtotal: int) -> int:
    """The discount on ``subtotal`` minor units: never more than the subtotal."""
    if subtotal <= 0 or coupon.type == Coupon.Type.TRIAL_EXTENSION:
        return 0
    if coupon.type == Coupon.Type.PERCENTAGE:
        return min(subtotal, round_minor(Decimal(subtotal) * Decimal(coupon.value) / Decimal(100)))
    return min(subtotal, coupon.value)


def coupon_cycles_after_first(coupon: Coupon) -> int | None:
    """Renewals a coupon still covers after the invoice it was redeemed on
    (None: all of them). ``repeating`` covers ``duration_months`` invoices in all."""
    if coupon.duration == Coupon.Duration.FOREVER:
        return None
    if coupon.duration == Coupon.Duration.REPEATING:
        return max(0, (coupon.duration_months or 1) - 1)
    return 0


def coupon_redeem(*, coupon: Coupon, customer, subscription, now: datetime) -> CouponRedemption:
    """Count one redemption (in the caller's transaction). Raises CouponInvalid
    when the last one was taken meanwhile."""
    taken = Coupon.objects.filter(pk=coupon.pk, archived=False).filter(
        Q(max_redemptions__isnull=True) | Q(times_redeemed__lt=F("max_redemptions"))
    ).update(times_redeemed=F("times_redeemed") + 1, updated_at=now)
    if not taken:
        raise CouponInvalid("coupon has been fully redeemed")
    return CouponRedemption.objects.create(coupon=coupon, customer=customer, subscription=subscription, created_at=now)


def coupon_redemptions_release(*, redemptions, now: datetime) -> int:
    """Give redemptions back (in the caller's transaction): what they were
    redeemed for never happened (a checkout abandoned, its invoice voided).
    Each row is deleted and its coupon's ``times_redeemed`` goes down by one,
    only if this call deleted it, so releasing twice gives back once.
    Returns how many were given back."""
    released = 0
    for pk, coupon_id in list(redemptions.order_by("pk").values_list("pk", "coupon_id")):
        deleted, _ = CouponRedemption.objects.filter(pk=pk).delete()
        if deleted:
            Coupon.objects.filter(pk=coupon_id, times_redeemed__gt=0).update(
                times_redeemed=F("times_redeemed") - 1, updated_at=now)
            released += 1
    return released


_FIELDS = ("code", "name", "type", "value", "currency", "duration", "duration_months", "max_redemptions", "expires_at")


def _check(values: dict) -> None:
    if values["type"] == Coupon.Type.PERCENTAGE and not 1 <= values["value"] <= 100:
        raise ValidationFailed("value", "a percentage is between 1 and 100")
    if values["type"] == Coupon.Type.TRIAL_EXTENSION and not 1 <= values["value"] <= 730:
        raise ValidationFailed("value", "a trial extension is between 1 and 730 days")
    if values["type"] == Coupon.Type.FIXED and not values.get("currency"):
        raise ValidationFailed("currency", "a fixed coupon needs a currency")
    if values["duration"] == Coupon.Duration.REPEATING and not values.get("duration_months"):
        raise ValidationFailed("durationMonths", "required for a repeating coupon")
    if values["duration"] != Coupon.Duration.REPEATING and values.get("duration_months"):
        raise ValidationFailed("durationMonths", "only a repeating coupon has one")


def coupon_create(*, now: datetime, **values) -> Coupon:
    """Raises ValidationFailed, Conflict (code taken)."""
    values = {k: values.get(k) for k in _FIELDS if values.get(k) is not None}
    values.setdefault("duration", Coupon.Duration.ONCE)
    _check(values)
    if values.get("expires_at") is not None and values["expires_at"] <= now:
        raise ValidationFailed("expiresAt", "must be in the future")
    try:
        with transaction.atomic():
            return Coupon.objects.create(**values, created_at=now, updated_at=now)
    except IntegrityError:
        raise Conflict("A coupon with this code exists.", details={"resource": "coupon", "code": values["code"]}) from None


def coupon_update(*, coupon: Coupon, now: datetime, **changes) -> Coupon:
    """Name, expiry and max redemptions may change; the discount itself may not
    (redeemed coupons keep their terms). Raises ValidationFailed."""
    with transaction.atomic():
        locked = Coupon.objects.select_for_update().get(pk=coupon.pk)
        if "max_redemptions" in changes and changes["max_redemptions"] is not None and changes["max_redemptions"] < locked.times_redeemed:
            raise ValidationFailed("maxRedemptions", f"must be at least the {locked.times_redeemed} redemptions made")
        for field in ("name", "expires_at", "max_redemptions"):
            if field in changes:
                setattr(locked, field, changes[field])
        locked.updated_at = now
        locked.save()
    return locked


def coupon_archive(*, coupon: Coupon, now: datetime) -> Coupon:
    Coupon.objects.filter(pk=coupon.pk).update(archived=True, updated_at=now)
    coupon.refresh_from_db()
    return coupon
