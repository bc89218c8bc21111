from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from billing.api.base import ApiView, query_time
from billing.api.pagination import decode_cursor, page, parse_limit
from billing.selectors.audit import audit_event_list


class AuditEventOut(serializers.Serializer):
    id = serializers.IntegerField()
    actor = serializers.CharField()
    action = serializers.CharField()
    targetType = serializers.CharField(source="target_type")
    targetId = serializers.CharField(source="target_id")
    requestId = serializers.CharField(source="request_id")
    data = serializers.JSONField()
    createdAt = serializers.DateTimeField(source="created_at")


class AuditEventListOut(serializers.Serializer):
    data = AuditEventOut(many=True)
    nextCursor = serializers.CharField(allow_null=True)


class AuditEventListView(ApiView):
    @extend_schema(
        operation_id="listAuditEvents",
        parameters=[
            OpenApiParameter("actor", str, description="type:id (api_key:pak_…, staff:alice, system:…) or a bare id"),
            OpenApiParameter("action", str),
            OpenApiParameter("since", str, description="ISO 8601 or epoch ms"),
            OpenApiParameter("cursor", str),
            OpenApiParameter("limit", int),
        ],
        responses={200: AuditEventListOut},
    )
    def get(self, request):
        limit = parse_limit(request.query_params.get("limit"))
        events = audit_event_list(
            actor=request.query_params.get("actor") or None,
            action=request.query_params.get("action") or None,
            since=query_time(request, "since"),
            before_id=decode_cursor(request.query_params.get("cursor")),
            limit=limit + 1,
        )
        return Response(page(events, limit=limit, render=lambda e: AuditEventOut(e).data))
