"""Read-only audit of the books and the balances over the whole database.

Each check is a selector that returns the rows breaking one invariant as
``Violation``s (an empty list when it holds); ``audit_ledger`` runs them all.
The checks are set-based: one or two aggregate queries each, joins done by the
database, so a database with 100k usage events is audited in well under a
second (bench figure in the README, Operations). They hold on every state the
services commit (resets, carry-over, overage, expiry, refunds …) and change
nothing. Used by ``manage.py audit_ledger`` and by the tests'
``assert_books_reconcile``.

What "each balance equals its grants minus its usage and open locks" means
here (billing/services/balances.py): usage events are history, not the
balance (a reset or an expiry drops the usage of the closed period, a staff
correction sets usage), so a balance is checked against its buckets and locks:
  granted  = Σ active bucket.granted;  unlimited / included as its active buckets say
  reserved = Σ amount of its open locks
  limited:   usage = Σ active bucket.consumed + overage,  overage = max(0, usage − granted)
  unlimited: overage = 0 and no bucket holds usage
and what usage events were recorded for is checked effect by effect (a
confirmed lock, a credit debit or refund: exactly one event each).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection

from ledger import accounts


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    object_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.check} {self.object_id}: {self.message}"


@dataclass(frozen=True, slots=True)
class AuditReport:
    violations: list[Violation]
    # What was looked at: table name -> rows.
    counts: dict[str, int]

    @property
    def clean(self) -> bool:
        return not self.violations


def query_rows(sql: str, params: dict | None = None) -> list[tuple]:
    """The rows of ``sql``; sums come back as ints (PostgreSQL's SUM of bigint is numeric)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [tuple(int(v) if isinstance(v, Decimal) else v for v in row) for row in cursor.fetchall()]


def json_text(column: str, *path: str) -> str:
    """SQL for the text at ``path`` inside a JSON column (NULL when absent)."""
    if connection.vendor == "postgresql":
        return f"({column} #>> '{{{','.join(path)}}}')"
    return f"json_extract({column}, '$.{'.'.join(path)}')"


def json_items(column: str) -> tuple[str, str, str]:
    """(FROM item, key as bigint, value as bigint) to iterate a JSON object {str: int}."""
    if connection.vendor == "postgresql":
        return f"jsonb_each_text({column}) AS j", "j.key::bigint", "j.value::bigint"
    return f"json_each({column}) AS j", "CAST(j.key AS INTEGER)", "CAST(j.value AS INTEGER)"


# --- the ledger ----------------------------------------------------------------------


def ledger_entries_balanced() -> list[Violation]:
    """Every entry has two lines or more and its debits equal its credits in each currency."""
    out = [
        Violation("ledger.entry_balanced", f"entry:{entry_id}",
                  f"{currency}: debit {debit} != credit {credit}")
        for entry_id, currency, debit, credit in query_rows("""
            SELECT entry_id, currency,
                   SUM(CASE WHEN side = 'debit' THEN amount ELSE 0 END),
                   SUM(CASE WHEN side = 'credit' THEN amount ELSE 0 END)
              FROM ledger_line GROUP BY entry_id, currency
            HAVING SUM(CASE WHEN side = 'debit' THEN amount ELSE -amount END) <> 0
             ORDER BY entry_id, currency""")
    ]
    out += [
        Violation("ledger.entry_balanced", f"entry:{entry_id}", f"has {n} line(s); an entry needs at least two")
        for entry_id, n in query_rows("""
            SELECT e.id, COUNT(l.id) FROM ledger_entry e LEFT JOIN ledger_line l ON l.entry_id = e.id
             GROUP BY e.id HAVING COUNT(l.id) < 2 ORDER BY e.id""")
    ]
    return out


def ledger_reversals_mirror() -> list[Violation]:
    """A reversal undoes its entry exactly: per account and currency the two net to zero."""
    return [
        Violation("ledger.reversal_mirror", f"entry:{reversal_id}",
                  f"reversal of entry {original_id} leaves {net:+d} {currency} on account {account}")
        for reversal_id, original_id, account, currency, net in query_rows("""
            SELECT r.id, r.reversal_of_id, l.account_id, l.currency,
                   SUM(CASE WHEN l.side = 'debit' THEN l.amount ELSE -l.amount END)
              FROM ledger_entry r JOIN ledger_line l ON l.entry_id IN (r.id, r.reversal_of_id)
             WHERE r.reversal_of_id IS NOT NULL
             GROUP BY r.id, r.reversal_of_id, l.account_id, l.currency
            HAVING SUM(CASE WHEN l.side = 'debit' THEN l.amount ELSE -l.amount END) <> 0
             ORDER BY r.id""")
    ]


# --- balances, buckets and locks -----------------------------------------------------

_BALANCE_TOTALS_SQL = """
SELECT * FROM (
  SELECT b.id, b.granted, b.usage, b.reserved, b.overage,
         CASE WHEN b.unlimited THEN 1 ELSE 0 END AS unlimited,
         CASE WHEN b.included THEN 1 ELSE 0 END AS included,
         COALESCE(k.granted, 0) AS k_granted, COALESCE(k.consumed, 0) AS k_consumed,
         CASE WHEN COALESCE(k.unlimited, 0) > 0 THEN 1 ELSE 0 END AS k_unlimited,
         CASE WHEN COALESCE(k.n, 0) > 0 THEN 1 ELSE 0 END AS k_included,
         COALESCE(o.reserved, 0) AS o_reserved
    FROM billing_balance b
    LEFT JOIN (SELECT balance_id, SUM(granted) AS granted, SUM(consumed) AS consumed,
                      SUM(CASE WHEN unlimited THEN 1 ELSE 0 END) AS unlimited, COUNT(*) AS n
                 FROM billing_balancebucket WHERE active GROUP BY balance_id) k ON k.balance_id = b.id
    LEFT JOIN (SELECT balance_id, SUM(amount) AS reserved
                 FROM billing_balancelock WHERE status = 'open' GROUP BY balance_id) o ON o.balance_id = b.id
) t
WHERE granted <> k_granted OR unlimited <> k_unlimited OR included <> k_included OR reserved <> o_reserved
   OR (unlimited = 1 AND (overage <> 0 OR k_consumed <> 0))
   OR (unlimited = 0 AND (usage <> k_consumed + overage
                          OR overage <> CASE WHEN usage > granted THEN usage - granted ELSE 0 END))
ORDER BY id
"""


def balances_match_buckets() -> list[Violation]:
    """Each balance agrees with its active buckets and open locks (see the module docstring)."""
    out = []
    for (bid, granted, usage, reserved, overage, unlimited, included, k_granted, k_consumed, k_unlimited,
         k_included, o_reserved) in query_rows(_BALANCE_TOTALS_SQL):
        problems = []
        if granted != k_granted:
            problems.append(f"granted {granted} != {k_granted} granted by its active buckets")
        if unlimited != k_unlimited:
            problems.append(f"unlimited is {bool(unlimited)} but its active buckets say {bool(k_unlimited)}")
        if included != k_included:
            problems.append(f"included is {bool(included)} but it has {'an' if k_included else 'no'} active bucket")
        if reserved != o_reserved:
            problems.append(f"reserved {reserved} != {o_reserved} held by its open locks")
        if unlimited:
            if overage or k_consumed:
                problems.append(f"unlimited but overage {overage} and {k_consumed} consumed in buckets")
        else:
            if usage != k_consumed + overage:
                problems.append(f"usage {usage} != {k_consumed} consumed in buckets + overage {overage}")
            expected = max(0, usage - granted)
            if overage != expected:
                problems.append(f"overage {overage} != usage beyond granted {expected}")
        out += [Violation("balance.totals", f"balance:{bid}", p) for p in problems]
    return out


def balances_not_below_zero() -> list[Violation]:
    """No limited balance is below zero except by a reported overdraft: the units
    past zero are usage recorded beyond every bucket (``overage``, shown as a
    negative balance, billed when overage is allowed) or reservations of open
    locks made within overage."""
    return [
        Violation("balance.below_zero", f"balance:{bid}",
                  f"remaining {remaining} (granted {granted} − usage {usage} − reserved {reserved}) "
                  f"is not covered by overage {overage} and reservations")
        for bid, granted, usage, reserved, overage, remaining in query_rows("""
            SELECT id, granted, usage, reserved, overage, granted - usage - reserved FROM billing_balance
             WHERE NOT unlimited AND granted - usage - reserved < 0 AND usage - granted > overage
             ORDER BY id""")
    ]


_LOCK_STATE_SQL = """
SELECT id, status, amount, consumed, released, expires_at, finalized_at FROM billing_balancelock
 WHERE NOT (
   (status = 'open' AND consumed = 0 AND released = 0 AND finalized_at IS NULL)
   OR (status = 'consumed' AND finalized_at IS NOT NULL AND finalized_at < expires_at
       AND released = CASE WHEN amount > consumed THEN amount - consumed ELSE 0 END)
   OR (status IN ('released', 'expired') AND finalized_at IS NOT NULL AND consumed = 0 AND released = amount
       AND ((status = 'released' AND finalized_at < expires_at) OR (status = 'expired' AND finalized_at >= expires_at)))
 )
 ORDER BY id
"""


def locks_consistent() -> list[Violation]:
    """Every lock is in exactly one state, and its parts and timestamps say so:
    open (nothing consumed or released, not finalized); consumed (finalized
    before expiry, the rest of the reservation released); released (finalized
    before expiry, all released); expired (finalized at or after expiry, all released)."""
    return [
        Violation("lock.state", f"lock:{lock_id}",
                  f"status {status} with amount {amount}, consumed {consumed}, released {released}, "
                  f"expires_at {expires_at}, finalized_at {finalized_at}")
        for lock_id, status, amount, consumed, released, expires_at, finalized_at in query_rows(_LOCK_STATE_SQL)
    ]


def locks_took_effect_once() -> list[Violation]:
    """A confirmed lock recorded its usage once: one usage event (written at the
    moment of the confirm, of the lock's customer and feature) of the consumed
    units; a lock that consumed nothing recorded none."""
    lock_key = json_text("e.properties", "lockId")
    sql = f"""
        SELECT l.id, l.status, l.consumed, COALESCE(ev.n, 0), COALESCE(ev.total, 0)
          FROM billing_balancelock l
          JOIN billing_balance b ON b.id = l.balance_id
          LEFT JOIN (SELECT {lock_key} AS lock_id, e.customer_id, e.feature_id, e.created_at,
                            COUNT(*) AS n, SUM(e.amount) AS total
                       FROM billing_usageevent e WHERE {lock_key} IS NOT NULL
                      GROUP BY {lock_key}, e.customer_id, e.feature_id, e.created_at) ev
            ON ev.lock_id = l.id AND ev.customer_id = b.customer_id AND ev.feature_id = b.feature_id
           AND ev.created_at = l.finalized_at
         WHERE COALESCE(ev.n, 0) <> CASE WHEN l.status = 'consumed' AND l.consumed > 0 THEN 1 ELSE 0 END
            OR (ev.n IS NOT NULL AND ev.total <> l.consumed)
         ORDER BY l.id"""
    return [
        Violation("lock.effect", f"lock:{lock_id}",
                  f"{status} lock consumed {consumed} but {n} usage event(s) of {total} units were recorded for it")
        for lock_id, status, consumed, n, total in query_rows(sql)
    ]


def usage_events_have_balance() -> list[Violation]:
    """Every usage event (one per idempotency key: a UNIQUE) moved a balance: the
    balance of its customer, feature and entity exists."""
    return [
        Violation("usage.effect", f"usage_event:{event_id}",
                  f"no balance of customer {customer_id}, feature {feature_id}, entity {entity_id} (key {key!r})")
        for event_id, customer_id, feature_id, entity_id, key in query_rows("""
            SELECT e.id, e.customer_id, e.feature_id, e.entity_id, e.idempotency_key FROM billing_usageevent e
             WHERE NOT EXISTS (SELECT 1 FROM billing_balance b
                                WHERE b.customer_id = e.customer_id AND b.feature_id = e.feature_id
                                  AND (b.entity_id = e.entity_id OR (b.entity_id IS NULL AND e.entity_id IS NULL)))
             ORDER BY e.id""")
    ]


# --- invoices, payments and the ledger ------------------------------------------------

_INVOICE_ENTRY_SQL = f"""
SELECT * FROM (
  SELECT i.id, i.status, i.currency, i.subtotal, i.discount, i.total, i.ledger_entry_id, e.source,
         COALESCE(SUM(CASE WHEN l.account_id = '{accounts.REVENUE}' AND l.side = 'credit' AND l.currency = i.currency
                           THEN l.amount END), 0) AS revenue,
         COALESCE(SUM(CASE WHEN l.account_id = '{accounts.DISCOUNTS}' AND l.side = 'debit' AND l.currency = i.currency
                           THEN l.amount END), 0) AS discounts,
         COALESCE(SUM(CASE WHEN l.account_id = '{accounts.RECEIVABLE}' AND l.side = 'debit' AND l.currency = i.currency
                           THEN l.amount END), 0) AS receivable,
         COUNT(l.id) AS n_lines,
         (SELECT COUNT(*) FROM ledger_entry r WHERE r.reversal_of_id = i.ledger_entry_id) AS reversed
    FROM billing_invoice i
    LEFT JOIN ledger_entry e ON e.id = i.ledger_entry_id
    LEFT JOIN ledger_line l ON l.entry_id = i.ledger_entry_id
   GROUP BY i.id, i.status, i.currency, i.subtotal, i.discount, i.total, i.ledger_entry_id, e.source
) t
WHERE (subtotal = 0 AND ledger_entry_id IS NOT NULL)
   OR (subtotal > 0 AND (ledger_entry_id IS NULL OR source <> 'invoice:' || id OR revenue <> subtotal
                         OR discounts <> discount OR receivable <> total
                         OR n_lines <> 1 + CASE WHEN discount > 0 THEN 1 ELSE 0 END + CASE WHEN total > 0 THEN 1 ELSE 0 END))
   OR (status = 'void' AND ledger_entry_id IS NOT NULL AND reversed = 0)
   OR (status <> 'void' AND reversed > 0)
ORDER BY id
"""


def invoices_match_ledger() -> list[Violation]:
    """Each issued invoice (subtotal > 0) has its entry: CR 4001 subtotal, DR 4900
    discount, DR 1200 total, nothing else; a free one has none; a void invoice's
    entry is reversed, no other invoice's is."""
    out = []
    for (inv, status, currency, subtotal, discount, total, entry_id, source, revenue, discounts, receivable,
         n_lines, reversed_) in query_rows(_INVOICE_ENTRY_SQL):
        if subtotal == 0 and entry_id is not None:
            msg = f"subtotal 0 but ledger entry {entry_id}"
        elif subtotal > 0 and entry_id is None:
            msg = f"issued ({subtotal} {currency}) without a ledger entry"
        elif status == "void" and entry_id is not None and not reversed_:
            msg = f"void but its entry {entry_id} is not reversed"
        elif status != "void" and reversed_:
            msg = f"{status} but its entry {entry_id} is reversed"
        else:
            msg = (f"entry {entry_id} ({source!r}, {n_lines} lines) has CR {accounts.REVENUE} {revenue}, "
                   f"DR {accounts.DISCOUNTS} {discounts}, DR {accounts.RECEIVABLE} {receivable}; the invoice has "
                   f"subtotal {subtotal}, discount {discount}, total {total} {currency}")
        out.append(Violation("invoice.ledger_entry", f"invoice:{inv}", msg))
    return out


def invoices_match_payments() -> list[Violation]:
    """Paid = Σ succeeded charges (at most one per invoice), refunded = Σ succeeded
    refunds (a pending refund is not refunded yet, but it and the refunded part
    together are at most what was paid), and a paid invoice is paid in full.
    Unapplied charges and their refunds are not the invoice's (``unapplied_cash_refunded``)."""
    return [
        Violation("invoice.payments", f"invoice:{inv}",
                  f"{status}: amount_paid {paid} (total {total}) vs {charges} in {n_charges} succeeded charge(s); "
                  f"amount_refunded {refunded} vs {refunds} in refunds, {pending} pending")
        for inv, status, total, paid, refunded, charges, n_charges, refunds, pending in query_rows("""
            SELECT * FROM (
              SELECT i.id, i.status, i.total, i.amount_paid, i.amount_refunded,
                     COALESCE(SUM(CASE WHEN p.kind = 'charge' AND p.status = 'succeeded' THEN p.amount END), 0) AS charges,
                     COUNT(CASE WHEN p.kind = 'charge' AND p.status = 'succeeded' THEN 1 END) AS n_charges,
                     COALESCE(SUM(CASE WHEN p.kind = 'refund' AND p.status = 'succeeded' THEN p.amount END), 0) AS refunds,
                     COALESCE(SUM(CASE WHEN p.kind = 'refund' AND p.status = 'pending' THEN p.amount END), 0) AS pending
                FROM billing_invoice i
                LEFT JOIN billing_payment p ON p.invoice_id = i.id AND p.status IN ('succeeded', 'pending')
                                           AND NOT p.unapplied
               GROUP BY i.id, i.status, i.total, i.amount_paid, i.amount_refunded
            ) t
            WHERE amount_paid <> charges OR amount_refunded <> refunds OR n_charges > 1
               OR (status = 'paid' AND amount_paid <> total) OR amount_refunded + pending > amount_paid
            ORDER BY id""")
    ]


def unapplied_cash_refunded() -> list[Violation]:
    """Money the gateway took for an invoice no longer open (an unapplied charge)
    is refunded in full: its refunds, made or pending, add up to it, and it is
    not the invoice's; a refund is unapplied exactly when its charge is. (Their
    entries, DR 1000 / CR 2100 and back, are payments_match_ledger.)"""
    out = [
        Violation("payment.unapplied", f"payment:{pid}",
                  f"unapplied charge of {amount} on {status} invoice {inv}: {refunds} in {n} refund(s) made or pending")
        for pid, amount, inv, status, refunds, n in query_rows("""
            SELECT c.id, c.amount, i.id, i.status, COALESCE(SUM(r.amount), 0), COUNT(r.id)
              FROM billing_payment c JOIN billing_invoice i ON i.id = c.invoice_id
              LEFT JOIN billing_payment r ON r.refund_of_id = c.id AND r.kind = 'refund'
                                         AND r.status IN ('succeeded', 'pending')
             WHERE c.kind = 'charge' AND c.unapplied
             GROUP BY c.id, c.amount, c.status, i.id, i.status
            HAVING c.status <> 'succeeded' OR i.status = 'open' OR COALESCE(SUM(r.amount), 0) <> c.amount
             ORDER BY c.id""")
    ]
    out += [
        Violation("payment.unapplied", f"payment:{pid}",
                  f"{'unapplied' if unapplied else 'applied'} refund of charge {charge_id} "
                  f"({'none' if charge_unapplied is None else 'unapplied' if charge_unapplied else 'applied'})")
        for pid, unapplied, charge_id, charge_unapplied in query_rows("""
            SELECT r.id, r.unapplied, r.refund_of_id, c.unapplied FROM billing_payment r
              LEFT JOIN billing_payment c ON c.id = r.refund_of_id
             WHERE r.kind = 'refund' AND ((c.id IS NULL AND r.unapplied) OR (c.id IS NOT NULL AND (
                   c.kind <> 'charge' OR c.invoice_id <> r.invoice_id
                   OR (c.unapplied AND NOT r.unapplied) OR (r.unapplied AND NOT c.unapplied))))
             ORDER BY r.id""")
    ]
    return out


_PAYMENT_ENTRY_SQL = f"""
SELECT * FROM (
  SELECT p.id, p.kind, p.status, p.amount, p.currency, p.ledger_entry_id, e.source,
         COALESCE(SUM(CASE WHEN l.side = 'debit' AND l.currency = p.currency AND l.account_id =
                           CASE WHEN p.kind = 'charge' THEN '{accounts.CASH}'
                                WHEN p.unapplied THEN '{accounts.CUSTOMER_CREDIT}' ELSE '{accounts.REFUNDS}' END
                           THEN l.amount END), 0) AS dr,
         COALESCE(SUM(CASE WHEN l.side = 'credit' AND l.currency = p.currency AND l.account_id =
                           CASE WHEN p.kind = 'refund' THEN '{accounts.CASH}'
                                WHEN p.unapplied THEN '{accounts.CUSTOMER_CREDIT}' ELSE '{accounts.RECEIVABLE}' END
                           THEN l.amount END), 0) AS cr,
         COUNT(l.id) AS n_lines, COALESCE(MAX(s.n), 0) AS posted
    FROM billing_payment p
    LEFT JOIN ledger_entry e ON e.id = p.ledger_entry_id
    LEFT JOIN ledger_line l ON l.entry_id = p.ledger_entry_id
    LEFT JOIN (SELECT source, COUNT(*) AS n FROM ledger_entry
                WHERE source LIKE 'payment:%' OR source LIKE 'refund:%' GROUP BY source) s
      ON s.source = CASE WHEN p.kind = 'charge' THEN 'payment:' ELSE 'refund:' END || p.id
   GROUP BY p.id, p.kind, p.status, p.amount, p.currency, p.ledger_entry_id, e.source, p.unapplied
) t
WHERE (status = 'succeeded' AND (ledger_entry_id IS NULL OR dr <> amount OR cr <> amount OR n_lines <> 2
                                 OR posted <> 1
                                 OR source <> CASE WHEN kind = 'charge' THEN 'payment:' ELSE 'refund:' END || id))
   OR (status <> 'succeeded' AND (ledger_entry_id IS NOT NULL OR posted <> 0))
ORDER BY id
"""


def payments_match_ledger() -> list[Violation]:
    """Each succeeded payment posted exactly one entry, its own: a charge DR 1000 /
    CR 1200, a refund DR 4910 / CR 1000, of its amount (unapplied cash: DR 1000 /
    CR 2100 and its refund DR 2100 / CR 1000); a failed, waiting or pending one none."""
    return [
        Violation("payment.ledger_entry", f"payment:{pid}",
                  f"{status} {kind} of {amount} {currency}: entry {entry_id} ({source!r}, {n_lines} lines, "
                  f"DR {dr} / CR {cr}); {posted} entries posted for it")
        for pid, kind, status, amount, currency, entry_id, source, dr, cr, n_lines, posted in query_rows(_PAYMENT_ENTRY_SQL)
    ]


def gateway_events_applied() -> list[Violation]:
    """Every stored gateway event that reports the final outcome of one of our
    charges (stored once per event id: a UNIQUE) took effect: that charge no
    longer waits for the customer. (Its entry, once, is payments_match_ledger.)"""
    obj_id = json_text("g.payload", "data", "object", "id")
    obj_kind = json_text("g.payload", "data", "object", "object")
    error_code = json_text("g.payload", "data", "object", "last_payment_error", "code")
    sql = f"""
        SELECT g.id, g.event_id, g.type, p.id FROM billing_gatewayevent g
          JOIN billing_payment p ON p.gateway = g.gateway AND p.gateway_ref = {obj_id} AND p.kind = 'charge'
         WHERE p.status = 'requires_action' AND {obj_kind} = 'payment_intent'
           AND (g.type = 'payment_intent.succeeded'
                OR (g.type = 'payment_intent.payment_failed'
                    AND COALESCE({error_code}, '') <> 'authentication_required'))
         ORDER BY g.id"""
    return [
        Violation("gateway_event.effect", f"gateway_event:{event_id}",
                  f"{event_type} was stored but payment {payment_id} still waits for the customer")
        for _, event_id, event_type, payment_id in query_rows(sql)
    ]


def books_reconcile() -> list[Violation]:
    """Per currency, the accounts agree with the documents they record:
    1200 Receivable = unpaid part of open invoices; 1000 Cash = succeeded charges −
    refunds; 4001 Revenue = subtotals and 4900 Discounts = discounts of invoices
    not void; 4910 Refunds = refunds of applied charges; 2100 Customer credits =
    unapplied charges not refunded yet; 6000 Bad debt = unpaid part of
    uncollectible invoices; and debits equal credits (pending refunds are not
    money moved yet)."""
    ledger: dict[tuple[str, str], int] = {}  # (account, currency) -> debit − credit
    level: dict[str, int] = {}
    for account, currency, net in query_rows("""
            SELECT account_id, currency, SUM(CASE WHEN side = 'debit' THEN amount ELSE -amount END)
              FROM ledger_line GROUP BY account_id, currency"""):
        ledger[(account, currency)] = net
        level[currency] = level.get(currency, 0) + net
    documents: dict[tuple[str, str], int] = {}
    for currency, open_unpaid, revenue, discounts, written_off in query_rows("""
            SELECT currency,
                   SUM(CASE WHEN status = 'open' THEN total - amount_paid ELSE 0 END),
                   SUM(CASE WHEN status <> 'void' THEN subtotal ELSE 0 END),
                   SUM(CASE WHEN status <> 'void' THEN discount ELSE 0 END),
                   SUM(CASE WHEN status = 'uncollectible' THEN total - amount_paid ELSE 0 END)
              FROM billing_invoice GROUP BY currency"""):
        documents[(accounts.RECEIVABLE, currency)] = open_unpaid
        documents[(accounts.REVENUE, currency)] = -revenue
        documents[(accounts.DISCOUNTS, currency)] = discounts
        documents[(accounts.BAD_DEBT, currency)] = written_off
    for currency, charged, refunded, applied_refunded, unapplied_held in query_rows("""
            SELECT currency, SUM(CASE WHEN kind = 'charge' THEN amount ELSE 0 END),
                   SUM(CASE WHEN kind = 'refund' THEN amount ELSE 0 END),
                   SUM(CASE WHEN kind = 'refund' AND NOT unapplied THEN amount ELSE 0 END),
                   SUM(CASE WHEN NOT unapplied THEN 0 WHEN kind = 'charge' THEN amount ELSE -amount END)
              FROM billing_payment WHERE status = 'succeeded' GROUP BY currency"""):
        documents[(accounts.CASH, currency)] = charged - refunded
        documents[(accounts.REFUNDS, currency)] = applied_refunded
        documents[(accounts.CUSTOMER_CREDIT, currency)] = -unapplied_held
    what = {
        accounts.RECEIVABLE: "the unpaid part of open invoices",
        accounts.CASH: "succeeded charges − refunds",
        accounts.REVENUE: "−(subtotals of invoices not void)",
        accounts.DISCOUNTS: "discounts of invoices not void",
        accounts.REFUNDS: "succeeded refunds of applied charges",
        accounts.CUSTOMER_CREDIT: "−(unapplied charges − their succeeded refunds)",
        accounts.BAD_DEBT: "the unpaid part of uncollectible invoices",
    }
    out = [
        Violation("books.trial_balance", f"currency:{currency}", f"debits exceed credits by {net}")
        for currency, net in sorted(level.items()) if net
    ]
    currencies = sorted({c for _, c in ledger} | {c for _, c in documents})
    for account, meaning in what.items():
        for currency in currencies:
            booked, expected = ledger.get((account, currency), 0), documents.get((account, currency), 0)
            if booked != expected:
                out.append(Violation(f"books.account_{account}", f"account:{account}:{currency}",
                                     f"debit − credit {booked} != {expected}, {meaning}"))
    return out


# --- all of it -----------------------------------------------------------------------

BOOKS_CHECKS: list[Callable[[], list[Violation]]] = [
    ledger_entries_balanced,
    ledger_reversals_mirror,
    invoices_match_ledger,
    invoices_match_payments,
    payments_match_ledger,
    unapplied_cash_refunded,
    gateway_events_applied,
    books_reconcile,
]

BALANCE_CHECKS: list[Callable[[], list[Violation]]] = [
    balances_match_buckets,
    balances_not_below_zero,
    locks_consistent,
    locks_took_effect_once,
    usage_events_have_balance,
]

_COUNTED = {
    "ledger entries": "ledger_entry",
    "ledger lines": "ledger_line",
    "invoices": "billing_invoice",
    "payments": "billing_payment",
    "gateway events": "billing_gatewayevent",
    "balances": "billing_balance",
    "buckets": "billing_balancebucket",
    "locks": "billing_balancelock",
    "usage events": "billing_usageevent",
    "credit entries": "credits_creditentry",
}


def audit_books() -> list[Violation]:
    """The ledger, invoices and payments checks (what ``assert_books_reconcile`` runs)."""
    return [v for check in BOOKS_CHECKS for v in check()]


def audit_checks() -> list[Callable[[], list[Violation]]]:
    # The credits app builds on billing, not the reverse: its checks are looked up here.
    from credits.audit import CREDIT_CHECKS

    return [*BOOKS_CHECKS, *BALANCE_CHECKS, *CREDIT_CHECKS]


def audit_ledger() -> AuditReport:
    """Every check over the whole database. Read-only."""
    checks = audit_checks()
    violations = [v for check in checks for v in check()]
    sql = " UNION ALL ".join(f"SELECT '{label}', COUNT(*) FROM {table}" for label, table in _COUNTED.items())
    counts = {"checks": len(checks), **{label: n for label, n in query_rows(sql)}}
    return AuditReport(violations=violations, counts=counts)
