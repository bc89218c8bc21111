"""Python client of the billing service.

- ``BillingClient``: the merchant API (``/api/v1/pay/``, Bearer API keys).
- ``CreditsClient``: the service credits API (``/api/v1/credits/``, HMAC-signed).
- ``verify_webhook``: check an outgoing webhook's ``X-Cynco-Signature``.

Standard library only; no automatic retries; 10 s default timeout.
"""

from .billing import BillingClient
from .credits import (
    CreditBalance,
    CreditsClient,
    Cycle,
    DebitResult,
    RefundResult,
    idempotency_key_for,
    sign,
)
from .errors import (
    BillingConfigurationError,
    BillingServiceUnavailableError,
    CreditsError,
    CyncoBillingError,
    DebitNotFoundError,
    DuplicateRequestError,
    InsufficientCreditsError,
    InvalidDebitRequestError,
    WalletLockedError,
    WebhookVerificationError,
    WorkspaceNotFoundError,
)
from .webhooks import verify_webhook, webhook_signature

__version__ = "0.1.0"

__all__ = [
    "BillingClient",
    "BillingConfigurationError",
    "BillingServiceUnavailableError",
    "CreditBalance",
    "CreditsClient",
    "CreditsError",
    "Cycle",
    "CyncoBillingError",
    "DebitNotFoundError",
    "DebitResult",
    "DuplicateRequestError",
    "InsufficientCreditsError",
    "InvalidDebitRequestError",
    "RefundResult",
    "WalletLockedError",
    "WebhookVerificationError",
    "WorkspaceNotFoundError",
    "idempotency_key_for",
    "sign",
    "verify_webhook",
    "webhook_signature",
]
