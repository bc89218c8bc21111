"""Writes that give or set balances: attaching a product, standalone grants,
balance corrections, entities (seats) and spend caps."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction

from billing.errors import Conflict, NotFound, ValidationFailed
from billing.locks import lock_balance, lock_customer
from billing.models import (
    Balance,
    BalanceBucket,
    Customer,
    Entity,
    Feature,
    Product,
    ProductFeature,
    ProductSpendCap,
    SpendCap,
    Subscription,
)
from billing.periods import add_interval
from billing.services.balances import balance_get_or_create, balance_recompute, bucket_add
from billing.services.entitlements import OK, InsufficientBalance, decide, usage_apply, usage_give_back, usage_record


def _feature(slug: str) -> Feature:
    feature = Feature.objects.filter(slug=slug).first()
    if feature is None:
        raise NotFound("feature", slug)
    return feature


def _effective_cap(*, customer: Customer, feature: Feature, product: Product | None) -> int | None:
    own = SpendCap.objects.filter(customer=customer, feature=feature).values_list("cap", flat=True).first()
    if own is not None:
        return own
    if product is None:
        return None
    return ProductSpendCap.objects.filter(product=product, feature=feature).values_list("cap", flat=True).first()


def plan_feature_grant(*, customer, pf: ProductFeature, product: Product, subscription: Subscription | None,
                        entity: Entity | None, now: datetime, quantity: int) -> None:
    """One product feature's bucket: a plan allowance (resetting) under a
    subscription, or top-up units of a one-off product (no subscription)."""
    balance = balance_get_or_create(customer=customer, feature=pf.feature, entity=entity, now=now)
    unlimited = pf.allowance_type == "unlimited" or pf.feature.type == Feature.Type.BOOLEAN
    if pf.feature.type != Feature.Type.BOOLEAN and subscription is not None:
        balance.overage_allowed = pf.overage_allowed
        balance.overage_price = pf.overage_price
        balance.spend_cap = _effective_cap(customer=customer, feature=pf.feature, product=product)
        balance.save(update_fields=["overage_allowed", "overage_price", "spend_cap"])
    granted = 0 if unlimited else (pf.allowance or 0) * quantity
    if subscription is None:
        bucket_add(balance=balance, kind=BalanceBucket.Kind.TOPUP, granted=granted, unlimited=unlimited, now=now)
        return
    period = None
    if pf.reset_interval == "billing_period":
        period = (subscription.current_period_start, subscription.current_period_end)
    bucket_add(
        balance=balance,
        kind=BalanceBucket.Kind.PLAN,
        granted=granted,
        unlimited=unlimited,
        subscription=subscription,
        reset_interval=pf.reset_interval,
        period_anchor=subscription.current_period_start,
        period=period,
        now=now,
    )


def product_attach(*, customer: Customer, product: Product, now: datetime, quantity: int = 1) -> Subscription | None:
    """Give a customer a product: a subscription on its current version and a
    plan bucket per feature; a one-off product gives top-up buckets and no
    subscription (returns None). Joins the caller's transaction. Free products
    only until payments exist. Raises Conflict when the customer already has the
    product, or another main plan of its group."""
    with transaction.atomic():
        lock_customer(pk=customer.pk)
        version = product.current_version
        one_off = version.prices.filter(type="one_off").exists()
        subscription = None
        if not one_off:
            live = Subscription.objects.filter(customer=customer, status__in=Subscription.LIVE_STATUSES)
            if live.filter(product=product).exists():
                raise Conflict("The customer already has this product.", details={"product": product.slug})
            if product.group and not product.is_add_on and live.filter(
                product__group=product.group, product__is_add_on=False
            ).exists():
                raise Conflict("The customer already has a plan in this group.", details={"group": product.group})
            recurring = version.prices.filter(type="recurring").order_by("position").first()
            subscription = Subscription.objects.create(
                customer=customer, product=product, version=version, status=Subscription.Status.ACTIVE,
                quantity=quantity, current_period_start=now, slot=subscription_slot(product),
                current_period_end=add_interval(now, recurring.billing_interval) if recurring else None,
                billing_interval=recurring.billing_interval if recurring else "",
                currency=recurring.currency if recurring else settings.BILLING_DEFAULT_CURRENCY,
                created_at=now, updated_at=now,
            )
        version_grant(customer=customer, product=product, version=version, subscription=subscription,
                      quantity=quantity, now=now)
    return subscription


def subscription_slot(product: Product) -> str:
    """The slot a subscription to ``product`` takes (see Subscription.slot)."""
    return f"group:{product.group}" if product.group and not product.is_add_on else f"product:{product.pk}"


def version_grant(*, customer: Customer, product: Product, version, subscription: Subscription | None,
                  quantity: int, now: datetime) -> None:
    """Every feature bucket of a product version: plan allowances under a
    subscription, top-ups without one (a one-off product)."""
    entities = list(Entity.objects.filter(customer=customer, deleted_at__isnull=True))
    for pf in version.features.select_related("feature"):
        for entity in entities if pf.per_entity else [None]:
            plan_feature_grant(customer=customer, pf=pf, product=product, subscription=subscription,
                               entity=entity, now=now, quantity=quantity)


def auto_enable_products(*, customer: Customer, now: datetime) -> list[Subscription]:
    """Attach every autoEnable product (in the caller's transaction)."""
    return [product_attach(customer=customer, product=p, now=now) for p in Product.objects.filter(auto_enable=True).select_related("current_version")]


def balance_create(*, customer: Customer, feature_slug: str, granted: int, now: datetime,
                   expires_at: datetime | None = None, entity_id: str | None = None) -> Balance:
    """A standalone grant (createBalance): a bucket that never resets and may expire."""
    feature = _feature(feature_slug)
    if feature.type == Feature.Type.BOOLEAN:
        raise ValidationFailed("feature", "boolean features have no balance")
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed("expiresAt", "must be in the future")
    with transaction.atomic(durable=True):
        entity = Entity.objects.filter(customer=customer, external_id=entity_id, deleted_at__isnull=True).first() if entity_id else None
        if entity_id and entity is None:
            raise NotFound("entity", entity_id)
        balance = balance_get_or_create(customer=customer, feature=feature, entity=entity, now=now)
        bucket_add(balance=balance, kind=BalanceBucket.Kind.GRANT, granted=granted, expires_at=expires_at, now=now)
    return balance


def balance_update(*, customer: Customer, feature_slug: str, now: datetime, usage: int | None = None,
                   remaining: int | None = None, entity_id: str | None = None) -> Balance:
    """Set a balance's usage, or its remaining units (by setting usage), as a staff
    correction. Raises NotFound, ValidationFailed (a remaining above what is granted)."""
    feature = _feature(feature_slug)
    with transaction.atomic(durable=True):
        qs = Balance.objects.filter(customer=customer, feature=feature, entity__external_id=entity_id) if entity_id else Balance.objects.filter(customer=customer, feature=feature, entity__isnull=True)
        found = qs.first()
        if found is None:
            raise NotFound("balance", feature_slug)
        balance = lock_balance(pk=found.pk)
        if remaining is not None:
            usage = balance.granted - balance.reserved - remaining
            if usage < 0:
                raise ValidationFailed("balance", f"at most {balance.granted - balance.reserved} (granted less reserved)")
        balance.usage = usage
        balance.save(update_fields=["usage"])
        balance_recompute(balance=balance, now=now)
    return balance


def entity_create(*, customer: Customer, entity_id: str, feature_slug: str, name: str, now: datetime) -> Entity:
    """Use a seat of ``feature_slug`` and give the entity its per-entity balances.
    Raises InsufficientBalance (402, no seat left), Conflict (id taken), NotFound."""
    feature = _feature(feature_slug)
    if feature.type != Feature.Type.SEATS:
        raise ValidationFailed("featureId", "must be a seats feature")
    with transaction.atomic(durable=True):
        seats = Balance.objects.filter(customer=customer, feature=feature, entity__isnull=True).first()
        if seats is None:
            raise InsufficientBalance("The customer has no seats of this feature.", details={"feature": feature_slug, "available": 0})
        seats = lock_balance(pk=seats.pk)
        code = decide(seats, 1)
        if code != OK:
            raise InsufficientBalance("No seat is left.", details={"feature": feature_slug, "code": code, "available": max(0, seats.remaining)})
        try:
            with transaction.atomic():
                entity = Entity.objects.create(customer=customer, external_id=entity_id, feature=feature, name=name, created_at=now)
        except IntegrityError:
            raise Conflict("An entity with this id exists.", details={"resource": "entity", "id": entity_id}) from None
        usage_apply(balance=seats, amount=1, now=now)
        usage_record(balance=seats, amount=1, now=now, properties={"entityId": entity_id})
        for sub in Subscription.objects.filter(customer=customer, status__in=Subscription.LIVE_STATUSES).select_related("product", "version"):
            for pf in sub.version.features.filter(per_entity=True).select_related("feature"):
                plan_feature_grant(customer=customer, pf=pf, product=sub.product, subscription=sub, entity=entity, now=now, quantity=1)
    return entity


def entity_delete(*, customer: Customer, entity_id: str, now: datetime) -> None:
    """Free the entity's seat. Its balances stay as history. Raises NotFound."""
    with transaction.atomic(durable=True):
        entity = Entity.objects.select_for_update().filter(customer=customer, external_id=entity_id, deleted_at__isnull=True).first()
        if entity is None:
            raise NotFound("entity", entity_id)
        entity.deleted_at = now
        entity.save(update_fields=["deleted_at"])
        seats = Balance.objects.filter(customer=customer, feature=entity.feature, entity__isnull=True).first()
        if seats is not None:
            seats = lock_balance(pk=seats.pk)
            if seats.usage > 0:
                usage_give_back(balance=seats, amount=1, now=now)
                usage_record(balance=seats, amount=-1, now=now, properties={"entityId": entity_id})


def spend_cap_set(*, customer: Customer, feature_slug: str, cap: int | None, now: datetime) -> None:
    """Set (or clear, with None) the customer's cap; the product default applies when clear."""
    feature = _feature(feature_slug)
    with transaction.atomic(durable=True):
        if cap is None:
            SpendCap.objects.filter(customer=customer, feature=feature).delete()
        else:
            SpendCap.objects.update_or_create(customer=customer, feature=feature, defaults={"cap": cap, "updated_at": now})
        _refresh_caps(Balance.objects.filter(customer=customer, feature=feature))


def product_spend_cap_set(*, product: Product, feature_slug: str, cap: int | None, now: datetime) -> None:
    feature = _feature(feature_slug)
    with transaction.atomic(durable=True):
        if cap is None:
            ProductSpendCap.objects.filter(product=product, feature=feature).delete()
        else:
            ProductSpendCap.objects.update_or_create(product=product, feature=feature, defaults={"cap": cap, "updated_at": now})
        customers = Subscription.objects.filter(product=product, status__in=Subscription.LIVE_STATUSES).values("customer_id")
        _refresh_caps(Balance.objects.filter(customer_id__in=customers, feature=feature))


def _refresh_caps(balances) -> None:
    for balance in balances.select_related("customer", "feature"):
        sub = (
            Subscription.objects.filter(customer=balance.customer, status__in=Subscription.LIVE_STATUSES, version__features__feature=balance.feature)
            .select_related("product").first()
        )
        cap = _effective_cap(customer=balance.customer, feature=balance.feature, product=sub.product if sub else None)
        Balance.objects.filter(pk=balance.pk).update(spend_cap=cap)
