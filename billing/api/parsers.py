"""A JSON parser that refuses what PostgreSQL or the rules would choke on later.

Refused with a 422 naming the field: duplicate object keys, NaN/Infinity,
strings holding NUL or lone surrogates (PostgreSQL cannot store them), nesting
deeper than ``MAX_DEPTH``, bodies over ``API_MAX_BODY_BYTES``.
"""

from __future__ import annotations

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

MAX_DEPTH = 32


class BodyInvalid(ParseError):
    """A body that is not acceptable JSON; ``field`` says where."""

    def __init__(self, message: str, field: str = "body", status_code: int = 422):
        super().__init__(message)
        self.field = field
        self.status_code = status_code


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise BodyInvalid(f"duplicate key {key!r} in JSON object", field=key)
        obj[key] = value
    return obj


def _refuse_constant(name):
    raise BodyInvalid(f"{name} is not valid JSON")


def check_text(value: str, field: str) -> None:
    if "\x00" in value:
        raise BodyInvalid("must not contain NUL characters", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BodyInvalid("must be valid Unicode (no lone surrogates)", field=field) from None


def _walk(value, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BodyInvalid(f"nested deeper than {MAX_DEPTH} levels", field=path or "body")
    if isinstance(value, str):
        check_text(value, path or "body")
    elif isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            check_text(key, sub)
            _walk(item, sub, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f"{path}.{index}" if path else str(index), depth + 1)


def parse_json_bytes(raw: bytes):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyInvalid("body is not UTF-8") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except RecursionError:
        raise BodyInvalid(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        if isinstance(exc, BodyInvalid):
            raise
        raise BodyInvalid(f"malformed JSON: {exc}") from None
    _walk(data, "", 0)
    return data


class StrictJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.API_MAX_BODY_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise BodyInvalid(f"body is larger than {limit} bytes", status_code=413)
        if not raw.strip():
            return {}
        return parse_json_bytes(raw)
