"""Reward programs, referral codes, their redemptions and what each one gave.

The invariants live in the database: a code is unique, a customer is referred
at most once (``ReferralRedemption.referee`` is unique across all codes), nobody
refers themselves (a CHECK), and a redemption rewards each recipient at most
once (UNIQUE (redemption, recipient) on ``RewardGrant``).
"""

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Upper

from billing.ids import new_id


def new_id_prwp() -> str:
    return new_id("prwp")


def new_id_prc() -> str:
    return new_id("prc")


def new_id_prr() -> str:
    return new_id("prr")


class RewardProgram(models.Model):
    """What a referral gives, to whom and when.

    ``credits``: ``credit_amount`` units of ``feature`` as a grant that never
    expires (the bucket ``POST balances`` makes). ``coupon``: ``coupon`` put on
    the recipient's live subscription so its next invoice is discounted, or
    handed out as a code to use at subscribe (see services.py)."""

    class Trigger(models.TextChoices):
        SIGN_UP = "sign_up"  # when the referee redeems the code
        FIRST_PAYMENT = "first_payment"  # when the referee first pays an invoice

    class Recipient(models.TextChoices):
        REFERRER = "referrer"
        REFEREE = "referee"
        BOTH = "both"

    class RewardType(models.TextChoices):
        CREDITS = "credits"
        COUPON = "coupon"

    id = models.CharField(primary_key=True, max_length=32, default=new_id_prwp, editable=False)
    name = models.CharField(max_length=200)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    recipient = models.CharField(max_length=16, choices=Recipient.choices)
    reward_type = models.CharField(max_length=16, choices=RewardType.choices)
    feature = models.ForeignKey("billing.Feature", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    credit_amount = models.BigIntegerField(null=True, blank=True)
    coupon = models.ForeignKey("billing.Coupon", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    max_redemptions_per_referrer = models.PositiveIntegerField(null=True, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(trigger__in=["sign_up", "first_payment"]), name="reward_program_trigger_valid"),
            models.CheckConstraint(condition=Q(recipient__in=["referrer", "referee", "both"]), name="reward_program_recipient_valid"),
            models.CheckConstraint(
                condition=(
                    Q(reward_type="credits", feature__isnull=False, credit_amount__gt=0, coupon__isnull=True)
                    | Q(reward_type="coupon", coupon__isnull=False, feature__isnull=True, credit_amount__isnull=True)
                ),
                name="reward_program_reward_complete",
            ),
            models.CheckConstraint(
                condition=Q(max_redemptions_per_referrer__isnull=True) | Q(max_redemptions_per_referrer__gte=1),
                name="reward_program_max_positive",
            ),
        ]

    def __str__(self):
        return self.name


class ReferralCode(models.Model):
    """A customer's code for one program (one code per customer and program)."""

    id = models.CharField(primary_key=True, max_length=32, default=new_id_prc, editable=False)
    code = models.CharField(max_length=64, unique=True)  # upper case; matched case-insensitively
    customer = models.ForeignKey("billing.Customer", on_delete=models.PROTECT, related_name="+")
    program = models.ForeignKey(RewardProgram, on_delete=models.PROTECT, related_name="codes")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["customer", "program"], name="referral_code_one_per_customer_program"),
            models.CheckConstraint(condition=Q(code=Upper("code")), name="referral_code_upper_case"),
        ]

    def __str__(self):
        return self.code


class ReferralRedemption(models.Model):
    """One referee brought in by one code; ``rewarded`` once its rewards were given."""

    class Status(models.TextChoices):
        PENDING = "pending"
        REWARDED = "rewarded"

    id = models.CharField(primary_key=True, max_length=32, default=new_id_prr, editable=False)
    code = models.ForeignKey(ReferralCode, on_delete=models.PROTECT, related_name="redemptions")
    program = models.ForeignKey(RewardProgram, on_delete=models.PROTECT, related_name="redemptions")
    referrer = models.ForeignKey("billing.Customer", on_delete=models.PROTECT, related_name="+")
    referee = models.OneToOneField("billing.Customer", on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField()
    rewarded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(referee=F("referrer")), name="referral_not_self"),
            models.CheckConstraint(
                condition=Q(status="pending", rewarded_at__isnull=True) | Q(status="rewarded", rewarded_at__isnull=False),
                name="referral_rewarded_has_time",
            ),
        ]
        indexes = [models.Index(fields=["referrer", "program"], name="referral_referrer_program")]

    def __str__(self):
        return self.pk


class RewardGrant(models.Model):
    """What one redemption gave one recipient: credits (the balance bucket made),
    a coupon put on a subscription (the coupon redemption), a coupon code to use
    at subscribe, or nothing because the coupon could no longer be redeemed."""

    class Role(models.TextChoices):
        REFERRER = "referrer"
        REFEREE = "referee"

    class Outcome(models.TextChoices):
        CREDITED = "credited"
        COUPON_APPLIED = "coupon_applied"  # on the live subscription: its next invoice is discounted
        COUPON_ISSUED = "coupon_issued"  # no subscription to put it on: the code is for subscribe
        NOT_GIVEN = "not_given"  # the coupon could not be redeemed any more (``reason``)

    redemption = models.ForeignKey(ReferralRedemption, on_delete=models.PROTECT, related_name="grants")
    recipient = models.ForeignKey("billing.Customer", on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=16, choices=Role.choices)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    feature = models.ForeignKey("billing.Feature", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField(null=True, blank=True)
    bucket = models.OneToOneField("billing.BalanceBucket", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    coupon = models.ForeignKey("billing.Coupon", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    coupon_redemption = models.OneToOneField("billing.CouponRedemption", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    subscription = models.ForeignKey("billing.Subscription", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["redemption", "recipient"], name="reward_grant_once_per_recipient"),
            models.CheckConstraint(
                condition=~Q(outcome="credited") | Q(amount__gt=0, bucket__isnull=False, feature__isnull=False),
                name="reward_grant_credits_complete",
            ),
            models.CheckConstraint(
                condition=~Q(outcome="coupon_applied") | Q(coupon_redemption__isnull=False, subscription__isnull=False),
                name="reward_grant_coupon_applied_complete",
            ),
        ]
