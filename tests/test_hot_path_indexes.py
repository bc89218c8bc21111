"""The tables every track and debit inserts into carry no index another one already covers.

Each index of billing_usageevent (track) and credits_creditentry (debit) is a btree insert, and
the WAL record of it, on the hot path; one whose columns lead another non-partial index serves no
lookup the other does not. Measured with EXPLAIN (ANALYZE, WAL) over 100 tracks right after a
checkpoint: with Django's default index on usage_event.customer_id, 13.1 KB of WAL per event
(2.0 full-page images); without it, 8.1 KB (1.4). Track waits for that WAL to be flushed.
"""

import pytest
from django.db import connection

from tests.conftest import postgres_only

pytestmark = [*postgres_only, pytest.mark.django_db]

HOT_TABLES = ("billing_usageevent", "credits_creditentry")

_INDEXES_SQL = """
SELECT i.relname, x.indisunique, x.indpred IS NOT NULL, x.indexprs IS NOT NULL,
       (SELECT array_agg(a.attname::text ORDER BY k.ord)
          FROM unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum)
  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
 WHERE x.indrelid = %s::regclass
"""


def indexes(table: str) -> list[tuple[str, bool, bool, bool, list[str]]]:
    with connection.cursor() as cursor:
        cursor.execute(_INDEXES_SQL, [table])
        return cursor.fetchall()


@pytest.mark.parametrize("table", HOT_TABLES)
def test_no_index_is_a_leading_prefix_of_another(table):
    rows = indexes(table)
    assert len(rows) >= 3, rows  # the query reads this table's indexes
    redundant = [
        (name, cols, other_name, other_cols)
        for name, unique, partial, expr, cols in rows
        if not unique and not partial and not expr
        for other_name, _u, other_partial, other_expr, other_cols in rows
        if other_name != name and not other_partial and not other_expr
        and len(cols) <= len(other_cols) and other_cols[:len(cols)] == cols
    ]
    assert redundant == [], f"indexes covered by another one on {table}: {redundant}"


def test_the_lookups_the_dropped_indexes_served_still_have_an_index():
    """customer_id leads an index on both tables (the series and the idempotency key of usage
    events, (customer, created_at) of credit entries), so the PROTECT check on deleting a
    customer and the per-customer reads stay index scans."""
    for table in HOT_TABLES:
        leading = {cols[0] for _n, _u, partial, expr, cols in indexes(table) if not partial and not expr}
        assert "customer_id" in leading, (table, leading)
