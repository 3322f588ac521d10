"""The warehouse sink: one night of one table applied in one transaction (see ``sinks.sql``).

The transaction locks the table's head, checks that it is still the head the night was
planned from (else ``FencedError``: another loader got there first), stages the night's
parts (each checked against its manifest by ``read_part`` right before it is handed to the
``Stager``, the next one read while the previous is sent: ``sinks.staging``), applies them,
locks the models that read the table (in one order: another loader's night refreshing
them waits for this commit) and refreshes them, appends the ledger and moves the head. Any error
rolls all of it back: the warehouse keeps the previous night, whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.compute as pc
import structlog

from indutech_common.errors import ConfigError
from indutech_common.schemas.sql_backup import CHANGE_OP_COLUMN, Manifest, PartRecord
from indutech_common.settings import WarehouseSettings
from indutech_common.warehouse import create_warehouse_pool
from indutech_sql_to_redshift.dialect import Dialect
from indutech_sql_to_redshift.errors import (
    FencedError,
    LoadError,
    ModelError,
    ReconciliationError,
    SchemaDriftError,
)
from indutech_sql_to_redshift.models import (
    MODELS,
    create_statements,
    lock_statement,
    models_for,
)
from indutech_sql_to_redshift.nights import Head, Night
from indutech_sql_to_redshift.reconcile import Totals, arrow_totals, difference
from indutech_sql_to_redshift.sinks.sql import RawTable, Statements
from indutech_sql_to_redshift.sinks.staging import ArrowCopyStager, Stager, Target

PartReader = Callable[[Manifest, PartRecord], Coroutine[Any, Any, pa.Table]]
RefreshHook = Callable[[str], Awaitable[None]]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Applied:
    """One night applied: what the ledger recorded."""

    table: str
    night: Night
    backup_rows: int
    table_rows: int
    seconds: float
    models: tuple[str, ...]
    totals: Totals | None = None


def _head(row: asyncpg.Record | None) -> Head | None:
    if row is None:
        return None
    return Head(
        day=row["day"], kind=row["kind"], position_to=row["position_to"], manifest=row["manifest"]
    )


class WarehouseSink:
    """A ``Resource``: the raw tables, the ledger and the models in one warehouse."""

    name = "warehouse"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        raw_schema: str,
        model_schema: str,
        dialect: Dialect,
        stager: Stager | None = None,
    ) -> None:
        self._pool = pool
        self.statements = Statements(raw_schema, dialect)
        self.model_schema = model_schema
        self.dialect: Dialect = dialect
        self.stager: Stager = stager or ArrowCopyStager()
        self.before_refresh: RefreshHook | None = None
        """Awaited with the table inside a night's transaction, right before its models are
        locked and refreshed: a seam for tests that make two loaders meet there."""

    @classmethod
    async def open(
        cls,
        settings: WarehouseSettings,
        *,
        raw_schema: str,
        model_schema: str,
        stager: Stager | None = None,
    ) -> WarehouseSink:
        """``stager``: how parts reach a table; PostgreSQL's binary COPY by default,
        Redshift needs one (``S3ManifestStager``: it has no COPY FROM STDIN)."""
        if settings.dialect == "redshift" and stager is None:
            raise ConfigError(
                "the Redshift warehouse loads the backup's parts with COPY … MANIFEST: an "
                "S3ManifestStager is needed (the worker and the commands make one from "
                "SQL_TO_REDSHIFT_REDSHIFT_IAM_ROLE and STAGING_PREFIX)"
            )
        pool = await create_warehouse_pool(settings, min_size=1, max_size=2)
        return cls(
            pool,
            raw_schema=raw_schema,
            model_schema=model_schema,
            dialect=settings.dialect,
            stager=stager,
        )

    async def ping(self) -> None:
        async with self._pool.acquire() as connection:
            await connection.fetchval("SELECT 1")

    async def close(self) -> None:
        await self._pool.close()

    async def migrate(self) -> None:
        """The schemas, ledger and model tables (idempotent; one migrator at a time)."""
        async with self._pool.acquire() as connection, connection.transaction():
            if self.dialect == "postgres":
                # Redshift has no advisory locks; its CREATE … IF NOT EXISTS of two
                # migrators at once fails one of them (serializable), which a rerun fixes.
                await connection.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))",
                    f"sql-to-redshift:{self.model_schema}",
                )
            for statement in self.statements.create_ledger():
                await connection.execute(statement)
            for statement in create_statements(self.model_schema, self.dialect):
                await connection.execute(statement)

    async def heads(self) -> dict[str, Head]:
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(self.statements.select_heads())
        return {r["source_table"]: h for r in rows if (h := _head(r)) is not None}

    async def ledger(self) -> list[asyncpg.Record]:
        async with self._pool.acquire() as connection:
            return list(await connection.fetch(self.statements.select_ledger()))

    async def count(self, table: str) -> int:
        async with self._pool.acquire() as connection:
            value: int = await connection.fetchval(self.statements.count(table))
            return value

    async def model_counts(self) -> dict[str, int]:
        async with self._pool.acquire() as connection:
            return {
                m.name: await connection.fetchval(
                    f"SELECT COUNT(*) FROM {self.model_schema}.{m.name}"  # noqa: S608 - identifiers only
                )
                for m in MODELS
            }

    async def forget(self, tables: Sequence[str]) -> None:
        """Rebuild's start, in one transaction: the tables, their ledger and every model."""
        st = self.statements
        async with self._pool.acquire() as connection, connection.transaction():
            for table in tables:
                await connection.execute(st.lock(), *st.lock_args(table))
                await connection.execute(st.drop_table(table))
                for statement in st.forget():
                    await connection.execute(statement, table)
            await connection.execute(
                lock_statement([m.name for m in MODELS], self.model_schema, self.dialect)
            )
            for model in MODELS:
                await connection.execute(model.empty(self.model_schema, self.dialect))

    async def apply(
        self, table: str, night: Night, *, expected: Head | None, read_part: PartReader
    ) -> Applied:
        """Apply ``night`` of ``table`` on top of ``expected`` (the head it was planned
        from), all or nothing."""
        try:
            return await self._apply(table, night, expected=expected, read_part=read_part)
        finally:
            # the manifest files of a Redshift COPY, committed or not
            await self.stager.cleanup()

    async def _apply(
        self, table: str, night: Night, *, expected: Head | None, read_part: PartReader
    ) -> Applied:
        started = time.perf_counter()
        st = self.statements
        plan = night.manifest.plan
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(st.lock(), *st.lock_args(table))
            row = await connection.fetchrow(st.select_head(), table)
            if _head(row) != expected:
                raise FencedError(
                    f"{table}: the ledger moved to {_head(row)} while {night} was planned on "
                    f"{expected}; nothing was applied, the nights are planned again."
                )
            loaded = set(await self._loaded(connection)) | {table}
            parts = list(night.manifest.parts)
            raw: RawTable | None = None
            if night.replaces:
                raw = await self._replace(connection, table, night, row, read_part)
            elif parts:
                raw = await self._merge_delta(connection, table, night, row, read_part)
            signature = raw.signature if raw is not None else (row["columns"] if row else "")
            models = await self._refresh_models(connection, table, night.day, loaded)
            totals = await self._totals(connection, table, raw, row)
            seconds = time.perf_counter() - started
            now = datetime.now(UTC)
            await self._move_head(
                connection, table, night=night, expected=expected, now=now, signature=signature
            )
            await connection.execute(
                st.insert_ledger(),
                table,
                night.day,
                night.kind,
                plan.snapshot,
                night.url,
                night.manifest.position_from,
                night.manifest.position_to,
                night.manifest.rows,
                totals.rows,
                now,
                seconds,
                totals.to_json(),
            )
        return Applied(
            table, night, night.manifest.rows, totals.rows, round(seconds, 3), models, totals
        )

    async def _totals(
        self,
        connection: asyncpg.Connection,
        table: str,
        raw: RawTable | None,
        row: asyncpg.Record | None,
    ) -> Totals:
        """The staged table's totals after the night (a delta without parts: the head's
        columns, so the money columns are known from the last ledger row)."""
        if raw is None:
            last = await self._last_totals(connection, table)
            money = tuple(last.money) if last else ()
            count = await connection.fetchval(self.statements.count(table)) if row else 0
            sums = []
            for column in money:
                value = await connection.fetchval(
                    f"SELECT SUM({column}) FROM {self.statements.table(table)}"  # noqa: S608 - identifiers from the ledger
                )
                sums.append(value)
            return Totals.of_row([count, *sums], money)
        found = await connection.fetchrow(self.statements.totals(raw))
        return Totals.of_row(list(found), raw.money)

    async def _last_totals(self, connection: asyncpg.Connection, table: str) -> Totals | None:
        text = await connection.fetchval(
            f"SELECT totals FROM {self.statements.schema}._load_ledger WHERE source_table = $1 "  # noqa: S608 - identifiers only
            "ORDER BY day DESC, kind DESC LIMIT 1",
            table,
        )
        return Totals.from_json(text)

    async def current_totals(self, table: str) -> tuple[Totals | None, Totals | None]:
        """``verify``: the table's totals now, and the ledger's after its last night."""
        async with self._pool.acquire() as connection:
            last = await self._last_totals(connection, table)
            if last is None:
                return None, None
            sums = "".join(f", SUM({c})" for c in last.money)
            found = await connection.fetchrow(
                f"SELECT COUNT(*){sums} FROM {self.statements.table(table)}"  # noqa: S608 - identifiers from the ledger
            )
            return Totals.of_row(list(found), tuple(last.money)), last

    async def _loaded(self, connection: asyncpg.Connection) -> list[str]:
        rows = await connection.fetch(self.statements.select_heads())
        return [r["source_table"] for r in rows]

    async def _move_head(
        self,
        connection: asyncpg.Connection,
        table: str,
        *,
        night: Night,
        expected: Head | None,
        now: datetime,
        signature: str,
    ) -> None:
        st = self.statements
        position = night.manifest.position_to
        if expected is None:
            status = await connection.execute(
                st.insert_head(), table, night.day, night.kind, position, night.url, now, signature
            )
        else:
            status = await connection.execute(
                st.advance_head(),
                table,
                expected.position_to,
                night.day,
                night.kind,
                position,
                night.url,
                now,
                signature,
            )
        if status.split()[-1] != "1":  # "UPDATE 1" / "INSERT 0 1"
            raise FencedError(f"{table}: another loader applied a night meanwhile ({status})")

    async def _replace(
        self,
        connection: asyncpg.Connection,
        table: str,
        night: Night,
        row: asyncpg.Record | None,
        read_part: PartReader,
    ) -> RawTable:
        """A full or re-snapshot: the table emptied (re-created if its columns changed)
        and every part copied in."""
        st = self.statements
        manifest = night.manifest
        if not manifest.parts:
            raise LoadError(f"{table}: the {night} run lists no part; take a new full backup")
        raw: RawTable | None = None
        expected = Totals()
        target = Target(table, st.schema)

        async def into_table(index: int, data: pa.Table) -> None:
            nonlocal raw, expected
            if raw is None:
                raw = _raw_of(table, manifest, data.schema)
                if row is None or row["columns"] != raw.signature:
                    if row is not None:
                        _log.warning(
                            "table_columns_changed",
                            table=table,
                            night=str(night),
                            before=row["columns"],
                            after=raw.signature,
                        )
                    await connection.execute(st.drop_table(table))
                    await connection.execute(st.create_table(raw))
                else:
                    await connection.execute(st.empty_table(table))
            expected += arrow_totals(data, raw.money, upserts_only=False)
            await self.stager.part(connection, target, night, manifest.parts[index], data)

        await _pipelined(manifest, read_part, into_table)
        await self.stager.finish(connection, target, night)
        assert raw is not None  # noqa: S101 - at least one part was read above
        found = Totals.of_row(list(await connection.fetchrow(st.totals(raw))), raw.money)
        _reconciled(table, night, expected, found, what="the staged table")
        return raw

    async def _merge_delta(
        self,
        connection: asyncpg.Connection,
        table: str,
        night: Night,
        row: asyncpg.Record | None,
        read_part: PartReader,
    ) -> RawTable:
        st = self.statements
        manifest = night.manifest
        raw: RawTable | None = None
        expected = Totals()
        target = Target(st.stage(table), None)
        truncated: list[int] = []

        async def into_stage(index: int, data: pa.Table) -> None:
            nonlocal raw, expected
            if raw is None:
                raw = _raw_of(table, manifest, data.schema.remove(0))
                if row is None or row["columns"] != raw.signature:
                    raise SchemaDriftError(
                        f"{table}: the delta of {night.day} has columns ({raw.signature}) other "
                        f"than the staged table ({row['columns'] if row else 'none'}). Nothing "
                        "was applied. sql-backup re-snapshots a table whose columns changed; take "
                        "a full backup of the table, then load again."
                    )
                await connection.execute(st.create_stage(raw))
            expected += arrow_totals(data, raw.money, upserts_only=True)
            record = manifest.parts[index]
            # a truncate marker clears its chunk's key range: known from the checked data,
            # so the stage needs no chunk column (Redshift's COPY of Parquet takes exactly
            # the file's columns)
            if pc.any(pc.equal(data.column(CHANGE_OP_COLUMN), "T")).as_py():
                truncated.append(record.chunk)
            await self.stager.part(connection, target, night, record, data)

        await _pipelined(manifest, read_part, into_stage)
        await self.stager.finish(connection, target, night)
        assert raw is not None  # noqa: S101 - at least one part was read above
        await self._truncate_markers(connection, raw, manifest, truncated)
        for statement in st.apply_delta(raw):
            await connection.execute(statement)
        duplicate = await connection.fetchrow(st.duplicate_key(raw))
        if duplicate is not None:
            raise LoadError(
                f"{table}: the delta of {night.day} upserts the key {dict(duplicate)} twice; "
                "nothing was applied. Run sql-backup verify for that night and take a new backup "
                "of the table."
            )
        await connection.execute(st.merge(raw))
        found = Totals.of_row(list(await connection.fetchrow(st.upserted_totals(raw))), raw.money)
        _reconciled(table, night, expected, found, what="the staged rows of its upserted keys")
        await connection.execute(st.drop_stage(raw))
        return raw

    async def _truncate_markers(
        self, connection: asyncpg.Connection, raw: RawTable, manifest: Manifest, chunks: list[int]
    ) -> None:
        """A ``T`` row clears its chunk's key range before the night's changes apply."""
        plan = manifest.plan
        for chunk in sorted(chunks):
            spec = plan.chunks[chunk]
            bounds = [b for b in (spec.lo, spec.hi) if b is not None]
            await connection.execute(
                self.statements.clear_range(
                    raw, plan.chunk_column, lo=spec.lo is not None, hi=spec.hi is not None
                ),
                *bounds,
            )

    async def _refresh_models(
        self, connection: asyncpg.Connection, table: str, day: date, loaded: set[str]
    ) -> tuple[str, ...]:
        done = []
        if self.before_refresh is not None:
            await self.before_refresh(table)
        refreshed = models_for(table, loaded)
        if refreshed:
            # Another loader's night (of another table) may refresh these models now: the
            # lock makes it wait for this commit, then rebuild from it; two DELETE + INSERT
            # rebuilds at once would leave both inserts.
            await connection.execute(
                lock_statement([m.name for m in refreshed], self.model_schema, self.dialect)
            )
        for model in refreshed:
            statements = model.statements(
                raw=self.statements.schema, erp=self.model_schema, dialect=self.dialect
            )
            for statement in statements:
                try:
                    if "$1" in statement:
                        await connection.execute(statement, day)
                    else:
                        await connection.execute(statement)
                except (asyncpg.UndefinedColumnError, asyncpg.UndefinedTableError) as exc:
                    raise ModelError(
                        f"model {self.model_schema}.{model.name} cannot be refreshed after "
                        f"{table} on {day}: {exc}. Nothing of that night was applied: the "
                        "model's SQL reads a column the table no longer has; update the model "
                        "(models.py) with the source's change."
                    ) from None
            done.append(model.name)
        return tuple(done)


