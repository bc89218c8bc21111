"""The credits API's exception handler: API.md's error body with the credits
table's codes (bad input is 400 INVALID_REQUEST here, not the merchant API's 422)."""

from __future__ import annotations

import logging

from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from billing.api.errors import SIMPLE_ERRORS, error_body, flatten_validation, other_error, retry_after
from billing.api.parsers import BodyInvalid
from billing.errors import BillingError

logger = logging.getLogger("credits.api")

# The merchant API's table, except that every refusal of the caller is a 401
# and there is no NotFound from DRF (unknown workspaces are our own 404).
_SIMPLE = {
    **{cls: entry for cls, entry in SIMPLE_ERRORS.items() if cls is not exceptions.NotFound},
    exceptions.PermissionDenied: (401, "UNAUTHORIZED"),
}


def exception_handler(exc, context):
    headers = {}
    if isinstance(exc, BillingError):
        status, body = exc.status, error_body(exc.code, exc.message, exc.details)
    elif isinstance(exc, BodyInvalid) and exc.status_code == 413:
        status, body = 413, error_body("PAYLOAD_TOO_LARGE", str(exc.detail), [{"field": "body", "message": str(exc.detail)}])
    elif isinstance(exc, BodyInvalid):
        details = [{"field": exc.field, "message": str(exc.detail)}]
        status, body = 400, error_body("INVALID_REQUEST", f"{exc.field}: {exc.detail}", details)
    elif isinstance(exc, exceptions.ParseError):
        status, body = 400, error_body("INVALID_REQUEST", f"body: {exc.detail}", [{"field": "body", "message": str(exc.detail)}])
    elif isinstance(exc, exceptions.ValidationError):
        details = flatten_validation(exc.detail)
        first = details[0] if details else {"field": "body", "message": "invalid"}
        status, body = 400, error_body("INVALID_REQUEST", f"{first['field']}: {first['message']}", details)
    else:
        status, body = other_error(exc, context, table=_SIMPLE, log=logger)
    headers.update(retry_after(exc))
    if status == 401:
        headers["WWW-Authenticate"] = 'HMAC-SHA256 realm="credits"'
    set_rollback()
    return Response(body, status=status, headers=headers)
