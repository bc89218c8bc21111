"""The chart of accounts: codes as constants, and the chart itself.

Services name accounts by these constants (``accounts.RECEIVABLE``), never by
literal codes. Migration 0002 seeds the chart; a new account needs both a row
in ``CHART`` and a migration that adds it (a test checks they agree).
"""

CASH = "1000"
GATEWAY_CLEARING = "1100"
RECEIVABLE = "1200"
CUSTOMER_CREDIT = "2100"
DEFERRED_REVENUE = "2200"
REVENUE = "4001"
DISCOUNTS = "4900"
REFUNDS = "4910"
FEES = "5000"
BAD_DEBT = "6000"

# (code, name, type, normal side)
CHART = [
    (CASH, "Cash", "asset", "debit"),
    (GATEWAY_CLEARING, "Payment gateway clearing", "asset", "debit"),
    (RECEIVABLE, "Accounts Receivable", "asset", "debit"),
    # Prepaid / top-up credit and credit notes owed to customers; also unapplied cash:
    # a charge the gateway made for an invoice no longer open, held here until refunded.
    (CUSTOMER_CREDIT, "Customer credit balance", "liability", "credit"),
    (DEFERRED_REVENUE, "Deferred revenue", "liability", "credit"),
    (REVENUE, "Revenue", "revenue", "credit"),
    # Contra-revenue accounts: revenue type, but they grow on the debit side.
    (DISCOUNTS, "Discounts", "revenue", "debit"),
    (REFUNDS, "Refunds", "revenue", "debit"),
    (FEES, "Payment processing fees", "expense", "debit"),
    (BAD_DEBT, "Bad debt", "expense", "debit"),
]
