"""Which tables to back up, their columns, keys and change columns.

Include/exclude rules are ``schema.table`` globs (``sales.*``, ``*.audit_*``);
the change-capture log of the postgres stand-in is never a table to back up.
A table without a primary key needs a key override: without one the table is
skipped and reported (the others go on); a named table that does not exist is an
error. Both are found before anything is written. A key override is checked for
uniqueness when a run is planned (``check_key``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

import pyodbc

from indutech_sql_backup.config import TableOverride
from indutech_sql_backup.dialects import DELETES_TABLE, Column, Query, TableInfo, TableRef
from indutech_sql_backup.errors import (
    KeyNotUniqueError,
    NoKeyError,
    UnknownTableError,
    environment_error,
)
from indutech_sql_backup.sources.odbc import OdbcSource


def selected(ref: TableRef, include: Iterable[str], exclude: Iterable[str]) -> bool:
    name = ref.qualified.lower()
    if ref.name.lower() == DELETES_TABLE:
        return False
    if not any(fnmatch.fnmatchcase(name, p.lower()) for p in include):
        return False
    return not any(fnmatch.fnmatchcase(name, p.lower()) for p in exclude)


def list_tables(source: OdbcSource, connection: pyodbc.Connection) -> list[TableRef]:
    return [
        TableRef(str(s), str(t)) for s, t in source.fetch(connection, source.dialect.list_tables())
    ]


def describe(
    source: OdbcSource,
    connection: pyodbc.Connection,
    ref: TableRef,
    *,
    override: TableOverride | None,
    default_watermark: str,
) -> TableInfo:
    rows = source.fetch(connection, source.dialect.list_columns(ref))
    if not rows:
        raise UnknownTableError(
            f"table {ref.qualified} does not exist in {source.where} (or the user may not "
            "read it). Check the name (schema.table) and the user's grants."
        )
    columns = tuple(Column(str(n), str(t), str(null) == "YES") for n, t, null in rows)
    names = {c.name for c in columns}
    key_from = "primary key"
    key = tuple(str(r[0]) for r in source.fetch(connection, source.dialect.primary_key(ref)))
    if override is not None and override.key:
        key, key_from = override.key, "override"
    if not key:
        raise NoKeyError(
            f"table {ref.qualified} has no primary key and no key override, so it can be "
            "neither split into chunks nor merged by a delta. Add a primary key, or set "
            f'SQL_BACKUP_TABLES=\'{{"{ref.qualified}": {{"key": ["col", ...]}}}}\' '
            "naming unique, non-null columns, or exclude it (SQL_BACKUP_EXCLUDE)."
        )
    missing = [k for k in key if k not in names]
    if missing:
        raise NoKeyError(f"the key override of {ref.qualified} names unknown columns {missing}")
    watermark = (override.watermark if override else None) or default_watermark
    table = TableInfo(
        ref=ref,
        columns=columns,
        key=key,
        watermark=watermark if watermark in names else None,
        key_from=key_from,
    )
    # A column the type matrix refuses stops the table here, before any plan or part.
    source.dialect.check_columns(table)
    return table


def key_check(source: OdbcSource, table: TableInfo) -> Query:
    """(key values held by more than one row, rows with a NULL in the key): plain SQL that
    SQL Server and PostgreSQL both run. One aggregate scan of the table."""
    quote = source.dialect.quote
    name = source.dialect.table(table.ref)
    key = ", ".join(quote(k) for k in table.key)
    nulls = " OR ".join(f"{quote(k)} IS NULL" for k in table.key)
    return Query(
        f"SELECT (SELECT count(*) FROM (SELECT {key} FROM {name} GROUP BY {key} "  # noqa: S608 - quoted identifiers
        f"HAVING count(*) > 1) d), (SELECT count(*) FROM {name} WHERE {nulls})"
    )


def check_key(source: OdbcSource, connection: pyodbc.Connection, table: TableInfo) -> None:
    """A key override must be what a primary key would be: unique and never NULL. Otherwise
    the backup would hold rows that restore cannot load under that key (and a delta would
    replace every row of a shared key by one). Primary keys are the database's to enforce."""
    if table.key_from != "override":
        return
    duplicates, nulls = (int(v) for v in source.fetch(connection, key_check(source, table))[0])
    if duplicates or nulls:
        raise KeyNotUniqueError(
            f"the key override ({', '.join(table.key)}) of {table.ref.qualified} is not a key: "
            f"{duplicates:,} value(s) of it occur in more than one row, {nulls:,} row(s) have a "
            "NULL in it. A restore could not rebuild the table under it. Name columns that "
            f"are unique and never NULL in SQL_BACKUP_TABLES['{table.ref.qualified}'].key, or "
            "add a primary key to the table."
        )


def discover(
    source: OdbcSource,
    *,
    include: Iterable[str],
    exclude: Iterable[str],
    overrides: Mapping[str, TableOverride],
    default_watermark: str,
    only: Iterable[str] = (),
) -> tuple[list[TableInfo], list[tuple[TableRef, Exception]]]:
    """Every selected table described, and the tables that cannot be backed up with why (no
    key, …): one such table never stops the others. ``only`` names tables explicitly (each
    must exist). Errors of the environment (the source down) stop discovery."""
    with source.connect() as connection:
        existing = list_tables(source, connection)
        wanted = [TableRef.parse(name) for name in only]
        if wanted:
            known = {r.qualified.lower(): r for r in existing}
            unknown = [w.qualified for w in wanted if w.qualified.lower() not in known]
            if unknown:
                raise UnknownTableError(
                    f"unknown table(s) {', '.join(unknown)} in {source.where}. Tables there: "
                    f"{', '.join(sorted(known)[:20]) or 'none'}"
                    f"{' …' if len(known) > 20 else ''}."  # noqa: PLR2004
                )
            refs = [known[w.qualified.lower()] for w in wanted]
        else:
            refs = [r for r in existing if selected(r, include, exclude)]
        tables: list[TableInfo] = []
        skipped: list[tuple[TableRef, Exception]] = []
        for ref in refs:
            try:
                tables.append(
                    describe(
                        source,
                        connection,
                        ref,
                        override=overrides.get(ref.qualified),
                        default_watermark=default_watermark,
                    )
                )
            except Exception as exc:
                if environment_error(exc):
                    raise
                skipped.append((ref, exc))
        return tables, skipped
