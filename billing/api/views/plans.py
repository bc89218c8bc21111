"""listPlans and getPricingTable: what a customer may choose, for a plan picker
or a pricing page. Publishable keys may call both (a browser passes the
customer's id)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from billing.api.base import ApiView
from billing.api.views.products import ProductOut, render_product
from billing.selectors.customers import customer_get
from billing.selectors.plans import plan_choices, pricing_table

SCENARIOS = ["new", "current", "upgrade", "downgrade"]


class PlanOut(serializers.Serializer):
    product = ProductOut()
    eligible = serializers.BooleanField()
    scenario = serializers.ChoiceField(choices=SCENARIOS)
    trialAvailable = serializers.BooleanField()


class PlanListOut(serializers.Serializer):
    data = PlanOut(many=True)


class PricingRowOut(serializers.Serializer):
    product = serializers.CharField(help_text="The product's slug")
    name = serializers.CharField()
    formattedPrice = serializers.CharField()
    features = serializers.ListField(child=serializers.CharField())
    scenario = serializers.ChoiceField(choices=SCENARIOS)


class PricingTableOut(serializers.Serializer):
    data = PricingRowOut(many=True)


CUSTOMER_PARAM = OpenApiParameter("customer", str, description="Without it, every product is `new`.")


def _customer(request):
    customer_id = request.query_params.get("customer")
    return customer_get(external_id=customer_id) if customer_id else None


class PlanListView(ApiView):
    publishable_allowed = True

    @extend_schema(operation_id="listPlans", parameters=[CUSTOMER_PARAM], responses={200: PlanListOut})
    def get(self, request):
        choices = plan_choices(customer=_customer(request))
        return Response({"data": [
            {"product": render_product(c.product), "eligible": c.eligible, "scenario": c.scenario,
             "trialAvailable": c.trial_available}
            for c in choices
        ]})


class PricingTableView(ApiView):
    publishable_allowed = True

    @extend_schema(operation_id="getPricingTable", parameters=[CUSTOMER_PARAM], responses={200: PricingTableOut})
    def get(self, request):
        rows = pricing_table(customer=_customer(request))
        return Response({"data": [
            {"product": r.product.slug, "name": r.product.name, "formattedPrice": r.formatted_price,
             "features": r.features, "scenario": r.scenario}
            for r in rows
        ]})
