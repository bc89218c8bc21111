"""Cursor pagination: newest first, the cursor an opaque token for "older than id N"."""

from __future__ import annotations

import base64
import json

from django.conf import settings

from billing.errors import ValidationFailed

DEFAULT_LIMIT = 20


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": last_id}).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> int | None:
    if not raw:
        return None
    try:
        padded = raw + "=" * (-len(raw) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))["before"]
    except (ValueError, KeyError, TypeError, UnicodeError):
        raise ValidationFailed("cursor", "is not a cursor this API returned") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise ValidationFailed("cursor", "is not a cursor this API returned")
    return value


def parse_limit(raw: str | None) -> int:
    if raw in (None, ""):
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= settings.API_PAGE_SIZE_MAX:
        raise ValidationFailed("limit", f"must be an integer from 1 to {settings.API_PAGE_SIZE_MAX}")
    return int(raw)


def page(items: list, *, limit: int, render) -> dict:
    """``items`` was fetched with ``limit + 1`` rows so we know whether more follow."""
    more = len(items) > limit
    items = items[:limit]
    return {"data": [render(item) for item in items], "nextCursor": encode_cursor(items[-1].pk) if more else None}
