from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from billing.api.base import ApiView
from billing.api.fields import ExternalIdField, StrictIntegerField
from billing.api.views.customers import SubscriptionOut
from billing.errors import Conflict
from billing.selectors.catalog import product_get
from billing.services.customers import customer_get_or_create
from billing.services.grants import product_attach


class CustomerRefField(serializers.Field):
    """A customer id, or {id, email?, name?} to create one on the way."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = {"id": data}
        if not isinstance(data, dict):
            raise serializers.ValidationError("must be a customer id or {id, email?, name?}")
        inner = _CustomerRefIn(data=data)
        inner.is_valid(raise_exception=True)
        return inner.validated_data

    def to_representation(self, value):
        return value


class _CustomerRefIn(serializers.Serializer):
    id = ExternalIdField()
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    name = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")


class SubscribeIn(serializers.Serializer):
    customer = CustomerRefField()
    product = serializers.CharField(max_length=100)
    quantity = StrictIntegerField(min_value=1, max_value=100_000, required=False, default=1)


class SubscribeOut(serializers.Serializer):
    subscription = SubscriptionOut(allow_null=True)


class SubscribeView(ApiView):
    audit_action = {"POST": "subscription.create"}

    @extend_schema(operation_id="subscribe", request=SubscribeIn, responses={200: SubscribeOut})
    def post(self, request):
        v = self.validated(SubscribeIn)
        product = product_get(id_or_slug=v["product"])
        if any(p.amount or p.tiers for p in product.current_version.prices.all()):
            raise Conflict(
                "Paid products need payment collection, which this service does not have yet; only free products can be subscribed.",
                details={"product": product.slug, "reason": "payment_not_available"},
            )
        now = timezone.now()
        ref = v["customer"]
        customer, _ = customer_get_or_create(external_id=ref["id"], name=ref["name"], email=ref["email"], now=now)
        with transaction.atomic(durable=True):
            subscription = product_attach(customer=customer, product=product, quantity=v["quantity"], now=now)
        self.audit_target = ("customer", customer.external_id)
        return Response({"subscription": SubscriptionOut(subscription).data if subscription else None})
