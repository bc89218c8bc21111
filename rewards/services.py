"""Writes of reward programs and referral codes: create a program, give a
customer a code, redeem a code, and give the rewards.

When rewards are given:
  ``sign_up``        in the transaction that redeems the code;
  ``first_payment``  in the transaction that records the referee's first paid
                     invoice with money on it (``referral_invoice_paid``, called
                     by billing once the paid invoice's purpose has been applied,
                     so a payment refunded at once gives nothing).

What a reward is:
  credits  a grant bucket of the program's feature that never expires, the
           bucket ``POST balances`` makes (no money moves, so no ledger entry);
  coupon   put on the recipient's live paid subscription when it carries no
           coupon still applying, so its next invoice is discounted (the coupon
           counts one redemption, as at subscribe); without such a
           subscription the code is handed out in the response and the
           ``referral.rewarded`` event, to use at subscribe.

Once, in the database: a referee is referred once across all codes (UNIQUE
referee), never by themselves (CHECK), and each recipient of a redemption is
rewarded once (UNIQUE (redemption, recipient)); the rewarding transaction
holds the redemption's row lock and re-reads its status, so a second call is a
no-op.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from django.db import IntegrityError, transaction

from billing.errors import Conflict, NotFound, ValidationFailed
from billing.locks import lock_referral_code, lock_referral_redemption, lock_subscription
from billing.models import BalanceBucket, Coupon, Customer, Feature, Invoice, Subscription
from billing.services.audit import audit_record
from billing.services.balances import balance_get_or_create, bucket_add
from billing.services.coupons import CouponInvalid, coupon_cycles_after_first, coupon_get, coupon_redeem, coupon_usable
from billing.services.events import event_emit
from rewards.models import ReferralCode, ReferralRedemption, RewardGrant, RewardProgram

CODE_RE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{2,63}$")
_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"  # no 0/O, 1/I/L, U: read aloud and typed by people
_RESERVED = frozenset({"REDEEM"})  # referral-codes/redeem is a route


class AlreadyReferred(Conflict):
    """The customer was referred before (by any code)."""

    def __init__(self, customer: Customer):
        super().__init__("This customer has already redeemed a referral code.",
                         details={"resource": "referral_redemption", "customer": customer.external_id})


class RewardUnavailable(Conflict):
    """The program cannot reward now: inactive, referrer at its maximum, coupon used up."""


# --- programs ------------------------------------------------------------------


def reward_program_create(*, name: str, trigger: str, recipient: str, reward_type: str, now: datetime,
                          feature_slug: str | None = None, credit_amount: int | None = None,
                          coupon: str | None = None, max_redemptions_per_referrer: int | None = None,
                          active: bool = True) -> RewardProgram:
    """Raises ValidationFailed (a reward's fields missing or mixed, a boolean
    feature, a coupon that cannot be redeemed), NotFound (feature, coupon)."""
    feature = coupon_row = None
    if reward_type == RewardProgram.RewardType.CREDITS:
        if coupon is not None:
            raise ValidationFailed("coupon", "only a coupon reward has one")
        if feature_slug is None:
            raise ValidationFailed("feature", "required for a credits reward")
        if credit_amount is None:
            raise ValidationFailed("creditAmount", "required for a credits reward")
        feature = Feature.objects.filter(slug=feature_slug).first()
        if feature is None:
            raise NotFound("feature", feature_slug)
        if feature.type == Feature.Type.BOOLEAN:
            raise ValidationFailed("feature", "boolean features have no balance")
    else:
        if feature_slug is not None or credit_amount is not None:
            raise ValidationFailed("feature" if feature_slug is not None else "creditAmount", "only a credits reward has one")
        if coupon is None:
            raise ValidationFailed("coupon", "required for a coupon reward")
        coupon_row = coupon_get(id_or_code=coupon)
        try:
            coupon_usable(code=coupon_row.code, now=now)
        except CouponInvalid as exc:
            raise ValidationFailed("coupon", exc.reason) from None
    with transaction.atomic(durable=True):
        return RewardProgram.objects.create(
            name=name, trigger=trigger, recipient=recipient, reward_type=reward_type, feature=feature,
            credit_amount=credit_amount, coupon=coupon_row, max_redemptions_per_referrer=max_redemptions_per_referrer,
            active=active, created_at=now, updated_at=now,
        )


def reward_program_get(*, program_id: str) -> RewardProgram:
    program = RewardProgram.objects.select_related("feature", "coupon").filter(pk=program_id).first()
    if program is None:
        raise NotFound("reward_program", program_id)
    return program


# --- codes ---------------------------------------------------------------------


def code_normalize(raw: str) -> str:
    return raw.strip().upper()


def _code_prefix(customer: Customer) -> str:
    letters = re.sub(r"[^A-Z0-9]", "", (customer.name or customer.external_id).upper())
    return letters[:6] or "REF"


def code_generate(customer: Customer) -> str:
    """A readable code: up to six letters of the customer's name and five random characters (``ACME-7KQ2M``)."""
    return f"{_code_prefix(customer)}-{''.join(secrets.choice(_CODE_ALPHABET) for _ in range(5))}"


