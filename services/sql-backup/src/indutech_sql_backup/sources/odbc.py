"""The ERP over ODBC: control queries through pyodbc, bulk reads through arrow-odbc.

Both are blocking C calls: callers run them in a thread (``asyncio.to_thread``)
so the event loop keeps serving health checks and Kafka heartbeats. Connection
failures become errors that say whether the credentials or the network are at
fault; the password never appears in them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyodbc
from arrow_odbc import Error as ArrowOdbcError
from arrow_odbc import read_arrow_batches_from_odbc

from indutech_common.logging import scrub
from indutech_common.odbc import odbc_connection_string
from indutech_common.settings import OdbcSourceSettings
from indutech_sql_backup.dialects import Dialect, Query
from indutech_sql_backup.errors import SourceAuthError, SourceUnavailableError, SqlBackupError

_AUTH_MARKERS = ("password authentication failed", "login failed", "28p01", "28000")
_NETWORK_MARKERS = (
    "could not connect",
    "connection refused",
    "could not translate host",
    "timeout expired",
    "timed out",
    "08001",
    "08s01",
    "hyt00",
    "server closed the connection",
    "no route to host",
)


def _widen(doubles: frozenset[str]) -> Callable[[pa.Schema], pa.Schema]:
    """psqlODBC describes float8 so that arrow-odbc picks float32: bind float64 instead."""

    def widen(schema: pa.Schema) -> pa.Schema:
        return pa.schema(
            pa.field(f.name, pa.float64(), f.nullable) if f.name in doubles else f for f in schema
        )

    return widen


class OdbcSource:
    """One ERP database: where it is, which dialect, and the options of the bulk path."""

    def __init__(self, settings: OdbcSourceSettings, dialect: Dialect) -> None:
        self.settings = settings
        self.dialect = dialect
        self.dsn = odbc_connection_string(settings) + dialect.connection_options()

    @property
    def where(self) -> str:
        s = self.settings
        return f"{s.dialect} database {s.database!r} at {s.host}:{s.port} as user {s.user!r}"

    def translate(self, exc: Exception) -> Exception:
        text = scrub(str(exc))
        lowered = text.lower()
        if any(marker in lowered for marker in _AUTH_MARKERS):
            return SourceAuthError(
                f"the {self.where} refused the credentials. Check ERP__USER and ERP__PASSWORD "
                "(SQL_BACKUP_ERP__* or INDUTECH_ERP__*)."
            )
        if any(marker in lowered for marker in _NETWORK_MARKERS):
            return SourceUnavailableError(
                f"could not reach the {self.where}: {text[:300]}. Is the server up, and are "
                "ERP__HOST and ERP__PORT right?"
            )
        return SqlBackupError(f"the {self.where} failed: {text[:500]}")

    @contextmanager
    def connect(self) -> Iterator[pyodbc.Connection]:
        try:
            connection = pyodbc.connect(
                self.dsn, autocommit=True, timeout=self.settings.login_timeout_s
            )
        except pyodbc.Error as exc:
            raise self.translate(exc) from None
        try:
            yield connection
        finally:
            connection.close()

    def fetch(self, connection: pyodbc.Connection, query: Query) -> list[tuple[Any, ...]]:
        try:
            cursor = connection.cursor()
            cursor.execute(query.sql, *query.params)
            rows = [tuple(row) for row in cursor.fetchall()]
            cursor.close()
        except pyodbc.Error as exc:
            raise self.translate(exc) from None
        return rows

    def execute(self, statements: Sequence[str]) -> None:
        """Run statements in one transaction: all of them or none."""
        with self.connect() as connection:
            connection.autocommit = False
            cursor = connection.cursor()
            try:
                for statement in statements:
                    cursor.execute(statement)
                connection.commit()
            except pyodbc.Error as exc:
                connection.rollback()
                raise self.translate(exc) from None

    def batches(
        self,
        query: Query,
        *,
        batch_rows: int,
        max_text_bytes: int,
        max_binary_bytes: int,
        max_batch_bytes: int,
        doubles: frozenset[str] = frozenset(),
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Arrow batches of a query. Text buffers are sized ``max_text_bytes`` per value
        (psqlODBC reports unbounded text at ``MaxLongVarcharSize``, so it is set too)."""
        dsn = self.dsn
        if self.settings.dialect == "postgres":
            dsn += f"MaxLongVarcharSize={max(8190, max_text_bytes)};"
        try:
            reader = read_arrow_batches_from_odbc(
                query=query.sql,
                connection_string=dsn,
                batch_size=batch_rows,
                parameters=list(query.params) or None,
                max_text_size=max(1, max_text_bytes),
                max_binary_size=max(1, max_binary_bytes),
                max_bytes_per_batch=max_batch_bytes,
                login_timeout_sec=self.settings.login_timeout_s,
                fetch_concurrently=True,
                map_schema=_widen(doubles) if doubles else None,
            )
        except ArrowOdbcError as exc:
            raise self.translate(exc) from None
        return reader.schema, self._iterate(reader)

    def _iterate(self, reader: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except ArrowOdbcError as exc:
            raise self.translate(exc) from None
