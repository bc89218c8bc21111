"""The catalog: features (keyed by slug) and versioned products with prices."""

from django.db import models
from django.db.models import Q

from billing.ids import new_id_pprod, new_id_pver


class Feature(models.Model):
    class Type(models.TextChoices):
        BOOLEAN = "boolean"
        METERED = "metered"
        SEATS = "seats"

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    type = models.CharField(max_length=16, choices=Type.choices)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(condition=Q(type__in=["boolean", "metered", "seats"]), name="feature_type_valid"),
        ]

    def __str__(self):
        return self.slug


class Product(models.Model):
    """A plan, add-on or one-off purchase. Prices and features live on its versions."""

    id = models.CharField(primary_key=True, max_length=32, default=new_id_pprod, editable=False)
    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    group = models.CharField(max_length=100, blank=True, default="")
    is_add_on = models.BooleanField(default=False)
    auto_enable = models.BooleanField(default=False)
    current_version = models.ForeignKey(
        "billing.ProductVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self):
        return self.slug


class ProductVersion(models.Model):
    """An immutable-once-subscribed snapshot of a product's prices and features."""

    id = models.CharField(primary_key=True, max_length=32, default=new_id_pver, editable=False)
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    free_trial_days = models.PositiveIntegerField(null=True, blank=True)
    free_trial_requires_payment_method = models.BooleanField(default=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["product", "version"]
        constraints = [
            models.UniqueConstraint(fields=["product", "version"], name="product_version_unique"),
            models.CheckConstraint(condition=Q(version__gte=1), name="product_version_positive"),
        ]

    def __str__(self):
        return f"{self.product_id} v{self.version}"


class Price(models.Model):
    class Type(models.TextChoices):
        RECURRING = "recurring"
        ONE_OFF = "one_off"

    class Interval(models.TextChoices):
        WEEK = "week"
        MONTH = "month"
        YEAR = "year"

    class TiersMode(models.TextChoices):
        GRADUATED = "graduated"
        VOLUME = "volume"

    version = models.ForeignKey(ProductVersion, on_delete=models.CASCADE, related_name="prices")
    position = models.PositiveIntegerField(default=0)
    type = models.CharField(max_length=16, choices=Type.choices)
    amount = models.BigIntegerField(help_text="Minor units")
    currency = models.CharField(max_length=3)
    billing_interval = models.CharField(max_length=8, choices=Interval.choices, blank=True, default="")
    # [{"upTo": int | None, "unitAmount": int, "flatAmount": int}], ascending, last upTo None.
    tiers = models.JSONField(null=True, blank=True)
    tiers_mode = models.CharField(max_length=16, choices=TiersMode.choices, blank=True, default="")

    class Meta:
        ordering = ["version", "position"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="price_amount_non_negative"),
            models.CheckConstraint(condition=Q(type__in=["recurring", "one_off"]), name="price_type_valid"),
            models.CheckConstraint(
                condition=Q(type="one_off", billing_interval="")
                | Q(type="recurring", billing_interval__in=["week", "month", "year"]),
                name="price_interval_matches_type",
            ),
            models.CheckConstraint(
                condition=Q(tiers__isnull=True, tiers_mode="")
                | Q(tiers__isnull=False, tiers_mode__in=["graduated", "volume"]),
                name="price_tiers_mode_matches",
            ),
        ]


class ProductFeature(models.Model):
    """What one product version grants of one feature."""

    class AllowanceType(models.TextChoices):
        FIXED = "fixed"
        UNLIMITED = "unlimited"

    class ResetInterval(models.TextChoices):
        NONE = "none"
        DAY = "day"
        WEEK = "week"
        MONTH = "month"
        YEAR = "year"
        BILLING_PERIOD = "billing_period"

    version = models.ForeignKey(ProductVersion, on_delete=models.CASCADE, related_name="features")
    feature = models.ForeignKey(Feature, on_delete=models.PROTECT, related_name="product_features")
    position = models.PositiveIntegerField(default=0)
    allowance_type = models.CharField(max_length=16, choices=AllowanceType.choices, blank=True, default="")
    allowance = models.BigIntegerField(null=True, blank=True)
    reset_interval = models.CharField(max_length=16, choices=ResetInterval.choices, default="none")
    overage_allowed = models.BooleanField(default=False)
    overage_price = models.BigIntegerField(null=True, blank=True, help_text="Minor units per unit beyond the allowance")
    per_entity = models.BooleanField(default=False)

    class Meta:
        ordering = ["version", "position"]
        constraints = [
            models.UniqueConstraint(fields=["version", "feature"], name="product_feature_unique"),
            models.CheckConstraint(condition=Q(allowance__isnull=True) | Q(allowance__gte=0), name="pf_allowance_non_negative"),
            models.CheckConstraint(
                condition=Q(overage_price__isnull=True) | Q(overage_price__gte=0), name="pf_overage_price_non_negative"
            ),
        ]
