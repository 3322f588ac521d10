"""The demo ERP of indutech_devtools.erp with sql-backup's postgres change capture, as the
sql-backup tests, the demo and the benchmark load it."""

from __future__ import annotations

from indutech_devtools import erp
from indutech_sql_backup.dialects import PostgresDialect, TableRef


def demo_erp_statements(schema: str, *, scale: int) -> list[str]:
    """The demo ERP in ``schema`` with change capture on every table (before its rows)."""
    dialect = PostgresDialect()
    capture = [
        statement
        for name, key in erp.table_keys().items()
        for statement in dialect.install_change_capture(TableRef(schema, name), key)
    ]
    return erp.create_statements(schema, scale=scale, change_capture=capture)
