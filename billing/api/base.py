"""The base view of the merchant API: auth, idempotency, audit, clean path ids.

A view subclass validates its input, makes one domain call and renders the
result; it names its audit action (``audit_action``) and, once it knows the
object it acted on, sets ``self.audit_target = (type, id)``.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from billing.api import idempotency
from billing.api.fields import TimestampField
from billing.api.parsers import check_text
from billing.errors import ValidationFailed
from billing.services.audit import audit_record

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ApiView(APIView):
    publishable_allowed = False
    audit_action: str | dict[str, str] | None = None
    # Top-level response fields never written to the idempotency table (secrets
    # shown once, such as a new key's rawKey): a replay answers them as null.
    idempotency_redact: tuple[str, ...] = ()

    def validated(self, serializer_class) -> dict:
        """The request body checked by ``serializer_class``; a 422 naming the fields otherwise.

        A serializer may have a ``plain(data)`` shortcut for the hot routes: plain code
        that accepts only bodies the serializer accepts and returns the same validated
        data, or None (then the serializer decides, and words any error)."""
        plain = getattr(serializer_class, "plain", None)
        if plain is not None and (data := plain(self.request.data)) is not None:
            return data
        serializer = serializer_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def initialize_request(self, request: HttpRequest, *args, **kwargs) -> Request:
        self._idempotency_record = None
        self.audit_target: tuple[str, str] | None = None
        return super().initialize_request(request, *args, **kwargs)

    def initial(self, request: Request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication and permissions
        for name, value in kwargs.items():
            check_text(value, name)
        for name, value in request.query_params.items():
            check_text(value, name)
        raw_key = request.headers.get(idempotency.HEADER)
        if request.method in MUTATING and raw_key is not None:
            key = idempotency.validate_key(raw_key)
            body = request._request.body  # read once; DRF parses from the cached copy
            self._idempotency_record = idempotency.idempotency_begin(
                api_key=request.auth,
                key=key,
                fingerprint=idempotency.request_fingerprint(
                    method=request.method, path=request.path, body=body
                ),
                method=request.method,
                path=request.path,
                now=timezone.now(),
            )

    def handle_exception(self, exc):
        if isinstance(exc, idempotency.IdempotentReplay):
            record = exc.record
            response = HttpResponse(
                record.response_body, status=record.response_status, content_type="application/json"
            )
            if not record.response_body:
                response = HttpResponse(status=record.response_status)
            response[idempotency.HEADER] = record.key
            response["Idempotent-Replayed"] = "true"
            return response
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        record = self._idempotency_record
        if record is not None:
            if response.status_code >= 500:
                idempotency.idempotency_abandon(record=record)
            else:
                idempotency.idempotency_complete(
                    record=record, status=response.status_code, body=self._storable_body(response)
                )
        if request.method in MUTATING and 200 <= response.status_code < 300 and not response.has_header(
            "Idempotent-Replayed"
        ):
            self._audit(request, response)
        return response

    def _storable_body(self, response) -> str:
        if hasattr(response, "render"):
            response.render()
        body = response.content.decode("utf-8")
        if self.idempotency_redact and isinstance(getattr(response, "data", None), dict):
            redacted = {k: (None if k in self.idempotency_redact else v) for k, v in response.data.items()}
            body = response.accepted_renderer.render(redacted).decode("utf-8")
        return body

    def _audit(self, request, response) -> None:
        action = self.audit_action
        if isinstance(action, dict):
            action = action.get(request.method)
        if not action or getattr(request, "auth", None) is None:
            return
        target_type, target_id = self.audit_target or ("", "")
        audit_record(
            actor_type="api_key",
            actor_id=request.auth.pk,
            action=action,
            target_type=target_type,
            target_id=target_id,
            request_id=getattr(request._request, "request_id", ""),
            data={"method": request.method, "path": request.path, "status": response.status_code},
            now=timezone.now(),
        )


def query_time(request: Request, name: str):
    """A query-string time (ISO 8601 or epoch ms) or None; 422 naming the parameter."""
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return TimestampField().to_internal_value(int(raw) if raw.isdigit() else raw)
    except (serializers.ValidationError, OverflowError, ValueError):
        raise ValidationFailed(name, "must be an ISO 8601 time or epoch milliseconds") from None
