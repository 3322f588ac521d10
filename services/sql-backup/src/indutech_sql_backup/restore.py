"""Rebuild a table as of a day: the newest full run up to that day, then its deltas in order.

The restore starts from the last run of that chain that holds the whole table (the full,
or a later delta that re-read it: ``plan.snapshot``, e.g. after a schema change), and
takes the table's columns, types and key from that run; every delta after it must have
the same (``chain_problems``), or the restore stops and says which day differs.

Everything happens in one transaction of the target database: a failed
restore leaves nothing behind. Parts are checked against their manifest
(SHA-256 of the object, row count and content checksum) before loading; rows
go in with binary COPY straight from Arrow (``indutech_common.warehouse.copy_arrow_batches``,
pipelined; never row by row, never as Python values); each delta is staged, its keys
deleted from the table, and its upserts inserted (``_op`` 'D' rows only delete; a
'T' truncate marker first clears its chunk's key range). A delta that re-read the
whole table (``plan.snapshot``: SQL Server after a TRUNCATE, a schema change) replaces
the table. Rows that break the key (a key override that was not unique when the chunks
ran) stop the restore with an error that names the key, not a database traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import asyncpg
import pyarrow as pa
import pyarrow.compute as pc
import structlog

from indutech_common.logging import scrub
from indutech_common.schemas.sql_backup import Manifest, PartRecord, Plan
from indutech_common.warehouse import ArrowCopyError, connect_warehouse, copy_arrow_batches
from indutech_sql_backup.checksum import table_checksum
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.dialects import PostgresDialect, TableRef, dialect_for
from indutech_sql_backup.dialects.types import stored_type
from indutech_sql_backup.errors import (
    BackupNotFoundError,
    RestoreDecodeError,
    SqlBackupError,
    UnsupportedTypeError,
    VerificationError,
)
from indutech_sql_backup.progress import Progress
from indutech_sql_backup.sinks import BackupStore, chain, chain_problems, read_part, restore_base

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

_log = structlog.get_logger(__name__)
_q = PostgresDialect().quote


@dataclass(frozen=True)
class RestoreReport:
    table: str
    target: str
    day: date | None
    runs: tuple[str, ...]
    rows: int
    seconds: float
    bytes_read: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def pg_type(arrow_type: pa.DataType) -> str:
    """A PostgreSQL type that holds an Arrow type exactly (parts of an unknown dialect)."""
    mapping = {
        pa.int8(): "smallint",
        pa.int16(): "smallint",
        pa.int32(): "integer",
        pa.int64(): "bigint",
        pa.uint8(): "smallint",
        pa.float32(): "real",
        pa.float64(): "double precision",
        pa.bool_(): "boolean",
        pa.date32(): "date",
        pa.string(): "text",
        pa.large_string(): "text",
        pa.binary(): "bytea",
        pa.large_binary(): "bytea",
    }
    if arrow_type in mapping:
        return mapping[arrow_type]
    if pa.types.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if pa.types.is_time(arrow_type):
        return "time"
    raise SqlBackupError(f"no PostgreSQL type for Arrow type {arrow_type}")


# Types whose asyncpg binary codec takes a Python str as it is: text stored for them loads
# directly; text stored for any other type is cast on the server (``via_text``).
_TEXT_TARGETS = frozenset(
    {"text", "character varying", "varchar", "character", "char", "bpchar", "uuid", "name"}
)
_TEXT_TYPES = (pa.types.is_string, pa.types.is_large_string)


@dataclass(frozen=True)
class ColumnLoad:
    """How one column of a part goes into the restored table."""

    name: str
    target_type: str
    via_text: bool
    """Loaded as text and cast to ``target_type`` by the target server (its own parser)."""

    @property
    def wire_type(self) -> str:
        return "text" if self.via_text else self.target_type

    def value(self, alias: str = "") -> str:
        """The column of a staging table as the target's type."""
        column = f"{alias}{_q(self.name)}"
        return f"CAST({column} AS {self.target_type})" if self.via_text else column


def _base_type(type_name: str) -> str:
    return type_name.split("(", maxsplit=1)[0].strip().lower()


