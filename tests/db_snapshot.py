"""What a refused request must leave alone: the row count of every table of our apps."""

from django.apps import apps
from django.db import connection

APPS = ("billing", "ledger", "credits", "rewards")
# A refused request may still store its answer under its Idempotency-Key, and a signed
# credits request that is refused after its signature checked out is remembered as seen
# (the replay guard: in the database when there is no Redis).
MAY_CHANGE_ON_REFUSAL = {"billing_idempotencykey", "credits_seensignature"}


def row_counts() -> tuple:
    """(table, count) for every table of our apps, in one query."""
    tables = sorted(
        model._meta.db_table
        for app in APPS
        if apps.is_installed(app)
        for model in apps.get_app_config(app).get_models()
        if model._meta.db_table not in MAY_CHANGE_ON_REFUSAL
    )
    sql = " UNION ALL ".join(f"SELECT '{t}', COUNT(*) FROM {connection.ops.quote_name(t)}" for t in tables)
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return tuple(cursor.fetchall())
