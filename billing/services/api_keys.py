"""API keys: created with a raw value shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.db import connection, transaction

from billing.errors import NotFound
from billing.models import ApiKey

PREFIXES = {ApiKey.Type.SECRET: "cp_sk_", ApiKey.Type.PUBLISHABLE: "cp_pk_"}
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_key_hash(raw_key: str) -> str:
    """SHA-256 of the raw key. Keys carry 256 random bits, so a plain hash is one-way."""
    return hashlib.sha256(raw_key.encode("utf-8", "surrogatepass")).hexdigest()


def _mask(raw_key: str, prefix: str) -> str:
    return f"{prefix}{raw_key[len(prefix):len(prefix) + 4]}…{raw_key[-4:]}"


def api_key_create(*, name: str, type: str, now: datetime) -> tuple[ApiKey, str]:
    """Create a key; returns (key, raw_key). The raw key is never stored."""
    prefix = PREFIXES[ApiKey.Type(type)]
    raw_key = prefix + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        name=name,
        type=type,
        key_hash=api_key_hash(raw_key),
        masked_key=_mask(raw_key, prefix),
        created_at=now,
    )
    return key, raw_key


def api_key_authenticate(*, raw_key: str, now: datetime) -> ApiKey | None:
    """The active key whose hash matches, or None for an unknown or revoked key.

    The lookup is by hash (an attacker controls nothing the index compares
    against); the final comparison is constant-time all the same.
    """
    if not raw_key.startswith(tuple(PREFIXES.values())) or len(raw_key) > 200:
        return None
    digest = api_key_hash(raw_key)
    key = _active_key(digest)
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


_KEY_FIELDS = [f.attname for f in ApiKey._meta.concrete_fields]
_KEY_SQL = (
    f"SELECT {', '.join(f.column for f in ApiKey._meta.concrete_fields)} FROM {ApiKey._meta.db_table}"
    " WHERE key_hash = %s AND revoked_at IS NULL"
)


def _active_key(digest: str) -> ApiKey | None:
    """The unrevoked key with this hash. Every request asks, so on PostgreSQL it is
    plain SQL (a fifth of the ORM's cost); SQLite keeps the ORM, whose converters
    it needs for times. Not cached: a get from Django's Redis cache cost more CPU
    than this query on the bench machine, and a revoked key must fail at once."""
    if connection.vendor != "postgresql":
        return ApiKey.objects.filter(key_hash=digest, revoked_at__isnull=True).first()
    with connection.cursor() as cursor:
        cursor.execute(_KEY_SQL, [digest])
        row = cursor.fetchone()
    return None if row is None else ApiKey.from_db(connection.alias, _KEY_FIELDS, row)


def api_key_revoke(*, key_id: str, now: datetime) -> ApiKey:
    """Revoke a key (idempotent: revoking twice keeps the first time). Raises NotFound."""
    with transaction.atomic(durable=True):
        key = ApiKey.objects.select_for_update().filter(pk=key_id).first()
        if key is None:
            raise NotFound("api_key", key_id)
        if key.revoked_at is None:
            key.revoked_at = now
            key.save(update_fields=["revoked_at"])
    return key
