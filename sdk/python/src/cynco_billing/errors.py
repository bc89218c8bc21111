"""Errors raised by the clients. Every one is a ``CyncoBillingError`` with the
server's ``code``, the HTTP ``status`` (0 when no answer came) and ``details``."""

from __future__ import annotations

from typing import Any


class CyncoBillingError(Exception):
    """An error answer of the billing service, or no answer at all."""

    def __init__(self, message: str, *, code: str = "ERROR", status: int = 0, details: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.details = details
        self.headers = headers or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status}, message={self.message!r})"


class BillingServiceUnavailableError(CyncoBillingError):
    """No usable answer: the connection failed, timed out, or the service answered 5xx.
    The request may or may not have been applied; retry with the same idempotency key."""


class BillingConfigurationError(CyncoBillingError):
    """The client is set up wrong: a secret under 32 characters, or the service refused
    the signature (401: wrong secret, clock more than 300 s off, or a replay)."""


class CreditsError(CyncoBillingError):
    """Any error answer of the service credits API."""


class InvalidDebitRequestError(CreditsError):
    """400 INVALID_REQUEST, or refused locally before sending (a fractional amount…)."""


class InsufficientCreditsError(CreditsError):
    """402 INSUFFICIENT_CREDITS: ``required`` and ``available`` say by how much."""

    @property
    def required(self) -> int | None:
        return (self.details or {}).get("required")

    @property
    def available(self) -> int | None:
        return (self.details or {}).get("available")


class WorkspaceNotFoundError(CreditsError):
    """404 WORKSPACE_NOT_FOUND: no such workspace (customer)."""


class DebitNotFoundError(CreditsError):
    """404 DEBIT_NOT_FOUND: a refund names a job with no debit in that workspace."""


class DuplicateRequestError(CreditsError):
    """409 DUPLICATE_REQUEST: the job was debited before (under another key, or more than
    24 h ago), or a refund was made already. ``prior_entry`` is the earlier entry."""

    @property
    def prior_entry(self) -> dict | None:
        return self.details if isinstance(self.details, dict) else None


class WalletLockedError(CreditsError):
    """423 WALLET_LOCKED: staff froze the wallet."""


class WebhookVerificationError(CyncoBillingError):
    """A webhook whose X-Cynco-Signature does not verify (bad, missing or too old)."""


CREDITS_ERRORS: dict[str, type[CreditsError]] = {
    "INVALID_REQUEST": InvalidDebitRequestError,
    "PAYLOAD_TOO_LARGE": InvalidDebitRequestError,
    "INSUFFICIENT_CREDITS": InsufficientCreditsError,
    "WORKSPACE_NOT_FOUND": WorkspaceNotFoundError,
    "DEBIT_NOT_FOUND": DebitNotFoundError,
    "DUPLICATE_REQUEST": DuplicateRequestError,
    "WALLET_LOCKED": WalletLockedError,
}
