from __future__ import annotations

from django.db.models import Count, Prefetch, Q

from billing.errors import NotFound
from billing.models import Price, Product, ProductFeature, ProductVersion, Subscription


def _with_contents(qs):
    return qs.select_related("current_version").prefetch_related(
        Prefetch("current_version__prices", queryset=Price.objects.order_by("position")),
        Prefetch("current_version__features", queryset=ProductFeature.objects.select_related("feature").order_by("position")),
    )


def product_get(*, id_or_slug: str) -> Product:
    """A product by its ``pprod_`` id or its slug. Raises NotFound."""
    lookup = Q(pk=id_or_slug) if id_or_slug.startswith("pprod_") else Q(slug=id_or_slug)
    product = _with_contents(Product.objects.filter(lookup)).first()
    if product is None:
        raise NotFound("product", id_or_slug)
    return product


def product_list() -> list[Product]:
    return list(_with_contents(Product.objects.order_by("created_at", "id")))


def product_versions(*, product: Product) -> list[ProductVersion]:
    """Versions oldest first, each with ``subscribers`` (live subscriptions)."""
    return list(
        ProductVersion.objects.filter(product=product)
        .annotate(subscribers=Count("subscriptions", filter=Q(subscriptions__status__in=Subscription.LIVE_STATUSES)))
        .order_by("version")
    )
