from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from billing.api.base import ApiView
from billing.api.fields import AmountField, CurrencyField, StrictBooleanField, StrictCharField, StrictIntegerField
from billing.money import MAX_AMOUNT
from billing.selectors.catalog import product_get, product_list, product_versions
from billing.services.catalog import product_create, product_update
from billing.services.version_migrations import version_subscribers_migrate

# --- input ------------------------------------------------------------------


class TierIn(serializers.Serializer):
    upTo = StrictIntegerField(min_value=1, max_value=MAX_AMOUNT, allow_null=True)
    unitAmount = AmountField()
    flatAmount = AmountField(required=False, default=0)


class PriceIn(serializers.Serializer):
    type = serializers.ChoiceField(choices=["recurring", "one_off"])
    amount = AmountField()
    currency = CurrencyField(required=False)
    billingInterval = serializers.ChoiceField(choices=["week", "month", "year"], required=False, source="billing_interval")
    tiers = TierIn(many=True, required=False, allow_empty=False, max_length=50)
    tiersMode = serializers.ChoiceField(choices=["graduated", "volume"], required=False, source="tiers_mode")

    def validate(self, attrs):
        if attrs["type"] == "one_off" and attrs.get("billing_interval"):
            raise serializers.ValidationError({"billingInterval": "one_off prices have no billing interval"})
        tiers = attrs.get("tiers")
        if attrs.get("tiers_mode") and not tiers:
            raise serializers.ValidationError({"tiersMode": "only with tiers"})
        if tiers:
            ups = [t["upTo"] for t in tiers]
            if ups[-1] is not None or None in ups[:-1]:
                raise serializers.ValidationError({"tiers": "only the last tier is open (upTo null), and it must be"})
            if any(b <= a for a, b in zip(ups[:-2], ups[1:-1])):
                raise serializers.ValidationError({"tiers": "upTo must increase from tier to tier"})
        return attrs


class FeatureIn(serializers.Serializer):
    slug = serializers.SlugField(max_length=100)
    name = StrictCharField(max_length=200, required=False)
    type = serializers.ChoiceField(choices=["boolean", "metered", "seats"])
    allowanceType = serializers.ChoiceField(choices=["fixed", "unlimited"], required=False, source="allowance_type")
    allowance = StrictIntegerField(min_value=0, max_value=MAX_AMOUNT, required=False, allow_null=True)
    resetInterval = serializers.ChoiceField(
        choices=["none", "day", "week", "month", "year", "billing_period"], required=False, source="reset_interval"
    )
    overageAllowed = StrictBooleanField(required=False, source="overage_allowed")
    overagePrice = AmountField(required=False, allow_null=True, source="overage_price")
    perEntity = StrictBooleanField(required=False, source="per_entity")


class FreeTrialIn(serializers.Serializer):
    days = StrictIntegerField(min_value=1, max_value=730)
    requirePaymentMethod = StrictBooleanField(required=False, default=True, source="require_payment_method")


class ProductPatchIn(serializers.Serializer):
    name = StrictCharField(max_length=200, required=False)
    slug = serializers.SlugField(max_length=100, required=False)
    group = serializers.SlugField(max_length=100, required=False, allow_blank=True)
    isAddOn = StrictBooleanField(required=False, source="is_add_on")
    autoEnable = StrictBooleanField(required=False, source="auto_enable")
    freeTrial = FreeTrialIn(required=False, allow_null=True, source="free_trial")
    prices = PriceIn(many=True, required=False, max_length=20)
    features = FeatureIn(many=True, required=False, max_length=200)


class ProductIn(ProductPatchIn):
    name = StrictCharField(max_length=200)
    slug = serializers.SlugField(max_length=100)


# --- output -----------------------------------------------------------------


class BlankAsNullField(serializers.CharField):
    """A stored empty string (no value) goes out as null."""

    def __init__(self, **kwargs):
        super().__init__(allow_null=True, **kwargs)

    def to_representation(self, value):
        return value or None


class TierOut(serializers.Serializer):
    upTo = serializers.IntegerField(allow_null=True)
    unitAmount = serializers.IntegerField()
    flatAmount = serializers.IntegerField()


class PriceOut(serializers.Serializer):
    type = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    billingInterval = BlankAsNullField(source="billing_interval")
    tiers = TierOut(many=True, allow_null=True)
    tiersMode = BlankAsNullField(source="tiers_mode")


