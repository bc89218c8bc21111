"""The credits app's part of ``manage.py audit_ledger`` (billing/selectors/audit_ledger.py):
read-only checks that every debit and refund of the credit ledger took effect
once. The database lets a (jobId, sourceService) be debited once and a key be
used once (UNIQUEs); these check the effects: each debit moved its units out
of its balance's buckets and recorded one usage event of them, each refund
that gave units back recorded one usage event of minus those units, and no
credits usage event lacks its entry.
"""

from __future__ import annotations

from billing.selectors.audit_ledger import Violation, query_rows, json_items, json_text


def _events_by_entry() -> str:
    """Usage events the credits API wrote, per credit entry id and customer."""
    entry_key = json_text("e.properties", "ledgerEntryId")
    source = json_text("e.properties", "source")
    return f"""SELECT {entry_key} AS entry_id, e.customer_id, COUNT(*) AS n, SUM(e.amount) AS total
                 FROM billing_usageevent e WHERE {source} = 'credits' AND {entry_key} IS NOT NULL
                GROUP BY {entry_key}, e.customer_id"""


def credit_debits_took_effect_once() -> list[Violation]:
    """A debit took its units from buckets of its own balance (all of them, or
    none on an unlimited balance) and recorded exactly one usage event of them."""
    items, key, value = json_items("p.buckets")
    sql = f"""
        SELECT * FROM (
          SELECT ce.id, ce.amount, COALESCE(ev.n, 0) AS n, COALESCE(ev.total, 0) AS total,
                 COALESCE(parts.units, 0) AS from_buckets, COALESCE(parts.foreign_buckets, 0) AS foreign_buckets
            FROM credits_creditentry ce
            LEFT JOIN ({_events_by_entry()}) ev ON ev.entry_id = ce.id AND ev.customer_id = ce.customer_id
            LEFT JOIN (SELECT p.id, SUM({value}) AS units,
                              SUM(CASE WHEN bb.balance_id <> p.balance_id THEN 1 ELSE 0 END) AS foreign_buckets
                         FROM credits_creditentry p CROSS JOIN {items}
                         LEFT JOIN billing_balancebucket bb ON bb.id = {key}
                        WHERE p.kind = 'debit' GROUP BY p.id) parts ON parts.id = ce.id
           WHERE ce.kind = 'debit'
        ) t
        WHERE n <> 1 OR total <> amount OR (from_buckets <> amount AND from_buckets <> 0) OR foreign_buckets > 0
        ORDER BY id"""
    return [
        Violation("credits.debit_effect", f"credit_entry:{entry_id}",
                  f"debit of {amount}: {n} usage event(s) of {total} units; {from_buckets} units taken from buckets"
                  + (f", {foreign} bucket(s) of another balance" if foreign else ""))
        for entry_id, amount, n, total, from_buckets, foreign in query_rows(sql)
    ]


def credit_refunds_took_effect_once() -> list[Violation]:
    """A refund covers part of its own debit (same workspace and balance; all
    refunds of a debit together at most the debit), and recorded one usage
    event of −returned when it gave units back, none when they had lapsed."""
    items, _, value = json_items("r.buckets")
    sql = f"""
        SELECT * FROM (
          SELECT r.id, r.amount, r.returned, d.id AS debit_id, d.amount AS debit_amount,
                 CASE WHEN r.customer_id = d.customer_id AND r.balance_id = d.balance_id AND d.kind = 'debit'
                      THEN 1 ELSE 0 END AS same,
                 (SELECT SUM(o.amount) FROM credits_creditentry o WHERE o.refund_of_id = d.id) AS refunded,
                 (SELECT COALESCE(SUM({value}), 0) FROM {items}) AS from_buckets,
                 COALESCE(ev.n, 0) AS n, COALESCE(ev.total, 0) AS total
            FROM credits_creditentry r
            JOIN credits_creditentry d ON d.id = r.refund_of_id
            LEFT JOIN ({_events_by_entry()}) ev ON ev.entry_id = r.id AND ev.customer_id = r.customer_id
           WHERE r.kind = 'refund'
        ) t
        WHERE same = 0 OR refunded > debit_amount OR from_buckets > amount
           OR n <> CASE WHEN returned > 0 THEN 1 ELSE 0 END OR total <> -returned
        ORDER BY id"""
    return [
        Violation("credits.refund_effect", f"credit_entry:{entry_id}",
                  f"refund of {amount} (returned {returned}) of debit {debit_id} ({debit_amount}, refunded in all "
                  f"{refunded}{'' if same else ', another workspace or balance'}): {n} usage event(s) of {total} "
                  f"units; {from_buckets} units from buckets")
        for entry_id, amount, returned, debit_id, debit_amount, same, refunded, from_buckets, n, total in query_rows(sql)
    ]


def credit_usage_has_entry() -> list[Violation]:
    """No usage event of the credits API without its credit entry (of its workspace)."""
    sql = f"""
        SELECT ev.entry_id, ev.customer_id, ev.n FROM ({_events_by_entry()}) ev
         WHERE NOT EXISTS (SELECT 1 FROM credits_creditentry ce
                            WHERE ce.id = ev.entry_id AND ce.customer_id = ev.customer_id)
         ORDER BY ev.entry_id"""
    return [
        Violation("credits.orphan_usage", f"credit_entry:{entry_id}",
                  f"{n} credits usage event(s) of customer {customer_id} name an entry that does not exist")
        for entry_id, customer_id, n in query_rows(sql)
    ]


CREDIT_CHECKS = [credit_debits_took_effect_once, credit_refunds_took_effect_once, credit_usage_has_entry]
