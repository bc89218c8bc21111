"""Reads of coupons: the list, and what a coupon would take off an amount."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from billing.models import Coupon, Product
from billing.selectors.subscriptions import before_filter
from billing.services.coupons import CouponInvalid, coupon_discount, coupon_usable


def coupon_list(*, archived: bool | None, before, limit: int) -> list[Coupon]:
    qs = Coupon.objects.order_by("-created_at", "-id")
    if archived is not None:
        qs = qs.filter(archived=archived)
    return list(before_filter(qs, before)[:limit])


@dataclass(frozen=True)
class CouponCheck:
    valid: bool
    discount: int
    final: int
    currency: str
    reason: str | None = None
    coupon: Coupon | None = None


def coupon_check(*, code: str, product: Product, amount: int, now: datetime) -> CouponCheck:
    """Would ``code`` apply now to ``amount`` minor units of ``product``? An
    unusable coupon is an answer (``valid`` False and the reason), not an error."""
    price = product.current_version.prices.order_by("position").first()
    currency = price.currency if price else "usd"
    try:
        coupon = coupon_usable(code=code, now=now, currency=currency)
    except CouponInvalid as exc:
        return CouponCheck(valid=False, discount=0, final=amount, currency=currency, reason=exc.reason)
    discount = coupon_discount(coupon=coupon, subtotal=amount)
    return CouponCheck(valid=True, discount=discount, final=amount - discount, currency=currency, coupon=coupon)
