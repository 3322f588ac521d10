"""Source dialects: ``mssql`` (production) and ``postgres`` (the local stand-in)."""

from __future__ import annotations

from indutech_sql_backup.dialects.base import Column, Dialect, Query, TableInfo, TableRef
from indutech_sql_backup.dialects.mssql import MssqlDialect
from indutech_sql_backup.dialects.postgres import DELETES_TABLE, PostgresDialect

__all__ = [
    "DELETES_TABLE",
    "Column",
    "Dialect",
    "MssqlDialect",
    "PostgresDialect",
    "Query",
    "TableInfo",
    "TableRef",
    "dialect_for",
]


def dialect_for(name: str) -> Dialect:
    if name == "mssql":
        return MssqlDialect()
    if name == "postgres":
        return PostgresDialect()
    raise ValueError(f"unknown source dialect {name!r}: use mssql or postgres")
