"""The address of the client that sent a request, for per-address limits.

With ``TRUSTED_PROXY_COUNT = 0`` (the default) that is ``REMOTE_ADDR``: the
service is reached directly and ``X-Forwarded-For`` is whatever the client
chose to send, so it is ignored. With ``n`` proxies in front, each proxy
appends the address it was reached from, so the n-th entry from the right of
``X-Forwarded-For`` is the one the outermost trusted proxy saw: the right-most
entry no client could have written. Entries left of it are the client's own
say and are never used. A value that is not an address falls back to
``REMOTE_ADDR``.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings


def _address(entry: str) -> str | None:
    entry = entry.strip()
    if entry.startswith("[") and "]" in entry:  # [v6]:port
        entry = entry[1:entry.index("]")]
    elif entry.count(":") == 1:  # v4:port
        entry = entry.partition(":")[0]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


def client_address(request) -> str:
    """The client's address: REMOTE_ADDR, or X-Forwarded-For's right-most untrusted entry
    when ``TRUSTED_PROXY_COUNT`` proxies are in front."""
    meta = request.META
    remote = meta.get("REMOTE_ADDR") or ""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    forwarded = [e for e in (meta.get("HTTP_X_FORWARDED_FOR") or "").split(",") if e.strip()]
    if not forwarded:
        return remote
    # Fewer entries than proxies: the request skipped the outer ones; every entry is a proxy's.
    entry = forwarded[-proxies] if len(forwarded) >= proxies else forwarded[0]
    return _address(entry) or remote
