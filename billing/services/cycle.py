"""The scheduled work, as of a given moment: what beat runs and run_billing_cycle --now does."""

from __future__ import annotations

from datetime import datetime

from billing.services.audit import audit_record
from billing.services.balances import buckets_reset_due, grants_expire_due, locks_expire_due
from billing.services.renewals import (
    checkouts_expire_due,
    invoices_retry_due,
    overage_bill_due,
    refunds_retry_due,
    subscriptions_renew_due,
)


def billing_cycle_run(*, now: datetime, actor: str = "run_billing_cycle") -> dict[str, int]:
    """Expire locks (their units return) and grants; renew subscriptions
    (applying scheduled downgrades and cancellations, ending trials); reset
    allowances (recording the closed period's overage); bill that overage;
    retry failed payments (dunning); close abandoned checkouts; send again
    the pending refunds that are due (their gateway call failed; each waits
    longer after every failure and stops after REFUND_MAX_ATTEMPTS).

    Idempotent: each step only touches rows still due at ``now``, and leaves
    them not due, so a second run for the same moment changes nothing.
    """
    done = {
        "locksExpired": locks_expire_due(now=now),
        "grantsExpired": grants_expire_due(now=now),
        **subscriptions_renew_due(now=now),
        "allowancesReset": buckets_reset_due(now=now),
        "overageInvoices": overage_bill_due(now=now),
        "paymentRetries": invoices_retry_due(now=now),
        "checkoutsExpired": checkouts_expire_due(now=now),
        "refundsRetried": refunds_retry_due(now=now),
    }
    audit_record(actor_type="system", actor_id=actor, action="billing_cycle.run", data={"now": now.isoformat(), **done}, now=now)
    return done
