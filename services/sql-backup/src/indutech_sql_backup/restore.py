"""Rebuild a table as of a day: the newest full run up to that day, then its deltas in order.

The restore starts from the last run of that chain that holds the whole table (the full,
or a later delta that re-read it: ``plan.snapshot``, e.g. after a schema change), and
takes the table's columns, types and key from that run; every delta after it must have
the same (``chain_problems``), or the restore stops and says which day differs.

Everything happens in one transaction of the target database: a failed
restore leaves nothing behind. Parts are checked against their manifest
(SHA-256 of the object, row count and content checksum) before loading; rows
go in with binary COPY (never row by row); each delta is staged, its keys
deleted from the table, and its upserts inserted (``_op`` 'D' rows only delete; a
'T' truncate marker first clears its chunk's key range). A delta that re-read the
whole table (``plan.snapshot``: SQL Server after a TRUNCATE, a schema change) replaces
the table. Rows that break the key (a key override that was not unique when the chunks
ran) stop the restore with an error that names the key, not a database traceback.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import asyncpg
import pyarrow as pa
import structlog

from indutech_common.logging import scrub
from indutech_common.warehouse import connect_warehouse
from indutech_sql_backup.checksum import table_checksum
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.dialects import PostgresDialect, TableRef
from indutech_sql_backup.errors import BackupNotFoundError, SqlBackupError, VerificationError
from indutech_sql_backup.progress import Progress
from indutech_sql_backup.sinks import (
    BackupStore,
    Manifest,
    PartRecord,
    Plan,
    chain,
    chain_problems,
    read_part,
    restore_base,
)

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
    """A PostgreSQL type that holds an Arrow type exactly (for sources of another dialect)."""
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
    raise SqlBackupError(f"no PostgreSQL type for Arrow type {arrow_type}")


def _run_names(runs: list[Manifest]) -> tuple[str, ...]:
    return tuple(f"{m.plan.day}/{m.plan.kind}" for m in runs)


def _records(table: pa.Table) -> list[tuple[Any, ...]]:
    columns = [column.to_pylist() for column in table.columns]
    return list(zip(*columns, strict=True))


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
        if hashlib.sha256(data).hexdigest() != part.sha256:
            raise VerificationError(f"part {self.store.url(part.key)} differs from its manifest")
        table = read_part(data)
        if table.num_rows != part.rows or table_checksum(table) != part.checksum:
            raise VerificationError(
                f"part {self.store.url(part.key)}: rows or checksum differ from the manifest"
            )
        self.bytes_read += len(data)
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
        full = runs[0]
        name = f"{_q(target.schema)}.{_q(target.name)}"
        exists = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
        if exists and not replace:
            raise SqlBackupError(
                f"the target table {target.qualified} exists: choose another --target or pass "
                "--replace to drop it first."
            )
        first_part = await self._part(full.parts[0]) if full.parts else None
        types: dict[str, str] = {}
        for column in full.plan.columns:
            if same or first_part is None:
                types[column.name] = column.source_type
            else:
                types[column.name] = pg_type(first_part.schema.field(column.name).type)
        columns_sql = ", ".join(
            f"{_q(c.name)} {types[c.name]}{'' if c.nullable else ' NOT NULL'}"
            for c in full.plan.columns
        )
        await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(target.schema)}")
        await connection.execute(f"DROP TABLE IF EXISTS {name}")
        await connection.execute(f"CREATE TABLE {name} ({columns_sql})")
        names = [c.name for c in full.plan.columns]
        for index, part in enumerate(full.parts):
            data = first_part if index == 0 and first_part is not None else await self._part(part)
            await connection.copy_records_to_table(
                target.name, schema_name=target.schema, columns=names, records=_records(data)
            )
            self._advance(part)
        key = ", ".join(_q(k) for k in full.plan.key)
        await connection.execute(f"ALTER TABLE {name} ADD PRIMARY KEY ({key})")
        for delta in runs[1:]:
            if delta.plan.snapshot:
                # The source lost the changes (SQL Server after a TRUNCATE): the table as
                # re-read replaces what the earlier runs built.
                await connection.execute(f"TRUNCATE {name}")
            for part in delta.parts:
                data = await self._part(part)
                if delta.plan.snapshot:
                    await connection.copy_records_to_table(
                        target.name,
                        schema_name=target.schema,
                        columns=names,
                        records=_records(data.select(names)),
                    )
                else:
                    await self._apply_delta(
                        connection,
                        data,
                        plan=delta.plan,
                        chunk=part.chunk,
                        name=name,
                        target=target,
                        names=names,
                        types=types,
                    )
                self._advance(part)
        count: int = await connection.fetchval(f"SELECT count(*) FROM {name}")  # noqa: S608
        return count

    async def _apply_delta(
        self,
        connection: asyncpg.Connection,
        data: pa.Table,
        *,
        plan: Plan,
        chunk: int,
        name: str,
        target: TableRef,
        names: list[str],
        types: dict[str, str],
    ) -> None:
        """One part of a delta, all its keys in the chunk's key range: a truncate marker
        ('T') first clears that range, then every key the part names (upserted or deleted)
        is deleted, then the upserts are inserted. The upserts are the rows as they were
        when the chunk was read, after every delete and truncate it saw, so this order
        gives that state whatever order the changes happened in."""
        staging = f"indutech_restore_{target.name}"[:60]
        columns_sql = ", ".join(f"{_q(c)} {types[c]}" for c in names)
        await connection.execute(
            f"CREATE TEMP TABLE {_q(staging)} (_op text NOT NULL, {columns_sql}) ON COMMIT DROP"
        )
        await connection.copy_records_to_table(
            staging, columns=["_op", *names], records=_records(data.select(["_op", *names]))
        )
        if await connection.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {_q(staging)} WHERE _op = 'T')"  # noqa: S608
        ):
            spec = plan.chunks[chunk]
            column = _q(plan.chunk_column)
            as_key = f"CAST(CAST(${{}} AS text) AS {types[plan.chunk_column]})"
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
        match = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in plan.key)
        await connection.execute(f"DELETE FROM {name} AS t USING {_q(staging)} AS s WHERE {match}")  # noqa: S608
        column_list = ", ".join(_q(c) for c in names)
        await connection.execute(
            f"INSERT INTO {name} ({column_list}) SELECT {column_list} FROM {_q(staging)} "  # noqa: S608
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
