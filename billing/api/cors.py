"""CORS for the routes a publishable key may call (API.md), from CORS_ALLOWED_ORIGINS.

Only views with ``publishable_allowed`` answer cross-origin requests; secret
routes never do, whatever the origin, so a browser can never be used to reach
them with a leaked secret key.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from django.urls import Resolver404, resolve

ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-Id"
EXPOSE_HEADERS = "Idempotent-Replayed, X-Request-Id"


def _publishable_route(path: str) -> bool:
    try:
        match = resolve(path)
    except Resolver404:
        return False
    view_class = getattr(match.func, "view_class", None)
    return bool(getattr(view_class, "publishable_allowed", False))


class PublishableCorsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        origin = request.headers.get("Origin")
        if not origin or origin not in settings.CORS_ALLOWED_ORIGINS or not request.path.startswith("/api/v1/pay/"):
            return self.get_response(request)
        if not _publishable_route(request.path):
            return self.get_response(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response = HttpResponse(status=204)
            response["Access-Control-Allow-Methods"] = "GET, POST"
            response["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response["Access-Control-Max-Age"] = "600"
        else:
            response = self.get_response(request)
            response["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        response["Access-Control-Allow-Origin"] = origin
        response["Vary"] = "Origin"
        return response
