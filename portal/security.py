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

A view may widen its own response's policy by setting ``response.csp_allow``
to ``{directive: (source, …)}`` for script-src, connect-src or frame-src: the
sources are added to what every page gets (``'self'`` and the nonce). Only the
pages with the Stripe card form (portal/stripe_card.py: the portal's card page
and the hosted checkout, with the Stripe gateway) do, with ``stripe_js_sources()``;
every other page keeps the policy above unchanged.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from django.conf import settings

PREFIXES = ("/portal/", "/checkout/")

PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), "
    "payment=(), usb=()"
)


STRIPE_API_ORIGIN = "https://api.stripe.com"
STRIPE_JS_ORIGIN = "https://js.stripe.com"
# Stripe's CSP guide: 3-D Secure challenges open in frames from this origin.
STRIPE_3DS_FRAME_ORIGIN = "https://hooks.stripe.com"


def origin(url: str) -> str:
    """``scheme://host[:port]`` of an absolute http(s) URL, as a CSP source.
    Raises ValueError for anything else (settings.py checks the Stripe URLs at start)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def stripe_js_sources() -> dict[str, tuple[str, ...]]:
    """What a page with Stripe Elements needs: Stripe.js's origin for its script and
    its frames, and the Stripe API's origin for the calls Stripe.js makes from the page
    (STRIPE_JS_URL and STRIPE_API_BASE; with localstripe both are localstripe's)."""
    js = origin(settings.STRIPE_JS_URL)
    api = origin(settings.STRIPE_API_BASE) if settings.STRIPE_API_BASE else STRIPE_API_ORIGIN
    frames = (js, STRIPE_3DS_FRAME_ORIGIN) if js == STRIPE_JS_ORIGIN else (js,)
    return {"script-src": (js,), "frame-src": frames, "connect-src": (api,)}


def content_security_policy(nonce: str, allow: dict[str, tuple[str, ...]] | None = None) -> str:
    allow = allow or {}
    unknown = set(allow) - {"script-src", "connect-src", "frame-src"}
    if unknown:
        raise ValueError(f"csp_allow may widen script-src, connect-src and frame-src only, not {sorted(unknown)}")
    directives = [
        "default-src 'self'",
        " ".join(["script-src 'self'", f"'nonce-{nonce}'", *allow.get("script-src", ())]),
        f"style-src 'self' 'nonce-{nonce}'",
        "img-src 'self' data:",
    ]
    for name in ("connect-src", "frame-src"):  # else default-src 'self' stands for them
        if allow.get(name):
            directives.append(" ".join([f"{name} 'self'", *allow[name]]))
    return "; ".join([
        *directives,
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
        allow = getattr(response, "csp_allow", None)  # set by a view that needs more (the Stripe card page)
        response["Content-Security-Policy"] = content_security_policy(request.csp_nonce, allow)
        response["X-Content-Type-Options"] = "nosniff"
        response["Referrer-Policy"] = "same-origin"
        response["X-Frame-Options"] = "DENY"
        response["Permissions-Policy"] = PERMISSIONS_POLICY
        response["Cache-Control"] = "no-store"
        return response
