"""The ERP over ODBC: control queries through pyodbc, bulk reads through arrow-odbc.

Both are blocking C calls: callers run them in a thread (``asyncio.to_thread``)
so the event loop keeps serving health checks and Kafka heartbeats. Connection
failures become errors that say whether the credentials or the network are at
fault; the password never appears in them.

Bulk reads reuse their connections: a TLS handshake, the login and the driver's
session set-up cost tens of milliseconds per connection, as much as reading a
few thousand rows. A connection goes back to a small pool only after its result
set was read to the end (a failed or abandoned read drops it), and a pooled one
that fails its next query is replaced once by a fresh connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyodbc
from arrow_odbc import Connection as ArrowOdbcConnection
from arrow_odbc import Error as ArrowOdbcError
from arrow_odbc import connect as arrow_odbc_connect

from indutech_common.logging import scrub
from indutech_common.odbc import is_freetds, odbc_connection_string, use_freetds_conf
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
POOL_IDLE_MAX_S = 300.0


def _widen(doubles: frozenset[str]) -> Callable[[pa.Schema], pa.Schema]:
    """psqlODBC describes float8 so that arrow-odbc picks float32: bind float64 instead."""

    def widen(schema: pa.Schema) -> pa.Schema:
        return pa.schema(
            pa.field(f.name, pa.float64(), f.nullable) if f.name in doubles else f for f in schema
        )

    return widen


class OdbcSource:
    """One ERP database: where it is, which dialect, and the options of the bulk path."""

    def __init__(
        self, settings: OdbcSourceSettings, dialect: Dialect, *, pool_size: int = 2
    ) -> None:
        self.settings = settings
        self.dialect = dialect
        if settings.dialect == "mssql" and is_freetds(settings.odbc_driver):
            # FreeTDS takes its CA file from freetds.conf only (indutech_common.odbc).
            use_freetds_conf(settings)
        self.dsn = odbc_connection_string(settings) + dialect.connection_options()
        self.pool_size = pool_size
        self._idle: list[tuple[str, ArrowOdbcConnection, float]] = []
        self._pool_lock = threading.Lock()
        self.connections_opened = 0

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
        (psqlODBC reports unbounded text at ``MaxLongVarcharSize``, so it is set too).

        The ODBC fetch of the next batch runs in arrow-odbc's own thread while the caller
        handles the current one (``fetch_concurrently``)."""
        dsn = self.dsn
        if self.settings.dialect == "postgres":
            dsn += f"MaxLongVarcharSize={max(8190, max_text_bytes)};"
        options: dict[str, Any] = {
            "query": query.sql,
            "batch_size": batch_rows,
            "parameters": list(query.params) or None,
            "max_text_size": max(1, max_text_bytes),
            "max_binary_size": max(1, max_binary_bytes),
            "max_bytes_per_batch": max_batch_bytes,
            "fetch_concurrently": True,
            "map_schema": _widen(doubles) if doubles else None,
        }
        connection, reused = self._acquire(dsn)
        try:
            reader = connection.read_arrow_batches(**options)
        except ArrowOdbcError as exc:
            if not reused:
                raise self.translate(exc) from None
            # A pooled connection may have gone stale (server restart, idle timeout).
            connection = self._open(dsn)
            try:
                reader = connection.read_arrow_batches(**options)
            except ArrowOdbcError as retry_exc:
                raise self.translate(retry_exc) from None
        return reader.schema, self._iterate(reader, dsn, connection)

    def _open(self, dsn: str) -> ArrowOdbcConnection:
        try:
            connection = arrow_odbc_connect(
                dsn, login_timeout_sec=self.settings.login_timeout_s, autocommit=True
            )
        except ArrowOdbcError as exc:
            raise self.translate(exc) from None
        self.connections_opened += 1
        return connection

    def _acquire(self, dsn: str) -> tuple[ArrowOdbcConnection, bool]:
        """A pooled connection for ``dsn`` (True) or a new one (False)."""
        now = time.monotonic()
        found: ArrowOdbcConnection | None = None
        with self._pool_lock:
            kept = []
            for entry in self._idle:
                if found is None and entry[0] == dsn and now - entry[2] < POOL_IDLE_MAX_S:
                    found = entry[1]
                elif now - entry[2] < POOL_IDLE_MAX_S:
                    kept.append(entry)
            self._idle = kept  # expired ones are freed when dropped
        if found is not None:
            return found, True
        return self._open(dsn), False

    def _release(self, dsn: str, connection: ArrowOdbcConnection) -> None:
        with self._pool_lock:
            if len(self._idle) < self.pool_size:
                self._idle.append((dsn, connection, time.monotonic()))

    def close(self) -> None:
        """Drop the pooled connections (arrow-odbc frees them)."""
        with self._pool_lock:
            self._idle.clear()

    def _iterate(
        self, reader: Iterable[pa.RecordBatch], dsn: str, connection: ArrowOdbcConnection
    ) -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except ArrowOdbcError as exc:
            raise self.translate(exc) from None
        # Read to the end: the cursor is closed and the connection can serve the next read.
        # A read that failed or was abandoned never gets here, so its connection is dropped.
        del reader
        self._release(dsn, connection)
