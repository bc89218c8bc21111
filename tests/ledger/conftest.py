from datetime import UTC, datetime

import pytest

from ledger import accounts
from ledger.services import credit, debit, entry_post


@pytest.fixture
def now() -> datetime:
    return datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def invoice_entry(db, now):
    """An invoice of 2 900 usd issued: DR 1200 Receivable / CR 4001 Revenue."""
    return entry_post(
        lines=[debit(accounts.RECEIVABLE, 2900, "usd"), credit(accounts.REVENUE, 2900, "usd")],
        memo="Invoice 2025-0001",
        posted_at=now,
        source="invoice:pinv_1",
    )
