"""Reads for a customer choosing a plan: listPlans and the pricing table.

A product's *scenario* for a customer is what ``subscribe`` would do with it
(``quote_attach`` decides the same way, at quantity 1, the subscribe default):

- ``current``: the customer has a live subscription to the product;
- ``upgrade`` / ``downgrade``: the customer has another main plan in the
  product's group (the same ``Subscription.slot``) and the product is worth
  at least as much / less per month (``monthly_value``; equal counts as an
  upgrade, as in ``quote_attach``);
- ``new``: anything else, including products in another group or in none,
  and every product when no customer is given.
"""

from __future__ import annotations

from dataclasses import dataclass

from billing.models import Customer, Feature, Price, Product, ProductFeature, ProductVersion, Subscription
from billing.money import money_format
from billing.rating import tiered_amount
from billing.selectors.catalog import product_list
from billing.services.grants import subscription_slot
from billing.services.subscriptions import monthly_value


@dataclass(frozen=True)
class PlanChoice:
    product: Product
    scenario: str  # new | current | upgrade | downgrade
    eligible: bool
    trial_available: bool


@dataclass(frozen=True)
class PricingRow:
    product: Product
    formatted_price: str
    features: list[str]
    scenario: str


def _prices(version: ProductVersion) -> list[Price]:
    return list(version.prices.all())  # prefetched in position order by product_list


def is_one_off(product: Product) -> bool:
    return any(p.type == Price.Type.ONE_OFF for p in _prices(product.current_version))


class _Holdings:
    """What one customer holds: live subscriptions by product and by slot, and
    the products they ever had a trial of."""

    def __init__(self, customer: Customer | None):
        self.customer = customer
        self.by_product: dict[str, Subscription] = {}
        self.by_slot: dict[str, Subscription] = {}
        self.trialled: set[str] = set()
        if customer is None:
            return
        live = Subscription.objects.filter(customer=customer, status__in=Subscription.LIVE_STATUSES)
        for sub in live.select_related("version"):
            self.by_product[sub.product_id] = sub
            self.by_slot[sub.slot] = sub
        self.trialled = set(
            Subscription.objects.filter(customer=customer, trial_end__isnull=False).values_list("product_id", flat=True)
        )

    def scenario(self, product: Product) -> str:
        if self.customer is None:
            return "new"
        if product.pk in self.by_product:
            return "current"
        if is_one_off(product):
            return "new"  # a top-up can always be bought again
        held = self.by_slot.get(subscription_slot(product))
        if held is None:
            return "new"
        if monthly_value(product.current_version, 1) < monthly_value(held.version, held.quantity):
            return "downgrade"
        return "upgrade"

    def trial_available(self, product: Product, scenario: str) -> bool:
        # quote_attach starts a trial only for a new subscription (not on an upgrade),
        # and only to a customer who never had one of this product.
        return bool(product.current_version.free_trial_days) and scenario == "new" and product.pk not in self.trialled


def plan_choices(*, customer: Customer | None) -> list[PlanChoice]:
    """Every main plan (recurring or free; not one-off, not an add-on) with the
    customer's scenario, oldest product first.

    Add-ons are left out: they live beside the main plan in a slot of their
    own, so they are never an upgrade or a downgrade of it, and a plan picker
    that offered them next to the plans would suggest a choice that is not one.
    The pricing table lists them. ``eligible`` is false only for ``current``
    (subscribing again would be a 409); ``trial_available`` when ``subscribe``
    would start a free trial.
    """
    holdings = _Holdings(customer)
    choices = []
    for product in product_list():
        if product.is_add_on or is_one_off(product):
            continue
        scenario = holdings.scenario(product)
        choices.append(PlanChoice(product=product, scenario=scenario, eligible=scenario != "current",
                                  trial_available=holdings.trial_available(product, scenario)))
    return choices


# --- the pricing table ----------------------------------------------------------


def price_label(version: ProductVersion) -> str:
    """"$20.00 / month", "€9.99 one-off", "From $1.00 / month" (tiers: one unit), or "Free"."""
    prices = _prices(version)
    if all(p.amount == 0 and not p.tiers for p in prices):
        return "Free"
    price = prices[0]
    if price.tiers:
        one_unit = tiered_amount(tiers=price.tiers, mode=price.tiers_mode, quantity=1)
        text = "From " + money_format(one_unit, price.currency)
    else:
        text = money_format(price.amount, price.currency)
    if price.type == Price.Type.ONE_OFF:
        return f"{text} one-off"
    return f"{text} / {price.billing_interval}"


def _feature_name(feature: Feature) -> str:
    # A feature created without a name is named by its slug: "api-calls" reads "api calls".
    if feature.name == feature.slug:
        return feature.slug.replace("-", " ").replace("_", " ")
    return feature.name


def feature_label(pf: ProductFeature, *, price: Price | None) -> str:
    """"SSO", "Unlimited api calls", "1,000 tokens per month, then $0.02 each", "5 seats"."""
    name = _feature_name(pf.feature)
    if pf.feature.type == Feature.Type.BOOLEAN:
        return name
    if pf.allowance_type == ProductFeature.AllowanceType.UNLIMITED:
        text = f"Unlimited {name}"
    else:
        text = f"{pf.allowance or 0:,} {name}"
        interval = pf.reset_interval
        if interval == "billing_period" and price is not None:
            interval = price.billing_interval
        if interval in ("day", "week", "month", "year"):
            text += f" per {interval}"
        if pf.overage_allowed and pf.overage_price is not None and price is not None:
            text += f", then {money_format(pf.overage_price, price.currency)} each"
    if pf.per_entity:
        text += " per entity"
    return text


def pricing_table(*, customer: Customer | None) -> list[PricingRow]:
    """Every product as a pricing page shows it: the main plans first (as
    ``plan_choices`` lists them), then add-ons, then one-off purchases, each
    group oldest first; a one-off product is always ``new``."""
    holdings = _Holdings(customer)
    products = product_list()

    def rank(product: Product) -> int:
        return 2 if is_one_off(product) else 1 if product.is_add_on else 0

    rows = []
    for product in sorted(products, key=rank):  # stable: keeps the age order within a rank
        version = product.current_version
        prices = _prices(version)
        price = prices[0] if prices else None
        rows.append(PricingRow(
            product=product,
            formatted_price=price_label(version),
            features=[feature_label(pf, price=price) for pf in version.features.all()],
            scenario=holdings.scenario(product),
        ))
    return rows
