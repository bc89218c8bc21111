"""Security headers of the customer-facing pages (/portal/…, /checkout/…).

A strict Content-Security-Policy: everything from our own origin, no inline
script or style unless it carries this request's nonce, which templates read
as ``{{ request.csp_nonce }}``::

    <style nonce="{{ request.csp_nonce }}">…</style>
    <script nonce="{{ request.csp_nonce }}">…</script>

No framing (frame-ancestors 'none', X-Frame-Options DENY), no Referer sent
to any other site (the portal's token is in its URL), no MIME sniffing, no
powerful browser features, and nothing kept by a browser or proxy cache.

The referrer policy is ``same-origin``, not ``no-referrer``: under no-referrer
Chromium sends ``Origin: null`` with the page's own form POSTs, which Django's
CSRF check refuses. same-origin sends a Referer only back to this server, which
has the URL already.

``form-action`` is left open on purpose: a checkout form posts to our own page,
which then redirects to the merchant's success URL, and Chromium applies
form-action to that redirect too.
"""

from __future__ import annotations

import secrets

PREFIXES = ("/portal/", "/checkout/")

PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), "
    "payment=(), usb=()"
)


def content_security_policy(nonce: str) -> str:
    return "; ".join([
        "default-src 'self'",
        f"script-src 'self' 'nonce-{nonce}'",
        f"style-src 'self' 'nonce-{nonce}'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ])


class PageSecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(PREFIXES):
            return self.get_response(request)
        request.csp_nonce = secrets.token_urlsafe(18)
        response = self.get_response(request)
        response["Content-Security-Policy"] = content_security_policy(request.csp_nonce)
        response["X-Content-Type-Options"] = "nosniff"
        response["Referrer-Policy"] = "same-origin"
        response["X-Frame-Options"] = "DENY"
        response["Permissions-Policy"] = PERMISSIONS_POLICY
        response["Cache-Control"] = "no-store"
        return response
