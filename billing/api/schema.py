"""OpenAPI description of our authentication, for drf-spectacular."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "billing.api.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "Secret (cp_sk_…) or publishable (cp_pk_…) key"}


# Every error body of both APIs (shared/API.md, "Errors"): one component, and the
# statuses each surface may answer, on every operation of that surface.
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"nullable": True},
            },
        }
    },
}
MERCHANT_ERRORS = {
    "401": "Missing, unknown or revoked key",
    "403": "Publishable key on a secret-only route",
    "404": "Unknown resource (details.resource)",
    "409": "State does not allow it, or the same Idempotency-Key is still being processed",
    "415": "Body is not JSON",
    "422": "Bad input (details: [{field, message}]) or Idempotency-Key reused with another body",
    "429": "Over the per-key rate limit (Retry-After says when to come back)",
}
CREDITS_ERRORS = {
    "400": "Bad shape, or a fractional / non-positive amount",
    "401": "Bad, missing, stale or replayed signature",
    "402": "Insufficient credits (details: {required, available})",
    "404": "No wallet for the workspace",
    "409": "Duplicate request (details hold the prior entry)",
    "415": "Body is not JSON",
    "423": "Wallet frozen by staff",
    "429": "Over the per-service rate limit, or too many refused signatures from the client address "
           "(Retry-After says when to come back)",
}


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: document the error answers."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        errors = CREDITS_ERRORS if path.startswith("/api/v1/credits/") else MERCHANT_ERRORS
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in errors.items():
                responses.setdefault(status, {"description": description, "content": {"application/json": {"schema": ref}}})
    return result
