"""HMAC authentication of the service credits API (API.md).

Every request carries ``X-Service-Name``, ``X-Timestamp`` (unix seconds) and
``X-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<METHOD>.<path>.<hex sha256(body)>")>``,
``path`` being the URL path as the server routes it (percent-decoded, no
query string). Accepted: a timestamp within ``SVC_HMAC_WINDOW_SECONDS`` of
now (either side), a signature made with any of ``SVC_HMAC_SECRETS`` (several
are active while one is rotated; compared in constant time) and not seen
before in the window. Anything else is 401; with no secrets configured,
everything is.

Every refused signature (missing, malformed, stale, bad or replayed) is counted
against the client's address, as failed API keys are on the merchant API (its
own bucket per address); past ``AUTH_FAILURE_LIMIT_PER_MINUTE`` a minute the
refusal is 429 RATE_LIMITED with Retry-After instead of 401. Only refusals are
counted, so a valid signature still goes through from a limited address and
costs no bucket call: the callers are a few internal services that often share
an egress address (a node's SNAT, a NAT gateway) with other workloads, a lockout
would let anyone there stop every debit, and whoever can sign has nothing left
to guess. The header checks come first and are cheap; the body is hashed only
for a well-formed, fresh request, and nothing touches the database or the
replay store before the signature matched.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from billing.api.parsers import BodyInvalid
from billing.api.throttling import count_auth_failure
from credits.services import signature_remember

SCHEME = "v1"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def signed_message(*, timestamp: str, method: str, path: str, body: bytes) -> bytes:
    return f"{timestamp}.{method.upper()}.{path}.{hashlib.sha256(body).hexdigest()}".encode("utf-8")


def sign(*, secret: str, timestamp: str, method: str, path: str, body: bytes) -> str:
    """The hex signature of a request (without the ``v1=`` prefix)."""
    message = signed_message(timestamp=timestamp, method=method, path=path, body=body)
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


class ServicePrincipal:
    """``request.user`` of a signed request: the calling service by its X-Service-Name."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, name: str):
        self.name = name

    def __str__(self):
        return f"service:{self.name}"


class HmacAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        if not settings.SVC_HMAC_SECRETS:  # the server's fault, not the caller's: not counted
            raise exceptions.AuthenticationFailed("The credits API is not configured (SVC_HMAC_SECRETS is empty).")
        try:
            name = self._verify(request)
        except exceptions.AuthenticationFailed:
            count_auth_failure(request, scope="svcauthfail")  # 429 instead, past the limit
            raise
        return ServicePrincipal(name), None

    def _verify(self, request) -> str:
        """The caller's service name, or AuthenticationFailed for any refused signature."""
        secrets = settings.SVC_HMAC_SECRETS
        name = request.headers.get("X-Service-Name", "").strip()
        timestamp = request.headers.get("X-Timestamp", "").strip()
        header = request.headers.get("X-Signature", "").strip()
        if not name or not timestamp or not header:
            raise exceptions.AuthenticationFailed("Missing X-Service-Name, X-Timestamp or X-Signature.")
        if len(name) > 100:
            raise exceptions.AuthenticationFailed("X-Service-Name is longer than 100 characters.")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise exceptions.AuthenticationFailed("X-Timestamp must be unix seconds.")
        now = timezone.now()
        if abs(now.timestamp() - int(timestamp)) > settings.SVC_HMAC_WINDOW_SECONDS:
            raise exceptions.AuthenticationFailed(
                f"X-Timestamp is more than {settings.SVC_HMAC_WINDOW_SECONDS} s away from the server's clock."
            )
        scheme, _, given = header.partition("=")
        given = given.lower()
        if scheme != SCHEME or not _HEX64.fullmatch(given):
            raise exceptions.AuthenticationFailed("X-Signature must be v1=<64 hex digits>.")
        try:
            body = request._request.body  # the raw bytes; DRF parses from Django's cached copy
        except RequestDataTooBig:
            raise BodyInvalid("body is larger than the server accepts", status_code=413) from None
        message = signed_message(timestamp=timestamp, method=request.method, path=request.path, body=body)
        matched = False
        for secret in secrets:  # every secret is tried, so the time taken does not say which matched
            expected = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
            matched |= hmac.compare_digest(expected, given)
        if not matched:
            raise exceptions.AuthenticationFailed("Bad signature.")
        if not signature_remember(signature=given, now=now):
            raise exceptions.AuthenticationFailed("Replayed signature: sign every request afresh.")
        return name

    def authenticate_header(self, request):
        return 'HMAC-SHA256 realm="credits"'


class SignedServiceRequired(permissions.BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, ServicePrincipal)
