"""``CreditsClient``: the signed service credits API (``/api/v1/credits/``).

Every request is signed with the shared secret::

    X-Service-Name: <service name>
    X-Timestamp:    <unix seconds>
    X-Signature:    v1=<hex HMAC-SHA256(secret, "<timestamp>.<METHOD>.<path>.<hex sha256(body)>")>

``path`` is the URL path the server routes (percent-decoded, no query string).
The server accepts each signature once, so the client never signs the same
request twice in one second (it moves the timestamp on by a second instead).
No automatic retries: a retry of a debit is safe when it carries the same
idempotency key, which by default is derived from the job (API.md).
"""

from __future__ import annotations

import decimal
import fractions
import hashlib
import hmac
import threading
import time
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from ._http import DEFAULT_TIMEOUT, Answer, encode_body, error_of, exchange, quote_segment
from .errors import (
    CREDITS_ERRORS,
    BillingConfigurationError,
    CreditsError,
    InvalidDebitRequestError,
)

BASE_PATH = "/api/v1/credits"
MIN_SECRET_LENGTH = 32
MAX_AMOUNT = 2**53 - 1
SIGNATURE_WINDOW_SECONDS = 300


def idempotency_key_for(job_id: str, source_service: str) -> str:
    """The default idempotency key of a debit: hex sha256(jobId + sourceService)."""
    return hashlib.sha256((job_id + source_service).encode("utf-8")).hexdigest()


def sign(*, secret: str, timestamp: str, method: str, path: str, body: bytes) -> str:
    """The hex signature of a request (what follows ``v1=``)."""
    message = f"{timestamp}.{method.upper()}.{path}.{hashlib.sha256(body).hexdigest()}"
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class DebitResult:
    ledger_entry_id: str
    workspace_id: str
    amount: int
    balance_subscription_after: int
    balance_topup_after: int
    total_balance_after: int
    replayed: bool = False  # the answer of an earlier identical request, given again
    raw: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class RefundResult:
    ledger_entry_id: str
    refunded_amount: int
    total_balance_after: int
    returned_amount: int | None = None  # put back into the wallet (the rest lapsed with its plan period)
    replayed: bool = False
    raw: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Cycle:
    plan_snapshot: dict | None
    period_start: str | None
    period_end: str | None


@dataclass(frozen=True)
class CreditBalance:
    balance_subscription: int
    balance_topup: int
    total: int
    cycle: Cycle
    raw: dict = field(default_factory=dict, repr=False, compare=False)


