"""One exception handler that renders every error as API.md's body."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from billing.api.parsers import BodyInvalid
from billing.errors import BillingError

logger = logging.getLogger("billing.api")


def error_body(code: str, message: str, details=None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


def flatten_validation(detail, prefix: str = "") -> list[dict]:
    """DRF's nested error detail as ``[{field, message}]`` with dotted paths."""
    out: list[dict] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "body" if key in ("non_field_errors", "__all__") and not prefix else key
            field = f"{prefix}.{name}" if prefix and name != "body" else (prefix or name)
            out.extend(flatten_validation(value, field))
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                out.extend(flatten_validation(value, f"{prefix}.{index}" if prefix else str(index)))
            else:
                out.append({"field": prefix or "body", "message": str(value)})
    else:
        out.append({"field": prefix or "body", "message": str(detail)})
    return out


# DRF exceptions that map straight to (status, code); the credits API adapts this table.
SIMPLE_ERRORS = {
    exceptions.NotAuthenticated: (401, "UNAUTHORIZED"),
    exceptions.AuthenticationFailed: (401, "UNAUTHORIZED"),
    exceptions.PermissionDenied: (403, "FORBIDDEN"),
    exceptions.NotFound: (404, "NOT_FOUND"),
    exceptions.MethodNotAllowed: (405, "METHOD_NOT_ALLOWED"),
    exceptions.NotAcceptable: (406, "NOT_ACCEPTABLE"),
    exceptions.UnsupportedMediaType: (415, "UNSUPPORTED_MEDIA_TYPE"),
    exceptions.Throttled: (429, "RATE_LIMITED"),
}


def exception_handler(exc, context):
    headers = {}
    if isinstance(exc, BillingError):
        status, body = exc.status, error_body(exc.code, exc.message, exc.details)
    elif isinstance(exc, BodyInvalid):
        code = "PAYLOAD_TOO_LARGE" if exc.status_code == 413 else "VALIDATION_ERROR"
        details = [{"field": exc.field, "message": str(exc.detail)}]
        status, body = exc.status_code, error_body(code, f"{exc.field}: {exc.detail}", details)
    elif isinstance(exc, exceptions.ParseError):
        details = [{"field": "body", "message": str(exc.detail)}]
        status, body = 422, error_body("VALIDATION_ERROR", f"body: {exc.detail}", details)
    elif isinstance(exc, exceptions.ValidationError):
        details = flatten_validation(exc.detail)
        first = details[0] if details else {"field": "body", "message": "invalid"}
        status, body = 422, error_body("VALIDATION_ERROR", f"{first['field']}: {first['message']}", details)
    elif isinstance(exc, (Http404, exceptions.NotFound)):
        status, body = 404, error_body("NOT_FOUND", "Not found.", {"resource": "route"})
    elif isinstance(exc, DjangoPermissionDenied):
        status, body = 403, error_body("FORBIDDEN", "Forbidden.")
    else:
        status, body = other_error(exc, context, table=SIMPLE_ERRORS, log=logger)
        headers.update(retry_after(exc))
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
    set_rollback()
    return Response(body, status=status, headers=headers)


def other_error(exc, context, *, table: dict, log: logging.Logger) -> tuple[int, dict]:
    """The answer to an exception no rule of the API names: by ``table`` (DRF class →
    (status, code)), else a DRF exception by its own status and code, else a logged 500
    (the request's transaction is rolled back, so nothing was changed). Both APIs use it."""
    for cls, (status, code) in table.items():
        if isinstance(exc, cls):
            return status, error_body(code, str(exc.detail))
    if isinstance(exc, exceptions.APIException):
        return exc.status_code, error_body(str(exc.default_code).upper(), str(exc.detail))
    log.exception("unhandled error in %s", context.get("view").__class__.__name__)
    return 500, error_body("INTERNAL_ERROR", "Internal error; nothing was changed.")


def retry_after(exc) -> dict:
    """``Retry-After`` for a throttled request (whole seconds, rounded up)."""
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        return {"Retry-After": str(int(exc.wait) + 1)}
    return {}


def json_404(request, exception=None):
    """JSON under /api/, Django's page elsewhere (admin, portal)."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("NOT_FOUND", "Not found.", {"resource": "route"}), status=404)
    return defaults.page_not_found(request, exception)


def json_500(request):
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("INTERNAL_ERROR", "Internal error."), status=500)
    return defaults.server_error(request)