def referral_code_create(*, customer: Customer, program: RewardProgram, now: datetime,
                         code: str | None = None) -> tuple[ReferralCode, bool]:
    """The customer's code for ``program``: (code, created). A customer has one
    code per program; asking again returns it. Raises ValidationFailed (a
    malformed code), Conflict (the code is taken, or the customer's code for
    this program is another one)."""
    wanted = None
    if code is not None:
        wanted = code_normalize(code)
        if not CODE_RE.match(wanted) or wanted in _RESERVED:
            raise ValidationFailed("code", "3-64 letters, digits, '-' or '_', starting with a letter or digit")
    with transaction.atomic(durable=True):
        existing = ReferralCode.objects.filter(customer=customer, program=program).first()
        if existing is not None:
            if wanted is not None and wanted != existing.code:
                raise Conflict("The customer already has a code for this program.",
                               details={"resource": "referral_code", "code": existing.code})
            return existing, False
        for _ in range(8 if wanted is None else 1):
            try:
                with transaction.atomic():
                    return ReferralCode.objects.create(code=wanted or code_generate(customer), customer=customer,
                                                       program=program, created_at=now), True
            except IntegrityError:
                existing = ReferralCode.objects.filter(customer=customer, program=program).first()
                if existing is not None:  # made concurrently for the same customer and program
                    if wanted is None or wanted == existing.code:
                        return existing, False
                    raise Conflict("The customer already has a code for this program.",
                                   details={"resource": "referral_code", "code": existing.code}) from None
        raise Conflict("This referral code is taken.", details={"resource": "referral_code", "code": wanted or ""})


# --- redemption ----------------------------------------------------------------


def referral_code_redeem(*, code: str, referee: Customer, now: datetime) -> ReferralRedemption:
    """Record that ``referee`` came through ``code``; a ``sign_up`` program
    rewards at once. Raises NotFound (unknown code, or its owner was deleted),
    ValidationFailed (own code; a first-payment program and a referee who has
    paid before), AlreadyReferred (409, any earlier redemption by the referee),
    RewardUnavailable (409: program inactive, referrer at its maximum, coupon
    no longer redeemable). Nothing changes when it raises."""
    normalized = code_normalize(code)
    with transaction.atomic(durable=True):
        found = ReferralCode.objects.filter(code=normalized, customer__deleted_at__isnull=True).values_list("pk", flat=True).first()
        if found is None:
            raise NotFound("referral_code", code)
        referral = lock_referral_code(pk=found)
        program = RewardProgram.objects.select_related("feature", "coupon").get(pk=referral.program_id)
        if referral.customer_id == referee.pk:
            raise ValidationFailed("customer", "cannot redeem their own referral code")
        if ReferralRedemption.objects.filter(referee=referee).exists():
            raise AlreadyReferred(referee)
        if not program.active:
            raise RewardUnavailable("This referral program is not active.", details={"program": program.pk})
        if program.trigger == RewardProgram.Trigger.FIRST_PAYMENT and Invoice.objects.filter(
            customer=referee, status=Invoice.Status.PAID, amount_paid__gt=0
        ).exists():
            raise ValidationFailed("customer", "has paid before; this program rewards a new customer's first payment")
        limit = program.max_redemptions_per_referrer
        if limit is not None and ReferralRedemption.objects.filter(referrer_id=referral.customer_id, program=program).count() >= limit:
            raise RewardUnavailable("This referral code has been redeemed as often as its program allows.",
                                    details={"code": referral.code, "maxRedemptionsPerReferrer": limit})
        try:
            with transaction.atomic():
                redemption = ReferralRedemption.objects.create(
                    code=referral, program=program, referrer_id=referral.customer_id, referee=referee, created_at=now,
                )
        except IntegrityError:  # the referee redeemed another code concurrently
            raise AlreadyReferred(referee) from None
        if program.trigger == RewardProgram.Trigger.SIGN_UP:
            rewards_give(redemption=redemption, now=now, strict=True)
    return redemption