def column_loads(plan: Plan, schema: pa.Schema) -> list[ColumnLoad]:
    """How each column of a part is restored: the target type (the source's own for a
    PostgreSQL source, the type matrix's for another), and whether its stored type loads
    directly or as text cast on the server. A column missing from the part, or stored in a
    type the matrix does not give it (a part written by an older sql-backup that could
    narrow values), raises ``RestoreDecodeError`` naming it."""
    dialect = dialect_for(plan.dialect)
    loads = []
    for column in plan.columns:
        if column.name not in schema.names:
            raise RestoreDecodeError(f"column {column.name} is missing from the part")
        stored = schema.field(column.name).type
        try:
            row = dialect.type_of(column.source_type)
        except UnsupportedTypeError as exc:
            raise RestoreDecodeError(f"column {column.name}: {exc}") from None
        target = column.source_type if plan.dialect == "postgres" else row.restore_type
        if not stored_type(row.arrow, stored):
            raise RestoreDecodeError(
                f"column {column.name} ({column.source_type}) is stored as {stored}, but the type "
                f"matrix stores it as {row.arrow}: this part was written by an sql-backup that "
                "could change values of this type. Take a new full backup of the table."
            )
        text = any(is_text(stored) for is_text in _TEXT_TYPES)
        via_text = text and _base_type(target) not in _TEXT_TARGETS
        loads.append(ColumnLoad(column.name, target, via_text))
    return loads


