"""Make the database refuse UPDATE and DELETE of ledger entries and lines.

PostgreSQL only: a BEFORE UPDATE OR DELETE row trigger on both tables raises.
TRUNCATE fires no row trigger, so Django's test flush (TRUNCATE on
PostgreSQL) still works. On SQLite this migration does nothing: there the
Python guard in ``ledger.models`` (``save``/``delete``/``QuerySet.update``/
``delete`` raise ``LedgerImmutable``) is the only one; the database guard is
PostgreSQL's.

A later migration that must rewrite these rows (say, a backfill of a new
column) has to ``ALTER TABLE … DISABLE TRIGGER`` around it, deliberately.
"""

from django.db import migrations

FUNCTION = "ledger_refuse_change"
TRIGGERS = {"ledger_entry": "ledger_entry_immutable", "ledger_line": "ledger_line_immutable"}


def create_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"""
        CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger rows are immutable'
                USING DETAIL = TG_OP || ' on ' || TG_TABLE_NAME,
                      HINT = 'Post a reversing entry instead.';
        END
        $$
        """
    )
    for table, trigger in TRIGGERS.items():
        schema_editor.execute(
            f"CREATE TRIGGER {trigger} BEFORE UPDATE OR DELETE ON {schema_editor.quote_name(table)} "
            f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()"
        )


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, trigger in TRIGGERS.items():
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {schema_editor.quote_name(table)}")
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")


class Migration(migrations.Migration):
    dependencies = [("ledger", "0002_seed_chart_of_accounts")]

    operations = [migrations.RunPython(create_triggers, drop_triggers)]