def check_amount(amount: Any, name: str = "amount") -> int:
    """Credits are whole numbers: round a fractional cost up (at least 1) before calling."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        if isinstance(amount, (float, decimal.Decimal, fractions.Fraction)):
            raise InvalidDebitRequestError(
                f"{name} must be a whole number of credits, got {amount!r}: round up (at least 1)",
                code="INVALID_REQUEST", details=[{"field": name, "message": "must be a whole number of credits"}])
        raise InvalidDebitRequestError(f"{name} must be an integer, got {type(amount).__name__}",
                                       code="INVALID_REQUEST", details=[{"field": name, "message": "must be an integer"}])
    if amount <= 0 or amount > MAX_AMOUNT:
        raise InvalidDebitRequestError(f"{name} must be between 1 and {MAX_AMOUNT}, got {amount}",
                                       code="INVALID_REQUEST", details=[{"field": name, "message": "out of range"}])
    return amount


def _check_text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidDebitRequestError(f"{name} must be a non-empty string", code="INVALID_REQUEST",
                                       details=[{"field": name, "message": "must be a non-empty string"}])
    return value


class CreditsClient:
    """Client of the service credits API.

    ``CreditsClient("https://billing.internal", secret=os.environ["SVC_HMAC_SECRET"], service_name="summarizer")``
    """

    def __init__(self, base_url: str, secret: str, service_name: str, *, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.time):
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
            raise BillingConfigurationError(f"the HMAC secret must be at least {MIN_SECRET_LENGTH} characters",
                                            code="CONFIGURATION")
        if not service_name or not isinstance(service_name, str):
            raise BillingConfigurationError("service_name is required", code="CONFIGURATION")
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise BillingConfigurationError(f"base_url must be an http(s) URL, got {base_url!r}", code="CONFIGURATION")
        self._origin = f"{parsed.scheme}://{parsed.netloc}"
        self._prefix = parsed.path.rstrip("/")
        self._secret = secret
        self.service_name = service_name
        self.timeout = timeout
        self._clock = clock
        self._signed: OrderedDict[tuple, int] = OrderedDict()
        self._lock = threading.Lock()

    # --- the three routes ------------------------------------------------------------

    def debit_credits(self, workspace_id: str, amount: int, job_id: str, *, source_service: str | None = None,
                      actor_user_id: str | None = None, metadata: dict | None = None,
                      idempotency_key: str | None = None) -> DebitResult:
        """Spend ``amount`` credits of the workspace for ``job_id``. Retrying with the same
        job (and so the same idempotency key) within 24 h returns the first result
        (``replayed``). Raises InvalidDebitRequestError (before sending, for a fractional
        amount), InsufficientCreditsError, WorkspaceNotFoundError, DuplicateRequestError,
        WalletLockedError, BillingConfigurationError, BillingServiceUnavailableError."""
        check_amount(amount)
        _check_text(workspace_id, "workspace_id")
        _check_text(job_id, "job_id")
        service = source_service or self.service_name
        body: dict[str, Any] = {
            "workspaceId": workspace_id, "amount": amount, "jobId": job_id, "sourceService": service,
            "idempotencyKey": idempotency_key or idempotency_key_for(job_id, service),
        }
        if actor_user_id is not None:
            body["actorUserId"] = actor_user_id
        if metadata is not None:
            body["metadata"] = metadata
        answer = self._call("POST", "/debit", body)
        data = answer.data
        return DebitResult(
            ledger_entry_id=data["ledgerEntryId"], workspace_id=data["workspaceId"], amount=data["amount"],
            balance_subscription_after=data["balanceSubscriptionAfter"], balance_topup_after=data["balanceTopupAfter"],
            total_balance_after=data["totalBalanceAfter"], replayed=_replayed(answer), raw=data,
        )

    def refund_credits(self, workspace_id: str, refund_for_job_id: str, reason: str, *, amount: int | None = None,
                       source_service: str | None = None, idempotency_key: str | None = None) -> RefundResult:
        """Give back the credits of an earlier debit: all that is left of it, or ``amount``.
        Repeating the same refund returns the first result. Raises InvalidDebitRequestError
        (also for more than is left), WorkspaceNotFoundError, DebitNotFoundError,
        DuplicateRequestError (refunded in full already), and the transport errors."""
        if amount is not None:
            check_amount(amount)
        _check_text(workspace_id, "workspace_id")
        _check_text(refund_for_job_id, "refund_for_job_id")
        _check_text(reason, "reason")
        body: dict[str, Any] = {"workspaceId": workspace_id, "refundForJobId": refund_for_job_id,
                                "sourceService": source_service or self.service_name, "reason": reason}
        if amount is not None:
            body["amount"] = amount
        if idempotency_key is not None:
            body["idempotencyKey"] = idempotency_key
        answer = self._call("POST", "/refund", body)
        data = answer.data
        return RefundResult(
            ledger_entry_id=data["ledgerEntryId"], refunded_amount=data["refundedAmount"],
            total_balance_after=data["totalBalanceAfter"], returned_amount=data.get("returnedAmount"),
            replayed=_replayed(answer), raw=data,
        )

    def get_balance(self, workspace_id: str) -> CreditBalance:
        """The workspace's credits: subscription and top-up split, total, current cycle."""
        _check_text(workspace_id, "workspace_id")
        data = self._call("GET", "/balance/" + workspace_id, None, url_route="/balance/" + quote_segment(workspace_id)).data
        cycle = data.get("cycle") or {}
        return CreditBalance(
            balance_subscription=data["balanceSubscription"], balance_topup=data["balanceTopup"], total=data["total"],
            cycle=Cycle(plan_snapshot=cycle.get("planSnapshot"), period_start=cycle.get("periodStart"),
                        period_end=cycle.get("periodEnd")),
            raw=data,
        )

    # --- signing and sending ---------------------------------------------------------

    def signed_headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """The three headers of a request to ``path`` (decoded, as the server routes it)."""
        timestamp = str(self._fresh_timestamp(method, path, body))
        signature = sign(secret=self._secret, timestamp=timestamp, method=method, path=path, body=body)
        return {"X-Service-Name": self.service_name, "X-Timestamp": timestamp, "X-Signature": f"v1={signature}"}

    def _fresh_timestamp(self, method: str, path: str, body: bytes) -> int:
        """Now, unless this very request was signed at that second already: then the next
        free second (a signature is accepted once; the server allows 300 s of skew)."""
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            now = int(self._clock())
            while self._signed and next(iter(self._signed.values())) < now - SIGNATURE_WINDOW_SECONDS:
                self._signed.popitem(last=False)
            ts = now
            while (ts, method, path, digest) in self._signed:
                ts += 1
            self._signed[(ts, method, path, digest)] = now
        return ts

    def _call(self, method: str, route: str, body: dict | None, *, url_route: str | None = None) -> Answer:
        """``route`` as signed (decoded), ``url_route`` as sent (percent-encoded)."""
        path = self._prefix + BASE_PATH + route
        raw = encode_body(body) if body is not None else b""
        headers = self.signed_headers(method, path, raw)
        url = self._origin + self._prefix + BASE_PATH + (url_route or route)
        answer = exchange(method, url, body=raw if body is not None else None, headers=headers, timeout=self.timeout)
        if 200 <= answer.status < 300 and isinstance(answer.data, dict):
            return answer
        if answer.status == 401:
            raise error_of(answer, default=BillingConfigurationError)
        raise error_of(answer, default=CreditsError, by_code=CREDITS_ERRORS)


def _replayed(answer: Answer) -> bool:
    return any(k.lower() == "idempotent-replayed" and v == "true" for k, v in answer.headers.items())
