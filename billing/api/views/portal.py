from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from billing.api.base import ApiView
from billing.api.fields import ExternalIdField
from billing.selectors.customers import customer_get
from portal.tokens import portal_expires_at, portal_token_make, portal_url


class PortalIn(serializers.Serializer):
    customer = ExternalIdField()
    returnUrl = serializers.URLField(max_length=2000, required=False, source="return_url")


class PortalOut(serializers.Serializer):
    url = serializers.CharField()
    expiresAt = serializers.DateTimeField()


class PortalLinkView(ApiView):
    audit_action = {"POST": "portal.link"}

    @extend_schema(operation_id="portal", request=PortalIn, responses={200: PortalOut})
    def post(self, request):
        v = self.validated(PortalIn)
        customer = customer_get(external_id=v["customer"])
        now = timezone.now()
        token = portal_token_make(customer_pk=customer.pk, return_url=v.get("return_url", ""))
        self.audit_target = ("customer", customer.external_id)
        return Response(PortalOut({"url": portal_url(token), "expiresAt": portal_expires_at(now)}).data)
