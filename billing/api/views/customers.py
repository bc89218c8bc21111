from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from billing.api.base import ApiView
from billing.api.fields import ExternalIdField, MetadataField, StrictCharField
from billing.api.pagination import decode_cursor, page, parse_limit
from billing.selectors.customers import customer_get, customer_list, customer_subscriptions
from billing.selectors.entitlements import customer_balances
from billing.services.customers import customer_delete, customer_get_or_create, customer_update


class CustomerIn(serializers.Serializer):
    customerId = ExternalIdField()
    name = StrictCharField(max_length=255, required=False, allow_blank=True)
    email = serializers.EmailField(max_length=320, required=False, allow_blank=True)
    metadata = MetadataField(required=False)


class CustomerPatchIn(serializers.Serializer):
    name = StrictCharField(max_length=255, required=False, allow_blank=True)
    email = serializers.EmailField(max_length=320, required=False, allow_blank=True)
    metadata = MetadataField(required=False)


class SubscriptionOut(serializers.Serializer):
    id = serializers.CharField()
    product = serializers.CharField(source="product.slug")
    productId = serializers.CharField(source="product_id")
    versionId = serializers.CharField(source="version_id")
    version = serializers.IntegerField(source="version.version")
    status = serializers.CharField()
    quantity = serializers.IntegerField()
    currentPeriodStart = serializers.DateTimeField(source="current_period_start", allow_null=True)
    currentPeriodEnd = serializers.DateTimeField(source="current_period_end", allow_null=True)
    trialEnd = serializers.DateTimeField(source="trial_end", allow_null=True)
    cancelAtPeriodEnd = serializers.BooleanField(source="cancel_at_period_end")
    canceledAt = serializers.DateTimeField(source="canceled_at", allow_null=True)


class CustomerBalanceOut(serializers.Serializer):
    granted = serializers.IntegerField()
    usage = serializers.IntegerField()
    remaining = serializers.IntegerField()
    unlimited = serializers.BooleanField()
    nextResetAt = serializers.DateTimeField(allow_null=True)


class CustomerOut(serializers.Serializer):
    id = serializers.CharField(source="external_id")
    name = serializers.CharField()
    email = serializers.CharField()
    metadata = serializers.JSONField()
    subscriptions = SubscriptionOut(many=True)
    balances = serializers.DictField(child=CustomerBalanceOut())
    flags = serializers.DictField(child=serializers.BooleanField())
    paymentMethods = serializers.ListField(child=serializers.DictField())
    createdAt = serializers.DateTimeField(source="created_at")


class CustomerListOut(serializers.Serializer):
    data = CustomerOut(many=True)
    nextCursor = serializers.CharField(allow_null=True)


def render_customer(customer) -> dict:
    """The wire form."""
    balances, flags = customer_balances(customer=customer)
    view = {
        "external_id": customer.external_id,
        "name": customer.name,
        "email": customer.email,
        "metadata": customer.metadata,
        "subscriptions": customer_subscriptions(customer=customer),
        "balances": balances,
        "flags": flags,
        "paymentMethods": [
            {"id": pm.pk, "gateway": pm.gateway, "brand": pm.brand, "last4": pm.last4, "isDefault": pm.is_default}
            for pm in customer.payment_methods.all()
        ],
        "created_at": customer.created_at,
    }
    return CustomerOut(view).data


class CustomerCollectionView(ApiView):
    audit_action = {"POST": "customer.get_or_create"}

    @extend_schema(
        operation_id="getOrCreateCustomer", request=CustomerIn, responses={200: CustomerOut, 201: CustomerOut}
    )
    def post(self, request):
        v = self.validated(CustomerIn)
        customer, created = customer_get_or_create(
            external_id=v["customerId"],
            name=v.get("name", ""),
            email=v.get("email", ""),
            metadata=v.get("metadata"),
            now=timezone.now(),
        )
        self.audit_target = ("customer", customer.external_id)
        return Response(render_customer(customer), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        operation_id="listCustomers",
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("limit", int)],
        responses={200: CustomerListOut},
    )
    def get(self, request):
        limit = parse_limit(request.query_params.get("limit"))
        before = decode_cursor(request.query_params.get("cursor"))
        items = customer_list(before_id=before, limit=limit + 1)
        return Response(page(items, limit=limit, render=render_customer))


class CustomerDetailView(ApiView):
    audit_action = {"PATCH": "customer.update", "DELETE": "customer.delete"}

    @extend_schema(operation_id="getCustomer", responses={200: CustomerOut})
    def get(self, request, customer_id: str):
        return Response(render_customer(customer_get(external_id=customer_id)))

    @extend_schema(operation_id="updateCustomer", request=CustomerPatchIn, responses={200: CustomerOut})
    def patch(self, request, customer_id: str):
        customer = customer_get(external_id=customer_id)
        v = self.validated(CustomerPatchIn)
        customer = customer_update(customer=customer, **v, now=timezone.now())
        self.audit_target = ("customer", customer.external_id)
        return Response(render_customer(customer))

    @extend_schema(operation_id="deleteCustomer", request=None, responses={204: None})
    def delete(self, request, customer_id: str):
        customer = customer_get(external_id=customer_id)
        customer_delete(customer=customer, now=timezone.now())
        self.audit_target = ("customer", customer.external_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
