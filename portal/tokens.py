"""Signed, one-hour portal links. The token names the customer; nothing is stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core import signing

SALT = "portal.link.v1"


class PortalLinkInvalid(Exception):
    """Tampered with, or not a portal token at all."""


class PortalLinkExpired(PortalLinkInvalid):
    pass


@dataclass(frozen=True)
class PortalLink:
    customer_pk: int
    return_url: str


class _StampedAt(signing.TimestampSigner):
    """Django's timestamp signer with the stamp given instead of read from the clock."""

    def __init__(self, *, at: datetime, salt: str):
        super().__init__(salt=salt)
        self._at = at

    def timestamp(self) -> str:
        return signing.b62_encode(int(self._at.timestamp()))


def portal_token_make(*, customer_pk: int, return_url: str = "", now: datetime | None = None) -> str:
    """A token stamped with ``now`` (Django's signer reads the clock itself when
    it is not given). The same format as ``signing.dumps``."""
    payload = {"c": customer_pk, "r": return_url}
    if now is None:
        return signing.dumps(payload, salt=SALT, compress=True)
    return _StampedAt(at=now, salt=SALT).sign_object(payload, compress=True)


def portal_token_read(token: str, *, now: datetime) -> PortalLink:
    """Raises PortalLinkExpired after PORTAL_LINK_TTL_SECONDS, PortalLinkInvalid if tampered."""
    try:
        data = signing.loads(token, salt=SALT)  # checks the signature, not the age
        issued_at = signing.b62_decode(token.rsplit(signing.Signer().sep, 2)[-2])
    except (signing.BadSignature, ValueError, IndexError):
        raise PortalLinkInvalid("This link is not valid.") from None
    if now.timestamp() - issued_at > settings.PORTAL_LINK_TTL_SECONDS:
        raise PortalLinkExpired("This link has expired.")
    if not isinstance(data, dict) or not isinstance(data.get("c"), int):
        raise PortalLinkInvalid("This link is not valid.")
    return PortalLink(customer_pk=data["c"], return_url=str(data.get("r") or ""))


def portal_url(token: str) -> str:
    return f"{settings.PUBLIC_BASE_URL}/portal/{token}/"


def portal_expires_at(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.PORTAL_LINK_TTL_SECONDS)