class FeatureOut(serializers.Serializer):
    slug = serializers.CharField(source="feature.slug")
    name = serializers.CharField(source="feature.name")
    type = serializers.CharField(source="feature.type")
    allowanceType = BlankAsNullField(source="allowance_type")
    allowance = serializers.IntegerField(allow_null=True)
    resetInterval = serializers.CharField(source="reset_interval")
    overageAllowed = serializers.BooleanField(source="overage_allowed")
    overagePrice = serializers.IntegerField(source="overage_price", allow_null=True)
    perEntity = serializers.BooleanField(source="per_entity")


class FreeTrialOut(serializers.Serializer):
    days = serializers.IntegerField()
    requirePaymentMethod = serializers.BooleanField()


class ProductOut(serializers.Serializer):
    id = serializers.CharField()
    slug = serializers.CharField()
    name = serializers.CharField()
    group = serializers.CharField()
    isAddOn = serializers.BooleanField()
    autoEnable = serializers.BooleanField()
    version = serializers.IntegerField()
    versionId = serializers.CharField()
    freeTrial = FreeTrialOut(allow_null=True)
    prices = PriceOut(many=True)
    features = FeatureOut(many=True)
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()


class ProductListOut(serializers.Serializer):
    data = ProductOut(many=True)


class VersionOut(serializers.Serializer):
    id = serializers.CharField()
    version = serializers.IntegerField()
    createdAt = serializers.DateTimeField(source="created_at")
    subscribers = serializers.IntegerField()


class VersionListOut(serializers.Serializer):
    versions = VersionOut(many=True)


def render_product(product) -> dict:
    version = product.current_version
    trial = None
    if version.free_trial_days is not None:
        trial = {"days": version.free_trial_days, "requirePaymentMethod": version.free_trial_requires_payment_method}
    view = {
        "id": product.pk,
        "slug": product.slug,
        "name": product.name,
        "group": product.group,
        "isAddOn": product.is_add_on,
        "autoEnable": product.auto_enable,
        "version": version.version,
        "versionId": version.pk,
        "freeTrial": trial,
        "prices": list(version.prices.all()),
        "features": list(version.features.all()),
        "createdAt": product.created_at,
        "updatedAt": product.updated_at,
    }
    return ProductOut(view).data


# --- views ------------------------------------------------------------------


class ProductCollectionView(ApiView):
    audit_action = {"POST": "product.create"}

    @extend_schema(operation_id="createProduct", request=ProductIn, responses={201: ProductOut})
    def post(self, request):
        v = self.validated(ProductIn)
        product = product_create(**v, now=timezone.now())
        self.audit_target = ("product", product.pk)
        return Response(render_product(product_get(id_or_slug=product.pk)), status=status.HTTP_201_CREATED)

    @extend_schema(operation_id="listProducts", responses={200: ProductListOut})
    def get(self, request):
        return Response({"data": [render_product(p) for p in product_list()]})


class ProductDetailView(ApiView):
    audit_action = {"PATCH": "product.update"}

    @extend_schema(operation_id="getProduct", responses={200: ProductOut})
    def get(self, request, product_id: str):
        return Response(render_product(product_get(id_or_slug=product_id)))

    @extend_schema(operation_id="updateProduct", request=ProductPatchIn, responses={200: ProductOut})
    def patch(self, request, product_id: str):
        product = product_get(id_or_slug=product_id)
        v = self.validated(ProductPatchIn)
        product = product_update(product=product, changes=dict(v), now=timezone.now())
        self.audit_target = ("product", product.pk)
        return Response(render_product(product_get(id_or_slug=product.pk)))


class ProductVersionsView(ApiView):
    @extend_schema(operation_id="listProductVersions", responses={200: VersionListOut})
    def get(self, request, product_id: str):
        product = product_get(id_or_slug=product_id)
        return Response(VersionListOut({"versions": product_versions(product=product)}).data)


class MigrateIn(serializers.Serializer):
    fromVersionId = StrictCharField(max_length=32)


class MigrateOut(serializers.Serializer):
    migrated = serializers.IntegerField()


class ProductMigrateView(ApiView):
    audit_action = {"POST": "product.migrate"}

    @extend_schema(operation_id="migrateCustomers", request=MigrateIn, responses={200: MigrateOut})
    def post(self, request, product_id: str):
        product = product_get(id_or_slug=product_id)
        v = self.validated(MigrateIn)
        migrated = version_subscribers_migrate(product=product, from_version_id=v["fromVersionId"], now=timezone.now())
        self.audit_target = ("product", product.pk)
        return Response({"migrated": migrated})