def _column_as_loaded(name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column as binary COPY takes it, or ``RestoreDecodeError``. Everything else
    (dates 0001-01-01 to 9999-12-31, µs timestamps, exact decimals) is encoded from Arrow
    as PostgreSQL's own integers and digits by the loader, typed by the target columns."""
    arrow_type = column.type
    if (pa.types.is_timestamp(arrow_type) or pa.types.is_time(arrow_type)) and (
        arrow_type.unit == "ns"
    ):
        # SQL Server's 100 ns types: PostgreSQL holds µs. A safe cast refuses any value
        # whose last digit would be lost instead of rounding it.
        unit = (
            pa.timestamp("us", tz=arrow_type.tz)
            if pa.types.is_timestamp(arrow_type)
            else pa.time64("us")
        )
        try:
            return column.cast(unit, safe=True)
        except pa.ArrowInvalid:
            raise RestoreDecodeError(
                f"column {name} holds values with 100 ns digits, which PostgreSQL (µs) cannot "
                "store: restore refuses to round them."
            ) from None
    return column


def decode_part(plan: Plan, data: pa.Table) -> tuple[list[ColumnLoad], pa.Table]:
    """A part as restore loads it: how each column goes in, and the columns (a delta's
    ``_op`` first) in the form the binary COPY takes. ``verify`` runs this on every part,
    so a backup that verifies is one restore can load."""
    loads = column_loads(plan, data.schema)
    names = [load.name for load in loads]
    if plan.reads_changes:
        names = ["_op", *names]
        if "_op" not in data.schema.names:
            raise RestoreDecodeError("the delta part has no _op column")
    columns = [_column_as_loaded(n, data.column(n)) for n in names]
    return loads, pa.Table.from_arrays(columns, names=names)


async def check_casts(
    connection: asyncpg.Connection, loads: list[ColumnLoad], data: pa.Table
) -> None:
    """Run restore's server casts of the text-kept columns of ``data`` (``decode_part``'s)
    on ``connection`` (the restore target) without writing anything: a value the target
    cannot parse back, or a type it lacks, raises ``RestoreDecodeError`` naming the column."""
    for load in loads:
        if not load.via_text:
            continue
        values = sorted(pc.unique(data.column(load.name).drop_null()).to_pylist())
        if not values:
            continue
        try:
            # count(expression) evaluates the cast for every value (count(*) would not).
            await connection.fetchval(
                f"SELECT count({load.value()}) FROM unnest(CAST($1 AS text[])) "  # noqa: S608
                f"AS u({_q(load.name)})",
                values,
            )
        except asyncpg.PostgresError as exc:
            raise RestoreDecodeError(
                f"column {load.name}: the target cannot cast its text back to "
                f"{load.target_type}: {exc}"
            ) from None


def _run_names(runs: list[Manifest]) -> tuple[str, ...]:
    return tuple(f"{m.plan.day}/{m.plan.kind}" for m in runs)


class _Ahead:
    """The parts of a restore in the order it loads them, each fetched and verified while
    the one before it is copied: one part ahead, so memory holds at most two."""

    def __init__(
        self, fetch: Callable[[PartRecord], Awaitable[pa.Table]], parts: list[PartRecord]
    ) -> None:
        self._fetch = fetch
        self._parts = parts
        self._next = 0
        self._task: asyncio.Future[pa.Table] | None = None

    def _start(self) -> None:
        self._task = (
            asyncio.ensure_future(self._fetch(self._parts[self._next]))
            if self._next < len(self._parts)
            else None
        )

    async def take(self) -> pa.Table:
        if self._task is None:
            self._start()
        if self._task is None:
            raise SqlBackupError("restore asked for more parts than its manifests list")
        data = await self._task
        self._next += 1
        self._start()
        return data

    async def close(self) -> None:
        """Stop a fetch still running (the restore failed or ended early)."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


class Restorer:
    def __init__(
        self, settings: SqlBackupSettings, s3: S3Client, *, progress: Progress | None = None
    ) -> None:
        if settings.target is None:
            raise SqlBackupError(
                "restore needs a target database: set SQL_BACKUP_TARGET__HOST, __DATABASE, "
                "__USER, __PASSWORD and __CA_FILE (a PostgreSQL)."
            )
        self.settings = settings
        self.target = settings.target
        self.store = BackupStore(
            s3, bucket=settings.s3.backup_bucket, prefix=settings.backup_prefix
        )
        self.progress = progress
        self.bytes_read = 0

    async def runs(self, table: TableRef, day: date | None) -> list[Manifest]:
        """The runs a restore as of ``day`` applies: the last full or re-snapshot of the
        chain and the deltas after it, all with the same columns and key."""
        runs = chain(await self.store.manifests(self.settings.erp.database, table), until=day)
        if not runs:
            when = f" on or before {day}" if day else ""
            raise BackupNotFoundError(
                f"no complete backup of {self.settings.erp.database}.{table.qualified}{when} in "
                f"s3://{self.store.bucket}/{self.store.prefix}sql-server/ (a run counts once its "
                "_manifest.json exists)."
            )
        runs = runs[restore_base(runs) :]
        problems = chain_problems(runs)
        if problems:
            raise SqlBackupError(
                f"cannot restore {table.qualified}{f' as of {day}' if day else ''}: "
                + "; ".join(problems)
            )
        return runs

    async def _part(self, part: PartRecord) -> pa.Table:
        data = await self.store.get_bytes(part.key)
        if data is None:
            raise VerificationError(f"part {self.store.url(part.key)} is missing")
        # Hashing, decoding and checksumming are CPU work: in a thread, so the COPY of
        # the previous part keeps the event loop (``_Ahead`` overlaps the two).
        table = await asyncio.to_thread(self._verified, part, data)
        self.bytes_read += len(data)
        return table

    def _verified(self, part: PartRecord, data: bytes) -> pa.Table:
        if hashlib.sha256(data).hexdigest() != part.sha256:
            raise VerificationError(f"part {self.store.url(part.key)} differs from its manifest")
        table = read_part(data)
        if table.num_rows != part.rows or table_checksum(table) != part.checksum:
            raise VerificationError(
                f"part {self.store.url(part.key)}: rows or checksum differ from the manifest"
            )
        return table

    async def restore(
        self, table: TableRef, *, day: date | None, target: TableRef, replace: bool = False
    ) -> RestoreReport:
        started = time.perf_counter()
        runs = await self.runs(table, day)
        full = runs[0]
        same_dialect = full.plan.dialect == "postgres"
        parts = sum(len(m.parts) for m in runs)
        if self.progress:
            self.progress.start(f"restore {table.qualified} → {target.qualified}", total=parts)
        connection: asyncpg.Connection = await connect_warehouse(self.target)
        rows = 0
        try:
            async with connection.transaction(), self._key_errors(table, runs):
                rows = await self._load(
                    connection, runs, target, replace=replace, same=same_dialect
                )
        finally:
            await connection.close()
        if self.progress:
            self.progress.finish()
        report = RestoreReport(
            table=table.qualified,
            target=target.qualified,
            day=day,
            runs=_run_names(runs),
            rows=rows,
            seconds=round(time.perf_counter() - started, 3),
            bytes_read=self.bytes_read,
        )
        _log.info("restored", **{k: str(v) for k, v in report.__dict__.items()})
        return report

    async def _load(
        self,
        connection: asyncpg.Connection,
        runs: list[Manifest],
        target: TableRef,
        *,
        replace: bool,
        same: bool,
    ) -> int:
        del same  # the target types come from the type matrix (column_loads)
        name = f"{_q(target.schema)}.{_q(target.name)}"
        exists = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
        if exists and not replace:
            raise SqlBackupError(
                f"the target table {target.qualified} exists: choose another --target or pass "
                "--replace to drop it first."
            )
        ahead = _Ahead(self._part, [part for run in runs for part in run.parts])
        try:
            return await self._load_parts(connection, runs, target, ahead, name=name)
        finally:
            await ahead.close()

    async def _load_parts(
        self,
        connection: asyncpg.Connection,
        runs: list[Manifest],
        target: TableRef,
        ahead: _Ahead,
        *,
        name: str,
    ) -> int:
        full = runs[0]
        first_part = await ahead.take() if full.parts else None
        if first_part is not None:
            loads = self._decode_check(full, full.parts[0], first_part)[0]
        else:  # pragma: no cover - every plan has at least one chunk
            dialect = dialect_for(full.plan.dialect)
            loads = [
                ColumnLoad(c.name, dialect.type_of(c.source_type).restore_type, via_text=False)
                for c in full.plan.columns
            ]
        types = {load.name: load.target_type for load in loads}
        columns_sql = ", ".join(
            f"{_q(c.name)} {types[c.name]}{'' if c.nullable else ' NOT NULL'}"
            for c in full.plan.columns
        )
        await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(target.schema)}")
        await connection.execute(f"DROP TABLE IF EXISTS {name}")
        try:
            await connection.execute(f"CREATE TABLE {name} ({columns_sql})")
        except asyncpg.UndefinedObjectError as exc:
            raise SqlBackupError(
                f"the target database lacks a type of {target.qualified}: {exc}. Create it there "
                "first (e.g. the enum or domain, as in the source); the backup holds its values "
                "as text."
            ) from None
        loaded = 0
        for index, part in enumerate(full.parts):
            data = first_part if index == 0 and first_part is not None else await ahead.take()
            loaded += await self._insert(connection, full, part, data, target)
            self._advance(part)
        key = ", ".join(_q(k) for k in full.plan.key)
        await connection.execute(f"ALTER TABLE {name} ADD PRIMARY KEY ({key})")
        for delta in runs[1:]:
            if delta.plan.snapshot:
                # The source lost the changes (SQL Server after a TRUNCATE): the table as
                # re-read replaces what the earlier runs built.
                await connection.execute(f"TRUNCATE {name}")
            for part in delta.parts:
                data = await ahead.take()
                if delta.plan.snapshot:
                    await self._insert(connection, delta, part, data, target)
                else:
                    await self._apply_delta(
                        connection, data, manifest=delta, part=part, name=name, target=target
                    )
                self._advance(part)
        if len(runs) == 1:
            # The table was created empty in this transaction: the server's counts of its
            # COPYs are its rows (a count(*) would read the whole table again).
            return loaded
        count: int = await connection.fetchval(f"SELECT count(*) FROM {name}")  # noqa: S608
        return count

    def _decode_check(
        self, manifest: Manifest, part: PartRecord, data: pa.Table
    ) -> tuple[list[ColumnLoad], pa.Table]:
        try:
            return decode_part(manifest.plan, data)
        except RestoreDecodeError as exc:
            raise RestoreDecodeError(f"part {self.store.url(part.key)}: {exc}") from None

    async def _copy(
        self,
        connection: asyncpg.Connection,
        part: PartRecord,
        data: pa.Table,
        *,
        table: str,
        schema: str | None = None,
    ) -> int:
        """The part's rows by pipelined binary COPY (Arrow straight to the wire), typed by
        the table's columns; a value the target type would not hold exactly names the part."""
        try:
            return await copy_arrow_batches(
                connection, table, data.to_batches(), schema_name=schema
            )
        except ArrowCopyError as exc:
            raise RestoreDecodeError(f"part {self.store.url(part.key)}: {exc}") from None

    async def _stage(
        self,
        connection: asyncpg.Connection,
        loads: list[ColumnLoad],
        part: PartRecord,
        data: pa.Table,
        *,
        staging: str,
        with_op: bool,
    ) -> None:
        """A temporary table with each column as it travels (text for ``via_text``)."""
        columns_sql = ", ".join(f"{_q(c.name)} {c.wire_type}" for c in loads)
        op = "_op text NOT NULL, " if with_op else ""
        await connection.execute(
            f"CREATE TEMP TABLE {_q(staging)} ({op}{columns_sql}) ON COMMIT DROP"
        )
        await self._copy(connection, part, data, table=staging)

    async def _insert(
        self,
        connection: asyncpg.Connection,
        manifest: Manifest,
        part: PartRecord,
        data: pa.Table,
        target: TableRef,
    ) -> int:
        """Rows of a full (or re-snapshot) part: binary COPY into the table, or through a
        staging table when a column is restored from its text by a server cast. Returns
        the rows the server inserted."""
        loads, rows = self._decode_check(manifest, part, data)
        names = [c.name for c in loads]
        if not any(c.via_text for c in loads):
            return await self._copy(connection, part, rows, table=target.name, schema=target.schema)
        staging = f"indutech_load_{target.name}"[:60]
        await self._stage(connection, loads, part, rows, staging=staging, with_op=False)
        column_list = ", ".join(_q(n) for n in names)
        values = ", ".join(c.value() for c in loads)
        status = await connection.execute(
            f"INSERT INTO {_q(target.schema)}.{_q(target.name)} ({column_list}) "  # noqa: S608
            f"SELECT {values} FROM {_q(staging)}"
        )
        await connection.execute(f"DROP TABLE {_q(staging)}")
        return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 n"

    async def _apply_delta(
        self,
        connection: asyncpg.Connection,
        data: pa.Table,
        *,
        manifest: Manifest,
        part: PartRecord,
        name: str,
        target: TableRef,
    ) -> None:
        """One part of a delta, all its keys in the chunk's key range: a truncate marker
        ('T') first clears that range, then every key the part names (upserted or deleted)
        is deleted, then the upserts are inserted. The upserts are the rows as they were
        when the chunk was read, after every delete and truncate it saw, so this order
        gives that state whatever order the changes happened in."""
        plan = manifest.plan
        loads, rows = self._decode_check(manifest, part, data)
        by_name = {c.name: c for c in loads}
        staging = f"indutech_restore_{target.name}"[:60]
        await self._stage(connection, loads, part, rows, staging=staging, with_op=True)
        if await connection.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {_q(staging)} WHERE _op = 'T')"  # noqa: S608
        ):
            spec = plan.chunks[part.chunk]
            column = _q(plan.chunk_column)
            as_key = f"CAST(CAST(${{}} AS text) AS {by_name[plan.chunk_column].target_type})"
            bounds: list[str] = []
            params: list[str] = []
            if spec.lo is not None:
                params.append(spec.lo)
                bounds.append(f"{column} > {as_key.format(len(params))}")
            if spec.hi is not None:
                params.append(spec.hi)
                bounds.append(f"{column} <= {as_key.format(len(params))}")
            where = " AND ".join(bounds) or "true"
            await connection.execute(f"DELETE FROM {name} WHERE {where}", *params)  # noqa: S608
        match = " AND ".join(f"t.{_q(k)} = {by_name[k].value('s.')}" for k in plan.key)
        await connection.execute(f"DELETE FROM {name} AS t USING {_q(staging)} AS s WHERE {match}")  # noqa: S608
        column_list = ", ".join(_q(c.name) for c in loads)
        values = ", ".join(c.value() for c in loads)
        await connection.execute(
            f"INSERT INTO {name} ({column_list}) SELECT {values} FROM {_q(staging)} "  # noqa: S608
            "WHERE _op NOT IN ('D', 'T')"
        )
        await connection.execute(f"DROP TABLE {_q(staging)}")

    @staticmethod
    @asynccontextmanager
    async def _key_errors(table: TableRef, runs: list[Manifest]) -> AsyncIterator[None]:
        """Rows that break the key, said as what it means (no database traceback): a key
        override that was not unique when the chunks ran (it is checked when planned)."""
        try:
            yield
        except (asyncpg.UniqueViolationError, asyncpg.NotNullViolationError) as exc:
            plan = runs[-1].plan
            if isinstance(exc, asyncpg.NotNullViolationError) and exc.column_name not in plan.key:
                raise  # not the key's: the columns' own NOT NULL, said by the database
            detail = getattr(exc, "detail", None) or str(exc)
            raise SqlBackupError(
                f"the backup of {table.qualified} ({' + '.join(_run_names(runs))}) holds rows "
                f"that break its key ({', '.join(plan.key)}, from {plan.key_from}): "
                f"{scrub(detail)[:300]}. The key is not unique (or has NULLs) there, so no table "
                "can be rebuilt under it. Fix the key (SQL_BACKUP_TABLES or a primary key on the "
                "source) and take a new full backup; sql-backup checks a key override when it "
                "plans."
            ) from None

    def _advance(self, part: PartRecord) -> None:
        if self.progress:
            self.progress.advance(rows=part.rows, nbytes=part.bytes)
