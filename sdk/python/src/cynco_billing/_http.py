"""One HTTP exchange over the standard library: JSON in, JSON out, no retries."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from .errors import BillingServiceUnavailableError, CyncoBillingError

DEFAULT_TIMEOUT = 10.0
USER_AGENT = "cynco-billing-python/0.1.0"


@dataclass(frozen=True)
class Answer:
    status: int
    data: Any
    headers: dict[str, str]


def encode_body(body: Any) -> bytes:
    """Compact JSON, the exact bytes sent (and signed)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def quote_segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def query_string(params: dict[str, Any]) -> str:
    kept = {k: ("true" if v is True else "false" if v is False else v) for k, v in params.items() if v is not None}
    return ("?" + urllib.parse.urlencode(kept)) if kept else ""


def exchange(method: str, url: str, *, body: bytes | None, headers: dict[str, str], timeout: float) -> Answer:
    """Send one request; the answer whatever its status. Raises
    BillingServiceUnavailableError when no answer came (connection, timeout)."""
    request = urllib.request.Request(url, data=body, method=method, headers={
        "Accept": "application/json", "User-Agent": USER_AGENT, **headers,
        **({"Content-Type": "application/json"} if body is not None else {}),
    })
    try:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw, status, answer_headers = response.read(), response.status, dict(response.headers.items())
        except urllib.error.HTTPError as exc:
            raw, status, answer_headers = exc.read(), exc.code, dict(exc.headers.items()) if exc.headers else {}
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError,
            http.client.HTTPException) as exc:
        # HTTPException: a status line or body cut short (IncompleteRead, BadStatusLine), as
        # when the server's worker dies mid-answer. The request may have been carried out, so
        # the caller retries with the same idempotency key, as for any other lost answer.
        reason = repr(exc) if isinstance(exc, http.client.HTTPException) else getattr(exc, "reason", exc)
        raise BillingServiceUnavailableError(f"{method} {url}: no answer ({reason})", code="UNAVAILABLE") from exc
    data: Any = None
    if raw:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
    return Answer(status=status, data=data, headers=answer_headers)


def error_of(answer: Answer, *, default: type[CyncoBillingError] = CyncoBillingError,
             by_code: dict[str, type[CyncoBillingError]] | None = None) -> CyncoBillingError:
    """The error an error answer stands for."""
    err = answer.data.get("error") if isinstance(answer.data, dict) else None
    if not isinstance(err, dict):
        err = {"code": "HTTP_%d" % answer.status, "message": f"HTTP {answer.status}", "details": None}
    code = str(err.get("code") or "HTTP_%d" % answer.status)
    cls = (by_code or {}).get(code, default)
    if answer.status >= 500:
        cls = BillingServiceUnavailableError
    return cls(str(err.get("message") or code), code=code, status=answer.status, details=err.get("details"),
               headers=answer.headers)
