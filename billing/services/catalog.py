"""The catalog: products, their versions, prices and features.

A product's prices, features and free trial live on a ``ProductVersion``.
Changing them while the current version has live subscribers makes a new
version (subscribers stay on theirs); without subscribers the current version
is rewritten in place. Re-sending what is already there changes nothing.

Specs passed in are plain dicts with snake_case keys:
  price:   {type, amount, currency, billing_interval, tiers, tiers_mode}
  feature: {slug, name, type, allowance_type, allowance, reset_interval,
            overage_allowed, overage_price, per_entity}
  free_trial: {days, require_payment_method} or None
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction

from billing.errors import Conflict, ValidationFailed
from billing.locks import lock_product
from billing.models import Feature, Price, Product, ProductFeature, ProductVersion, Subscription

VERSION_FIELDS = ("prices", "features", "free_trial")
PRODUCT_FIELDS = ("name", "slug", "group", "is_add_on", "auto_enable")


# --- normalising and checking a version spec -------------------------------


def _normalize_price(price: dict) -> dict:
    tiers = price.get("tiers") or None
    return {
        "type": price["type"],
        "amount": price["amount"],
        "currency": (price.get("currency") or settings.BILLING_DEFAULT_CURRENCY).lower(),
        "billing_interval": price.get("billing_interval") or ("month" if price["type"] == "recurring" else ""),
        "tiers": [
            {"upTo": t.get("upTo"), "unitAmount": t["unitAmount"], "flatAmount": t.get("flatAmount", 0)} for t in tiers
        ]
        if tiers
        else None,
        "tiers_mode": (price.get("tiers_mode") or "graduated") if tiers else "",
    }


def _normalize_feature(feature: dict, *, recurring: bool) -> dict:
    kind = feature["type"]
    if kind == Feature.Type.BOOLEAN:
        allowance_type, allowance, reset = "", None, "none"
    else:
        allowance_type = feature.get("allowance_type") or "fixed"
        allowance = feature.get("allowance")
        default_reset = "none" if kind == Feature.Type.SEATS or not recurring else "billing_period"
        reset = feature.get("reset_interval") or default_reset
    return {
        "slug": feature["slug"],
        "name": feature.get("name") or feature["slug"],
        "type": kind,
        "allowance_type": allowance_type,
        "allowance": allowance,
        "reset_interval": reset,
        "overage_allowed": bool(feature.get("overage_allowed", False)),
        "overage_price": feature.get("overage_price"),
        "per_entity": bool(feature.get("per_entity", False)),
    }


def _check_prices(prices: list[dict]) -> None:
    types = {p["type"] for p in prices}
    if len(types) > 1:
        raise ValidationFailed("prices", "a product's prices are all recurring or all one_off")
    seen = set()
    for i, price in enumerate(prices):
        key = (price["currency"], price["billing_interval"])
        if key in seen:
            raise ValidationFailed(f"prices.{i}", "another price has the same currency and billing interval")
        seen.add(key)


def _check_feature(i: int, f: dict, given: dict, *, recurring: bool) -> None:
    field = f"features.{i}"
    if f["type"] == Feature.Type.BOOLEAN:
        for key, wire in (("allowance", "allowance"), ("allowance_type", "allowanceType"), ("overage_price", "overagePrice")):
            if given.get(key) not in (None, ""):
                raise ValidationFailed(f"{field}.{wire}", "boolean features have no allowance or overage")
        if f["overage_allowed"] or f["per_entity"]:
            raise ValidationFailed(field, "boolean features have no overage and are not per entity")
        return
    if f["allowance_type"] == "fixed" and f["allowance"] is None:
        raise ValidationFailed(f"{field}.allowance", "required when allowanceType is fixed")
    if f["allowance_type"] == "unlimited":
        if f["allowance"] is not None:
            raise ValidationFailed(f"{field}.allowance", "must be omitted for an unlimited allowance")
        if f["overage_allowed"]:
            raise ValidationFailed(f"{field}.overageAllowed", "an unlimited allowance has no overage")
    if f["overage_allowed"] and f["overage_price"] is None:
        raise ValidationFailed(f"{field}.overagePrice", "required when overageAllowed is true")
    if f["type"] == Feature.Type.SEATS:
        if f["reset_interval"] != "none":
            raise ValidationFailed(f"{field}.resetInterval", "seats do not reset")
        if f["per_entity"]:
            raise ValidationFailed(f"{field}.perEntity", "seats are the entities; only metered features are per entity")
    if f["reset_interval"] == "billing_period" and not recurring:
        raise ValidationFailed(f"{field}.resetInterval", "billing_period needs a recurring price")


def _normalize_spec(raw: dict) -> dict:
    """Apply defaults and check the rules that span fields. Raises ValidationFailed."""
    prices = [_normalize_price(p) for p in raw.get("prices") or []]
    _check_prices(prices)
    recurring = any(p["type"] == "recurring" for p in prices)
    features = []
    slugs = set()
    for i, given in enumerate(raw.get("features") or []):
        feature = _normalize_feature(given, recurring=recurring)
        if feature["slug"] in slugs:
            raise ValidationFailed(f"features.{i}.slug", "listed twice")
        slugs.add(feature["slug"])
        _check_feature(i, feature, given, recurring=recurring)
        features.append(feature)
    free_trial = raw.get("free_trial")
    if free_trial is not None:
        free_trial = {"days": free_trial["days"], "require_payment_method": free_trial.get("require_payment_method", True)}
        if not recurring:
            raise ValidationFailed("freeTrial", "a free trial needs a recurring price")
    return {"prices": prices, "features": features, "free_trial": free_trial}


def _is_free(spec: dict) -> bool:
    return all(p["amount"] == 0 and not p["tiers"] for p in spec["prices"])


def _check_product_rules(*, auto_enable: bool, spec: dict) -> None:
    if auto_enable and not _is_free(spec):
        raise ValidationFailed("autoEnable", "only free products can be enabled automatically")
    if auto_enable and spec["free_trial"] is not None:
        raise ValidationFailed("autoEnable", "a product with a free trial cannot be enabled automatically")


# --- reading a version back as a spec ---------------------------------------


def version_spec(version: ProductVersion) -> dict:
    """The stored version in the normalised shape ``_normalize_spec`` produces."""
    prices = [
        {
            "type": p.type,
            "amount": p.amount,
            "currency": p.currency,
            "billing_interval": p.billing_interval,
            "tiers": p.tiers,
            "tiers_mode": p.tiers_mode,
        }
        for p in version.prices.all()
    ]
    features = [
        {
            "slug": pf.feature.slug,
            "name": pf.feature.name,
            "type": pf.feature.type,
            "allowance_type": pf.allowance_type,
            "allowance": pf.allowance,
            "reset_interval": pf.reset_interval,
            "overage_allowed": pf.overage_allowed,
            "overage_price": pf.overage_price,
            "per_entity": pf.per_entity,
        }
        for pf in version.features.all()
    ]
    free_trial = None
    if version.free_trial_days is not None:
        free_trial = {"days": version.free_trial_days, "require_payment_method": version.free_trial_requires_payment_method}
    return {"prices": prices, "features": features, "free_trial": free_trial}


# --- writing ------------------------------------------------------------------


def _features_for(spec_features: list[dict], *, now: datetime) -> dict[str, Feature]:
    """Catalog features by slug, created when new. A slug keeps its type."""
    existing = {f.slug: f for f in Feature.objects.filter(slug__in=[f["slug"] for f in spec_features])}
    for i, f in enumerate(spec_features):
        feature = existing.get(f["slug"])
        if feature is None:
            try:
                with transaction.atomic():
                    feature = Feature.objects.create(slug=f["slug"], name=f["name"], type=f["type"], created_at=now)
            except IntegrityError:
                feature = Feature.objects.get(slug=f["slug"])
            existing[f["slug"]] = feature
        if feature.type != f["type"]:
            raise ValidationFailed(
                f"features.{i}.type", f"feature {f['slug']!r} is already in the catalog as {feature.type}"
            )
    return existing


def _write_version_contents(version: ProductVersion, spec: dict, *, now: datetime) -> None:
    features = _features_for(spec["features"], now=now)
    version.prices.all().delete()
    version.features.all().delete()
    trial = spec["free_trial"]
    version.free_trial_days = trial["days"] if trial else None
    version.free_trial_requires_payment_method = trial["require_payment_method"] if trial else True
    version.save(update_fields=["free_trial_days", "free_trial_requires_payment_method"])
    Price.objects.bulk_create(Price(version=version, position=i, **p) for i, p in enumerate(spec["prices"]))
    ProductFeature.objects.bulk_create(
        ProductFeature(
            version=version,
            position=i,
            feature=features[f["slug"]],
            **{k: v for k, v in f.items() if k not in ("slug", "name", "type")},
        )
        for i, f in enumerate(spec["features"])
    )


def product_create(
    *,
    name: str,
    slug: str,
    now: datetime,
    group: str = "",
    is_add_on: bool = False,
    auto_enable: bool = False,
    free_trial: dict | None = None,
    prices: list[dict] | None = None,
    features: list[dict] | None = None,
) -> Product:
    """Create a product and its version 1.

    Raises ValidationFailed (rules spanning fields), Conflict (slug taken).
    """
    spec = _normalize_spec({"prices": prices, "features": features, "free_trial": free_trial})
    _check_product_rules(auto_enable=auto_enable, spec=spec)
    try:
        with transaction.atomic(durable=True):
            product = Product.objects.create(
                name=name,
                slug=slug,
                group=group,
                is_add_on=is_add_on,
                auto_enable=auto_enable,
                created_at=now,
                updated_at=now,
            )
            version = ProductVersion.objects.create(product=product, version=1, created_at=now)
            _write_version_contents(version, spec, now=now)
            product.current_version = version
            product.save(update_fields=["current_version"])
    except IntegrityError:
        if Product.objects.filter(slug=slug).exists():
            raise Conflict("A product with this slug exists.", details={"resource": "product", "field": "slug"}) from None
        raise
    return product


def version_subscriber_count(version: ProductVersion) -> int:
    return Subscription.objects.filter(version=version, status__in=Subscription.LIVE_STATUSES).count()


def product_update(*, product: Product, changes: dict, now: datetime) -> Product:
    """Apply ``changes`` (any of PRODUCT_FIELDS and VERSION_FIELDS).

    Version fields changed under live subscribers make a new version; without
    subscribers the current version is rewritten. Raises ValidationFailed,
    Conflict (slug taken).
    """
    try:
        with transaction.atomic(durable=True):
            locked = lock_product(pk=product.pk)
            current = locked.current_version
            current_spec = version_spec(current)
            merged = {**current_spec, **{k: changes[k] for k in VERSION_FIELDS if k in changes}}
            spec = _normalize_spec(merged)
            auto_enable = changes.get("auto_enable", locked.auto_enable)
            _check_product_rules(auto_enable=auto_enable, spec=spec)
            if spec != current_spec:
                if version_subscriber_count(current):
                    current = ProductVersion.objects.create(product=locked, version=current.version + 1, created_at=now)
                    locked.current_version = current
                _write_version_contents(current, spec, now=now)
            for field in PRODUCT_FIELDS:
                if field in changes:
                    setattr(locked, field, changes[field])
            locked.updated_at = now
            locked.save()
    except IntegrityError:
        if "slug" in changes and Product.objects.filter(slug=changes["slug"]).exclude(pk=product.pk).exists():
            raise Conflict("A product with this slug exists.", details={"resource": "product", "field": "slug"}) from None
        raise
    return locked
