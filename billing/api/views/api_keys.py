from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from billing.api.base import ApiView
from billing.api.fields import StrictCharField
from billing.models import ApiKey
from billing.services.api_keys import api_key_create, api_key_revoke


class ApiKeyIn(serializers.Serializer):
    name = StrictCharField(max_length=200)
    type = serializers.ChoiceField(choices=ApiKey.Type.choices)


class ApiKeyOut(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    type = serializers.CharField()
    maskedKey = serializers.CharField(source="masked_key")
    createdAt = serializers.DateTimeField(source="created_at")
    revokedAt = serializers.DateTimeField(source="revoked_at", allow_null=True)
    lastUsedAt = serializers.DateTimeField(source="last_used_at", allow_null=True)


class ApiKeyCreatedOut(ApiKeyOut):
    rawKey = serializers.CharField(help_text="Shown only in this response.")


class ApiKeyListOut(serializers.Serializer):
    data = ApiKeyOut(many=True)


class ApiKeyCollectionView(ApiView):
    audit_action = {"POST": "api_key.create"}
    idempotency_redact = ("rawKey",)

    @extend_schema(operation_id="createApiKey", request=ApiKeyIn, responses={201: ApiKeyCreatedOut})
    def post(self, request):
        v = self.validated(ApiKeyIn)
        key, raw_key = api_key_create(**v, now=timezone.now())
        self.audit_target = ("api_key", key.pk)
        body = dict(ApiKeyOut(key).data, rawKey=raw_key)
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(operation_id="listApiKeys", responses={200: ApiKeyListOut})
    def get(self, request):
        return Response({"data": ApiKeyOut(ApiKey.objects.order_by("-created_at"), many=True).data})


class ApiKeyDetailView(ApiView):
    audit_action = {"DELETE": "api_key.revoke"}

    @extend_schema(operation_id="revokeApiKey", request=None, responses={204: None})
    def delete(self, request, key_id: str):
        key = api_key_revoke(key_id=key_id, now=timezone.now())
        self.audit_target = ("api_key", key.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
