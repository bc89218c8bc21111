"""SQL-level prepared statements for the few statements of the hot path (PostgreSQL).

Django keeps psycopg's automatic prepared statements off (they break
transaction-pooling proxies), and these statements cost more to plan than to
run: the lookup of a read-only check plans in ~150 µs and runs in ~50 µs, the
one-round-trip deduction plans in ~600 µs (measured on the bench machine). A
statement here is PREPAREd once per database session, on first use, and
EXECUTEd from then on. When the session has lost it (DEALLOCATE, DISCARD, a
pooler that hands out another server connection) the plain SQL runs instead and
the next call prepares it again. Other databases always run the plain SQL.
"""

from __future__ import annotations

import re
from contextlib import nullcontext

from django.db import ProgrammingError, transaction

_PARAM = re.compile(r"%\((\w+)\)s")
_MISSING = "26000"  # invalid_sql_statement_name: no such prepared statement
_DUPLICATE = "42P05"  # duplicate_prepared_statement


def _sqlstate(exc: Exception) -> str | None:
    return getattr(exc.__cause__, "sqlstate", None)


class PreparedStatement:
    """``sql`` with ``%(name)s`` parameters, one statement or several separated by
    ";\\n" (each prepared on its own; they still run in one round trip, as one
    implicit transaction). ``types`` gives every parameter's SQL type."""

    def __init__(self, name: str, sql: str, types: dict[str, str]):
        self.name, self.sql = name, sql
        self.prepares, executes = [], []
        for index, part in enumerate(p for p in sql.split(";\n") if p.strip()):
            names = list(dict.fromkeys(_PARAM.findall(part)))
            body = _PARAM.sub(lambda m: f"${names.index(m.group(1)) + 1}", part)
            statement = f"{name}_{index}"
            self.prepares.append(f"PREPARE {statement}({', '.join(types[n] for n in names)}) AS {body}")
            executes.append(f"EXECUTE {statement}({', '.join(f'%({n})s' for n in names)})")
        self.execute_sql = ";\n".join(executes)

    def execute(self, cursor, params: dict) -> None:
        """Run the statement(s) on a Django ``cursor``; read the results from it."""
        db = cursor.db
        if db.vendor != "postgresql":
            cursor.execute(self.sql, params)
            return
        done = db.connection.__dict__.setdefault("_billing_prepared", set())
        if self.name not in done:
            for prepare in self.prepares:
                try:
                    with self._savepoint(db):
                        cursor.execute(prepare)
                except ProgrammingError as exc:
                    if _sqlstate(exc) != _DUPLICATE:
                        raise
            done.add(self.name)
        try:
            with self._savepoint(db):
                cursor.execute(self.execute_sql, params)
        except ProgrammingError as exc:
            if _sqlstate(exc) != _MISSING:
                raise
            done.discard(self.name)
            cursor.execute(self.sql, params)

    @staticmethod
    def _savepoint(db):
        """A failed statement inside a transaction would spoil it: contain it."""
        return transaction.atomic(using=db.alias) if db.in_atomic_block else nullcontext()
