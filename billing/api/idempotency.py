"""Idempotency-Key handling for every mutating merchant route (API.md).

The first request with a key inserts an ``in_progress`` row (committed at
once, so concurrent retries see it and get 409). When the view answers, the
rendered response is stored; a retry with the same body gets it back with
``Idempotent-Replayed: true`` and performs nothing; another body gets 422.
A 5xx answer deletes the row so the request may be retried.

If the process dies between the view's commit and storing the answer, the
key keeps answering 409 until it expires: never running a request twice is
worth more here than a quick retry.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction

from billing.errors import BillingError, Conflict, ValidationFailed
from billing.models import ApiKey, IdempotencyKey

HEADER = "Idempotency-Key"
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


class IdempotencyKeyReused(BillingError):
    status = 422
    code = "IDEMPOTENCY_KEY_REUSED"


class IdempotencyInProgress(Conflict):
    code = "IDEMPOTENCY_IN_PROGRESS"


class IdempotentReplay(Exception):
    """Raised to short-circuit a view with the stored response."""

    def __init__(self, record: IdempotencyKey):
        super().__init__(record.key)
        self.record = record


def validate_key(raw: str) -> str:
    if not _KEY_RE.match(raw):
        raise ValidationFailed(HEADER, "must be 1 to 255 printable ASCII characters without spaces")
    return raw


def request_fingerprint(*, method: str, path: str, body: bytes) -> str:
    """Hash of what makes two requests 'the same': method, path and the JSON body.

    JSON bodies are compared as data (key order and spacing do not matter).
    """
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b"\n" + path.encode() + b"\n" + canonical).hexdigest()


def idempotency_begin(*, api_key: ApiKey, key: str, fingerprint: str, method: str, path: str, now: datetime) -> IdempotencyKey:
    """Claim ``key`` for this request.

    Raises IdempotentReplay (a finished first request), IdempotencyKeyReused
    (another body under the same key), IdempotencyInProgress (still running).
    """
    for _ in range(3):
        try:
            with transaction.atomic():
                return IdempotencyKey.objects.create(
                    api_key=api_key,
                    key=key,
                    request_hash=fingerprint,
                    method=method,
                    path=path[:500],
                    created_at=now,
                    expires_at=now + timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS),
                )
        except IntegrityError:
            existing = IdempotencyKey.objects.filter(api_key=api_key, key=key).first()
            if existing is None:
                continue  # purged in between: claim again
            if existing.expires_at <= now:
                IdempotencyKey.objects.filter(pk=existing.pk, expires_at__lte=now).delete()
                continue
            if existing.request_hash != fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was used with a different request.", details={"key": key}
                ) from None
            if existing.state == IdempotencyKey.State.IN_PROGRESS:
                raise IdempotencyInProgress(
                    "A request with this Idempotency-Key is still being processed.", details={"key": key}
                ) from None
            raise IdempotentReplay(existing) from None
    raise IdempotencyInProgress("A request with this Idempotency-Key is still being processed.", details={"key": key})


def idempotency_complete(*, record: IdempotencyKey, status: int, body: str) -> None:
    IdempotencyKey.objects.filter(pk=record.pk).update(
        state=IdempotencyKey.State.COMPLETED, response_status=status, response_body=body
    )


def idempotency_abandon(*, record: IdempotencyKey) -> None:
    IdempotencyKey.objects.filter(pk=record.pk).delete()


def idempotency_purge_expired(*, now: datetime) -> int:
    deleted, _ = IdempotencyKey.objects.filter(expires_at__lte=now).delete()
    return deleted
