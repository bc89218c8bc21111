"""Serializer fields that take JSON types as they are: no "12" for 12, no 1 for true."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.money import CURRENCY_RE, MAX_AMOUNT


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {"invalid": "A JSON integer is required."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class AmountField(StrictIntegerField):
    """Money in integer minor units, 0 ≤ amount ≤ 10^15."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_AMOUNT)
        super().__init__(**kwargs)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "A JSON boolean (true or false) is required."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid": "A JSON string is required."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


_ID_RE = re.compile(r"^[^\x00-\x20\x7f/][^\x00-\x1f\x7f/]{0,253}[^\x00-\x20\x7f/]$|^[^\x00-\x20\x7f/]$")


def validate_external_id(value: str) -> str:
    """Merchant-chosen ids: 1-255 characters, any script, no '/', no control
    characters, no leading or trailing space (they live in URL paths)."""
    if not _ID_RE.match(value):
        raise serializers.ValidationError(
            "must be 1-255 characters without '/', control characters, or leading/trailing spaces"
        )
    return value


class ExternalIdField(StrictCharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 255)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        self.validators.append(validate_external_id)


class CurrencyField(StrictCharField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data).lower()
        if not CURRENCY_RE.match(value):
            raise serializers.ValidationError("must be a three-letter ISO 4217 code")
        return value


class MetadataField(serializers.JSONField):
    """A flat-or-nested JSON object of at most 50 keys and 16 KiB."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError("must be a JSON object")
        if len(data) > 50:
            raise serializers.ValidationError("at most 50 keys")
        if len(json.dumps(data)) > 16 * 1024:
            raise serializers.ValidationError("at most 16 KiB")
        return data


@extend_schema_field({
    "oneOf": [
        {"type": "string", "format": "date-time"},
        {"type": "integer", "minimum": 0, "maximum": 253402300799999, "description": "epoch milliseconds"},
    ]
})
class TimestampField(serializers.Field):
    """An ISO 8601 time, or epoch milliseconds (as the JS SDK's Date.now() + …)."""

    default_error_messages = {"invalid": "must be an ISO 8601 time or epoch milliseconds"}
    MIN_MS, MAX_MS = 0, 253402300799999  # 1970 .. 9999-12-31

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            if not self.MIN_MS <= data <= self.MAX_MS:
                self.fail("invalid")
            return datetime.fromtimestamp(data / 1000, tz=timezone.utc)
        if isinstance(data, str):
            try:
                parsed = parse_datetime(data)
            except ValueError:
                parsed = None
            if parsed is None:
                self.fail("invalid")
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            return parsed
        self.fail("invalid")

    def to_representation(self, value):
        return iso(value)


def iso(value: datetime | None) -> str | None:
    """Wire format for times: ISO 8601 UTC with a Z."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
