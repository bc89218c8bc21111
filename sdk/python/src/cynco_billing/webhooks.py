"""Verify an outgoing webhook of the billing service (API.md, "Outgoing webhooks").

Header: ``X-Cynco-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from .errors import WebhookVerificationError

TOLERANCE_SECONDS = 300


def webhook_signature(payload: bytes | str, secret: str, timestamp: int) -> str:
    """The header value the service sends for ``payload`` at ``timestamp`` (for tests)."""
    raw = payload.encode("utf-8") if isinstance(payload, str) else payload
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_webhook(payload: bytes | str, header: str | None, secret: str, *,
                   tolerance: int = TOLERANCE_SECONDS, now: float | None = None) -> dict[str, Any]:
    """The event (``{id, type, createdAt, data}``) of a webhook whose signature checks
    out, compared in constant time, with a timestamp at most ``tolerance`` seconds old.
    Pass the raw body exactly as received. Raises WebhookVerificationError."""
    if not header:
        raise WebhookVerificationError("missing X-Cynco-Signature header", code="INVALID_SIGNATURE")
    timestamp, candidates = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not timestamp.isdigit() or not candidates:
        raise WebhookVerificationError("malformed X-Cynco-Signature header", code="INVALID_SIGNATURE")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        raise WebhookVerificationError(f"webhook timestamp is more than {tolerance} s old", code="INVALID_SIGNATURE")
    raw = payload.encode("utf-8") if isinstance(payload, str) else payload
    expected = webhook_signature(raw, secret, int(timestamp)).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise WebhookVerificationError("webhook signature does not match", code="INVALID_SIGNATURE")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise WebhookVerificationError("webhook body is not JSON", code="INVALID_SIGNATURE") from exc
