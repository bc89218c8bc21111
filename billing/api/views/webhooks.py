"""Webhook endpoints of the merchant API: create (the signing secret is shown
only then), list, get, delete, and send a test event. Secret key only."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from billing.api.base import ApiView
from billing.api.fields import StrictCharField
from billing.models import WebhookEndpoint
from billing.selectors.webhooks import webhook_endpoint_get, webhook_endpoint_list
from billing.services.events import EVENT_TYPES
from billing.services.webhooks import webhook_endpoint_create, webhook_endpoint_delete, webhook_endpoint_test


class WebhookIn(serializers.Serializer):
    url = StrictCharField(max_length=2000, help_text="absolute http(s) URL the events are POSTed to")
    events = serializers.ListField(
        child=StrictCharField(max_length=64), required=False, default=list, max_length=len(EVENT_TYPES) + 1,
        help_text='event types to receive; empty or ["*"] for all of them: ' + ", ".join(EVENT_TYPES),
    )


class WebhookOut(serializers.Serializer):
    id = serializers.CharField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    status = serializers.CharField(help_text="active, or disabled after failing for WEBHOOK_DISABLE_AFTER_SECONDS")
    disabledReason = serializers.CharField(source="disabled_reason")
    failingSince = serializers.DateTimeField(source="failing_since", allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at")


class WebhookCreatedOut(WebhookOut):
    secret = serializers.CharField(help_text="whsec_… signing secret, shown only in this response")


class WebhookTestOut(serializers.Serializer):
    delivered = serializers.BooleanField(help_text="the receiver answered 2xx")
    status = serializers.IntegerField(source="status_code", allow_null=True,
                                      help_text="the receiver's HTTP status; null when no answer came")
    latencyMs = serializers.IntegerField(source="latency_ms")
    error = serializers.CharField(allow_null=True, help_text="why no answer came (refused, timeout, connection); "
                                                             "null when the receiver answered")
    eventId = serializers.CharField(source="event_id", help_text="id of the webhook.test event sent")


class WebhookListOut(serializers.Serializer):
    data = WebhookOut(many=True)


def render_webhook(endpoint: WebhookEndpoint) -> dict:
    return WebhookOut(endpoint).data


class WebhookCollectionView(ApiView):
    audit_action = {"POST": "webhook.create"}
    idempotency_redact = ("secret",)

    @extend_schema(operation_id="createWebhook", request=WebhookIn, responses={201: WebhookCreatedOut})
    def post(self, request):
        v = self.validated(WebhookIn)
        endpoint, secret = webhook_endpoint_create(url=v["url"], events=v["events"], now=timezone.now())
        self.audit_target = ("webhook_endpoint", endpoint.pk)
        return Response(dict(render_webhook(endpoint), secret=secret), status=status.HTTP_201_CREATED)

    @extend_schema(operation_id="listWebhooks", responses={200: WebhookListOut})
    def get(self, request):
        return Response({"data": [render_webhook(e) for e in webhook_endpoint_list()]})


class WebhookDetailView(ApiView):
    audit_action = {"DELETE": "webhook.delete"}

    @extend_schema(operation_id="getWebhook", responses={200: WebhookOut})
    def get(self, request, webhook_id: str):
        return Response(render_webhook(webhook_endpoint_get(endpoint_id=webhook_id)))

    @extend_schema(operation_id="deleteWebhook", request=None, responses={204: None})
    def delete(self, request, webhook_id: str):
        endpoint = webhook_endpoint_delete(endpoint_id=webhook_id, now=timezone.now())
        self.audit_target = ("webhook_endpoint", endpoint.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookTestView(ApiView):
    # No audit_action: the service records "webhook.test" itself, with the outcome.

    @extend_schema(operation_id="testWebhook", request=None, responses={200: WebhookTestOut})
    def post(self, request, webhook_id: str):
        result = webhook_endpoint_test(endpoint_id=webhook_id, actor_type="api_key", actor_id=request.auth.pk,
                                       request_id=getattr(request._request, "request_id", ""), now=timezone.now())
        return Response(WebhookTestOut(result).data)
