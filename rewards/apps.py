from django.apps import AppConfig


class RewardsConfig(AppConfig):
    """Reward programs and referral codes: a customer's code brings in another
    customer, and credits or a coupon go to one or both of them."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "rewards"
    verbose_name = "Rewards and referrals"
