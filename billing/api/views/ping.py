from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from billing.api.base import ApiView


class PingView(ApiView):
    """An authenticated no-op: the framework's ceiling for benchmarks, and a key check for clients."""

    publishable_allowed = True

    @extend_schema(operation_id="ping", responses={200: inline_serializer("Ping", {"ok": serializers.BooleanField()})})
    def get(self, request):
        return Response({"ok": True})