def referral_invoice_paid(*, invoice: Invoice, now: datetime) -> None:
    """Called by billing once a paid invoice has been applied, in that transaction: the
    referee's first paid invoice with money on it gives a ``first_payment``
    program's rewards. A second call (a second invoice) finds the redemption
    rewarded and does nothing."""
    if invoice.amount_paid <= 0:
        return
    pending = ReferralRedemption.objects.filter(
        referee_id=invoice.customer_id, status=ReferralRedemption.Status.PENDING,
        program__trigger=RewardProgram.Trigger.FIRST_PAYMENT,
    ).values_list("pk", flat=True).first()
    if pending is None:
        return
    with transaction.atomic():
        redemption = lock_referral_redemption(pk=pending)
        if redemption.status != ReferralRedemption.Status.PENDING:
            return
        rewards_give(redemption=redemption, now=now, strict=False, invoice=invoice)


# --- rewards -------------------------------------------------------------------


def _recipients(redemption: ReferralRedemption, program: RewardProgram) -> list[tuple[int, str]]:
    """(customer pk, role) in customer-pk order, so balance rows lock in one order."""
    both = program.recipient == RewardProgram.Recipient.BOTH
    people = []
    if both or program.recipient == RewardProgram.Recipient.REFERRER:
        people.append((redemption.referrer_id, RewardGrant.Role.REFERRER))
    if both or program.recipient == RewardProgram.Recipient.REFEREE:
        people.append((redemption.referee_id, RewardGrant.Role.REFEREE))
    return sorted(people)


def rewards_give(*, redemption: ReferralRedemption, now: datetime, strict: bool, invoice: Invoice | None = None) -> list[RewardGrant]:
    """Give the (locked or just made, pending) redemption's rewards, mark it
    rewarded, emit ``referral.rewarded`` and audit it. Joins the caller's
    transaction. ``strict``: raise RewardUnavailable when a coupon can no
    longer be redeemed (at sign-up: the redeem is refused); otherwise record
    the grant as ``not_given`` with the reason (at a payment, which must stand)."""
    program = RewardProgram.objects.select_related("feature", "coupon").get(pk=redemption.program_id)
    grants = []
    for customer_id, role in _recipients(redemption, program):
        recipient = Customer.objects.get(pk=customer_id)
        if program.reward_type == RewardProgram.RewardType.CREDITS:
            fields = _credits_give(program=program, recipient=recipient, now=now)
        else:
            fields = _coupon_give(coupon=program.coupon, recipient=recipient, now=now)
            if strict and fields["outcome"] == RewardGrant.Outcome.NOT_GIVEN:
                raise RewardUnavailable("The program's coupon cannot be redeemed: " + fields["reason"],
                                        details={"coupon": program.coupon.code, "reason": fields["reason"]})
        grants.append(RewardGrant.objects.create(redemption=redemption, recipient=recipient, role=role, created_at=now, **fields))
    redemption.status = ReferralRedemption.Status.REWARDED
    redemption.rewarded_at = now
    redemption.save(update_fields=["status", "rewarded_at"])
    data = redemption_event_data(redemption, grants, invoice=invoice)
    event_emit(type="referral.rewarded", customer_id=redemption.referee_id, data=data, now=now)
    audit_record(actor_type="system", actor_id="rewards", action="referral.rewarded", target_type="referral_redemption",
                 target_id=redemption.pk, data=data, now=now)
    return grants


