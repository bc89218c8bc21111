"""Inbound gateway webhooks. No API key: the gateway's signature is the
authentication. The view verifies it, makes one domain call, and answers 200
(also for an event seen before, so the gateway stops retrying it)."""

from __future__ import annotations

from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from billing.api.errors import error_body
from billing.errors import BillingError
from billing.gateways.stripe import StripeGateway
from billing.services.gateway_events import gateway_event_receive


@csrf_exempt
def stripe_webhook(request):
    if request.method != "POST":
        response = JsonResponse(error_body("METHOD_NOT_ALLOWED", f'Method "{request.method}" not allowed.'), status=405)
        response["Allow"] = "POST"
        return response
    try:
        signature = request.headers.get("Stripe-Signature", "")
        event = StripeGateway().webhook_event(payload=request.body, signature=signature)
        processed = gateway_event_receive(gateway="stripe", event=event, now=timezone.now())
    except BillingError as exc:
        return JsonResponse(error_body(exc.code, exc.message, exc.details), status=exc.status)
    return JsonResponse({"received": True, "duplicate": not processed})