def _reconciled(table: str, night: Night, expected: Totals, found: Totals, *, what: str) -> None:
    problem = difference(expected, found)
    if problem is not None:
        raise ReconciliationError(
            f"{table} {night}: {what} differ from the backup ({problem}; the backup has "
            f"{expected.describe()}). Nothing of that night was applied. Run sql-backup verify "
            "for the night; report it to the sql-to-redshift maintainers if it passes."
        )


def _raw_of(table: str, manifest: Manifest, schema: pa.Schema) -> RawTable:
    nullable = {c.name: c.nullable for c in manifest.plan.columns}
    return RawTable.of(table, schema, manifest.plan.key, nullable)


async def _pipelined(
    manifest: Manifest,
    read_part: PartReader,
    use: Callable[[int, pa.Table], Awaitable[None]],
) -> None:
    """Each part checked and read while the previous one is copied (one ahead)."""
    parts = manifest.parts
    if not parts:
        return
    following: asyncio.Task[pa.Table] = asyncio.create_task(read_part(manifest, parts[0]))
    try:
        for index in range(len(parts)):
            data = await following
            if index + 1 < len(parts):
                following = asyncio.create_task(read_part(manifest, parts[index + 1]))
            await use(index, data)
    finally:
        if not following.done():
            following.cancel()
            # the error being raised is the first one; the read ahead is only dropped
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await following