def _credits_give(*, program: RewardProgram, recipient: Customer, now: datetime) -> dict:
    balance = balance_get_or_create(customer=recipient, feature=program.feature, entity=None, now=now)
    bucket = bucket_add(balance=balance, kind=BalanceBucket.Kind.GRANT, granted=program.credit_amount, now=now)
    return {"outcome": RewardGrant.Outcome.CREDITED, "feature": program.feature, "amount": program.credit_amount,
            "bucket": bucket}


def _coupon_slot_free(sub: Subscription) -> bool:
    return sub.coupon_id is None or sub.coupon_cycles_left == 0


def _coupon_give(*, coupon: Coupon, recipient: Customer, now: datetime) -> dict:
    try:
        coupon_usable(code=coupon.code, now=now)
    except CouponInvalid as exc:
        return {"outcome": RewardGrant.Outcome.NOT_GIVEN, "coupon": coupon, "reason": exc.reason}
    if coupon.type != Coupon.Type.TRIAL_EXTENSION:  # a trial extension only means something at subscribe
        from billing.services.subscriptions import period_amount

        live = (Subscription.objects.filter(customer=recipient, status__in=("trialing", "active", "past_due"),
                                            current_period_end__isnull=False)
                .select_related("version").order_by("product__is_add_on", "created_at", "id"))
        for candidate in live:
            if coupon.type == Coupon.Type.FIXED and coupon.currency != candidate.currency:
                continue
            if not _coupon_slot_free(candidate) or period_amount(candidate.version, candidate.quantity) <= 0:
                continue
            sub = lock_subscription(pk=candidate.pk)
            if not _coupon_slot_free(sub):
                continue
            try:
                redeemed = coupon_redeem(coupon=coupon, customer=recipient, subscription=sub, now=now)
            except CouponInvalid as exc:
                return {"outcome": RewardGrant.Outcome.NOT_GIVEN, "coupon": coupon, "reason": exc.reason}
            after_first = coupon_cycles_after_first(coupon)
            sub.coupon = coupon
            sub.coupon_cycles_left = None if after_first is None else after_first + 1  # counted from the next invoice
            sub.updated_at = now
            sub.save(update_fields=["coupon", "coupon_cycles_left", "updated_at"])
            return {"outcome": RewardGrant.Outcome.COUPON_APPLIED, "coupon": coupon, "coupon_redemption": redeemed,
                    "subscription": sub}
    return {"outcome": RewardGrant.Outcome.COUPON_ISSUED, "coupon": coupon}


def grant_data(grant: RewardGrant) -> dict:
    body = {"recipient": grant.recipient.external_id, "role": grant.role, "outcome": grant.outcome}
    if grant.outcome == RewardGrant.Outcome.CREDITED:
        body.update(feature=grant.feature.slug, amount=grant.amount)
    else:
        body.update(coupon=grant.coupon.code, subscription=grant.subscription_id)
        if grant.reason:
            body["reason"] = grant.reason
    return body


def redemption_event_data(redemption: ReferralRedemption, grants: list[RewardGrant], invoice: Invoice | None = None) -> dict:
    data = {"redemptionId": redemption.pk, "programId": redemption.program_id, "code": redemption.code.code,
            "referrer": redemption.referrer.external_id, "referee": redemption.referee.external_id,
            "rewards": [grant_data(g) for g in grants]}
    if invoice is not None:
        data["invoiceId"] = invoice.pk
    return data
