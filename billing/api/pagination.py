"""Cursor pagination: newest first, the cursor an opaque token for "older than id N"."""

from __future__ import annotations

import base64
import json

from django.conf import settings

from billing.errors import ValidationFailed

DEFAULT_LIMIT = 20


def encode_cursor(last) -> str:
    """``last`` is an integer id, or (created_at ISO string, id) for tables with random ids."""
    value = list(last) if isinstance(last, tuple) else last
    return base64.urlsafe_b64encode(json.dumps({"before": value}).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None, kind: type = int):
    """The position a cursor names: an int (``kind=int``) or a (created_at, id) pair (``kind=tuple``)."""
    if not raw:
        return None
    try:
        padded = raw + "=" * (-len(raw) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))["before"]
    except (ValueError, KeyError, TypeError, UnicodeError):
        raise ValidationFailed("cursor", "is not a cursor this API returned") from None
    if kind is tuple:
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) and 0 < len(v) <= 64 for v in value)):
            raise ValidationFailed("cursor", "is not a cursor this API returned")
        from django.utils.dateparse import parse_datetime

        try:
            when = parse_datetime(value[0])
        except ValueError:
            when = None
        if when is None:
            raise ValidationFailed("cursor", "is not a cursor this API returned")
        return when, value[1]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise ValidationFailed("cursor", "is not a cursor this API returned")
    return value


def parse_limit(raw: str | None) -> int:
    if raw in (None, ""):
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= settings.API_PAGE_SIZE_MAX:
        raise ValidationFailed("limit", f"must be an integer from 1 to {settings.API_PAGE_SIZE_MAX}")
    return int(raw)


def page(items: list, *, limit: int, render, by_time: bool = False) -> dict:
    """``items`` was fetched with ``limit + 1`` rows so we know whether more follow.
    ``by_time``: rows ordered by (created_at, id) descending, the cursor a pair."""
    more = len(items) > limit
    items = items[:limit]
    cursor = None
    if more:
        last = items[-1]
        cursor = encode_cursor((last.created_at.isoformat(), last.pk) if by_time else last.pk)
    return {"data": [render(item) for item in items], "nextCursor": cursor}

