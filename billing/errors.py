"""The one base error of the service.

Each subclass lives in the module that raises it; ``billing.api.errors``
renders every one of them as ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from typing import Any


class BillingError(Exception):
    status = 400
    code = "BAD_REQUEST"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class NotFound(BillingError):
    status = 404
    code = "NOT_FOUND"

    def __init__(self, resource: str, identifier: str | None = None):
        message = f"No such {resource}" + (f": {identifier!r}" if identifier is not None else "")
        super().__init__(message, details={"resource": resource, "id": identifier})


class Conflict(BillingError):
    status = 409
    code = "CONFLICT"


class ValidationFailed(BillingError):
    """Bad input found by a service: ``details`` is ``[{field, message}]``."""

    status = 422
    code = "VALIDATION_ERROR"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", details=[{"field": field, "message": message}])
