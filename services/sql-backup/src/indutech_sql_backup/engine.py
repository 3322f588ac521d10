"""Plan, read and finalise backups: the work shared by the CLI and the worker replicas.

1. **Plan** (one process): take the source position, split the table into
   key-range chunks of the leading key column, write ``_plan.json``.
2. **Chunk** (any replica): read the range under snapshot isolation through
   arrow-odbc, stream it into a zstd Parquet part (checksummed on the way),
   upload it with its SHA-256 (S3 refuses a body that differs), then write the
   part record. A chunk whose record names the same plan is skipped, so a
   restart or a redelivered work item never redoes or duplicates it; a killed
   chunk is simply redone under the same deterministic name.
3. **Finalise** (whoever finishes the last chunk): when every chunk has a
   record, write ``_manifest.json`` (create-only, so exactly one writer wins).

A table that cannot be backed up (no key, a key override that is not unique, a
schema change with ``schema_drift=fail``, a chunk that keeps failing) is skipped
and listed in ``Engine.skipped``; the other tables go on. A delta of a table whose
columns, types or key changed since the run it continues re-reads the whole table
(a re-snapshot), so every run of a chain holds the columns of the run it starts from.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import pyarrow as pa
import structlog
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from indutech_common.logging import scrub
from indutech_common.metrics import WorkerMetrics
from indutech_common.schemas.sql_backup import (
    BackupDir,
    ChunkSpec,
    ColumnSpec,
    FailureRecord,
    Kind,
    Manifest,
    PartRecord,
    Plan,
)
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.dialects import Dialect, Query, TableInfo, dialect_for
from indutech_sql_backup.dialects.types import stored_type
from indutech_sql_backup.errors import (
    BackupNotFoundError,
    LobTooLargeError,
    NoChangeColumnError,
    PlanMismatchError,
    SchemaDriftError,
    SqlBackupError,
    UnsupportedTypeError,
    environment_error,
)
from indutech_sql_backup.progress import Progress
from indutech_sql_backup.sinks import BackupStore, PartWriter, chain, restore_base, schema_drift
from indutech_sql_backup.sinks.store import now_utc
from indutech_sql_backup.sources import OdbcSource, discover
from indutech_sql_backup.sources.discovery import check_key

if TYPE_CHECKING:
    import pyodbc
    from types_aiobotocore_s3 import S3Client

_log = structlog.get_logger(__name__)
ROW_OVERHEAD_BYTES = 64


@dataclass(frozen=True)
class ChunkResult:
    record: PartRecord
    skipped: bool


@dataclass(frozen=True)
class SkippedTable:
    """A table left out of a run, and why (the error's message says what to do next)."""

    table: str
    reason: str
    error: str  # the exception's class name, a stable kind for metrics

    def line(self) -> str:
        return f"{self.table}: skipped: {self.reason}"


class BackupMetrics:
    """Per-table metrics on top of the standard ones: rows, bytes, lag, last success."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.base = metrics
        registry = metrics.registry
        self.bytes = PromCounter(
            "indutech_sql_backup_bytes",
            "Parquet bytes uploaded, per table",
            ["worker", "table"],
            registry=registry,
        )
        self.chunks = PromCounter(
            "indutech_sql_backup_chunks",
            "Chunks done, per table and outcome (written, skipped)",
            ["worker", "table", "outcome"],
            registry=registry,
        )
        self.skipped_tables = PromCounter(
            "indutech_sql_backup_skipped_tables",
            "Tables left out of a run (no key, key not unique, schema drift, failed chunks)",
            ["worker", "table", "error"],
            registry=registry,
        )
        self.table_success = Gauge(
            "indutech_sql_backup_last_success_timestamp_seconds",
            "Unix time of the last verified part, per table",
            ["worker", "table"],
            registry=registry,
        )
        self.backup_duration = Gauge(
            "indutech_sql_backup_backup_duration_seconds",
            "Seconds from the plan of a table's last backup to its announcement on "
            "sql.backup-completed.v1 (the seed's alarm: > 2 h)",
            ["worker", "table"],
            registry=registry,
        )

    def announced(self, plan: Plan, *, at: float) -> None:
        """A backup was announced: how long it took from its plan, the time an operator
        waits for a night's backup to be usable (restorable, loadable), retries included."""
        name = f"{plan.database}.{plan.schema_name}.{plan.table}"
        self.backup_duration.labels(self.base.worker, name).set(
            max(0.0, at - plan.created_at.timestamp())
        )

    def part_done(self, plan: Plan, record: PartRecord, *, skipped: bool) -> None:
        name = f"{plan.database}.{plan.schema_name}.{plan.table}"
        worker = self.base.worker
        self.chunks.labels(worker, name, "skipped" if skipped else "written").inc()
        if skipped:
            return
        self.base.records_in.labels(worker, name).inc(record.rows)
        self.base.record_success(
            stream=name, count=record.rows, last_event_time=plan.created_at.timestamp()
        )
        self.bytes.labels(worker, name).inc(record.bytes)
        self.table_success.labels(worker, name).set(time.time())


def chunk_specs(boundaries: Iterable[str]) -> tuple[ChunkSpec, ...]:
    """Ranges ``(b[i-1], b[i]]`` and a last open-ended one; duplicate boundaries collapse."""
    unique: list[str] = []
    for value in boundaries:
        if not unique or unique[-1] != value:
            unique.append(value)
    edges: list[str | None] = [None, *unique, None]
    return tuple(ChunkSpec(chunk=i, lo=edges[i], hi=edges[i + 1]) for i in range(len(edges) - 1))


def double_columns(table: TableInfo) -> frozenset[str]:
    """8-byte floating point columns (kept float64, never narrowed)."""
    return frozenset(
        c.name
        for c in table.columns
        if c.source_type.lower() in ("double precision", "float8", "float", "float(53)")
    )


def arrow_schema_for(
    table: TableInfo, read: pa.Schema, *, delta: bool, dialect: Dialect
) -> pa.Schema:
    """What is stored: each column's type from the type matrix (``dialects/types.py``). What
    the driver returned must convert to it without changing a value (a safe cast then does
    it); anything else stops the chunk naming the column, never a silent narrowing."""
    fields = []
    columns = {c.name: c for c in table.columns}
    for field in read:
        column = columns.get(field.name)
        if column is None:  # the delta's _op
            fields.append(field)
            continue
        expected = dialect.column_type(table.ref, column).arrow
        if not stored_type(expected, field.type):
            raise UnsupportedTypeError(
                f"column {table.ref.qualified}.{column.name} ({column.source_type}) was read as "
                f"{field.type}, but the type matrix stores {expected}: the ODBC driver does not "
                "describe it as expected, and converting could change values. Check the driver "
                "version and its options (README, section Type matrix)."
            )
        nullable = True if delta else column.nullable
        fields.append(pa.field(field.name, expected, nullable=nullable))
    return pa.schema(fields)


class Engine:
    def __init__(
        self,
        settings: SqlBackupSettings,
        s3: S3Client,
        *,
        metrics: BackupMetrics | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.dialect = dialect_for(settings.erp.dialect)
        self.source = OdbcSource(settings.erp, self.dialect, pool_size=settings.parallel_chunks)
        self.store = BackupStore(
            s3, bucket=settings.s3.backup_bucket, prefix=settings.backup_prefix
        )
        self.metrics = metrics
        self.progress = progress
        self._plans: dict[str, Plan] = {}
        # Tables left out by this engine's discover/plan/backup calls (one engine per run).
        self.skipped: list[SkippedTable] = []

    @property
    def database(self) -> str:
        return self.settings.erp.database

    # -- discovery and planning ----------------------------------------------------------

    def skip(self, table: str, exc: BaseException) -> SkippedTable:
        """Leave a table out of this run: logged, counted, listed in ``skipped``."""
        skipped = SkippedTable(table=table, reason=scrub(str(exc)), error=type(exc).__name__)
        self.skipped.append(skipped)
        _log.error("table_skipped", table=table, error=skipped.error, reason=skipped.reason)
        if self.metrics:
            self.metrics.skipped_tables.labels(self.metrics.base.worker, table, skipped.error).inc()
            self.metrics.base.error("table_skipped")
        return skipped

    async def discover(self, only: Iterable[str] = ()) -> list[TableInfo]:
        """The selected tables that can be backed up; the others go to ``skipped``."""
        settings = self.settings
        tables, skipped = await asyncio.to_thread(
            discover,
            self.source,
            include=settings.include,
            exclude=settings.exclude,
            overrides=settings.tables,
            default_watermark=settings.watermark_column,
            only=tuple(only),
        )
        for ref, exc in skipped:
            self.skip(ref.qualified, exc)
        return tables

    async def plan_or_skip(
        self, table: TableInfo, *, kind: Kind, day: date
    ) -> tuple[Plan, str] | None:
        """``plan``, or None when this table cannot be planned (it is skipped, see ``skip``);
        errors of the environment (the source or S3 down) are raised."""
        try:
            return await self.plan(table, kind=kind, day=day)
        except Exception as exc:
            if environment_error(exc):
                raise
            self.skip(table.ref.qualified, exc)
            return None

    def directory(self, table: TableInfo, day: date, kind: Kind) -> BackupDir:
        return BackupDir(
            prefix=self.settings.backup_prefix,
            database=self.database,
            schema=table.ref.schema,
            table=table.ref.name,
            day=day,
            kind=kind,
        )

    async def plan(self, table: TableInfo, *, kind: Kind, day: date) -> tuple[Plan, str]:
        """The plan of (table, day, kind): ``new``, ``resume`` (unfinished) or ``complete``."""
        directory = self.directory(table, day, kind)
        manifest = await self.store.manifest(directory.manifest)
        if manifest is not None:
            return manifest.plan, "complete"
        existing = await self.store.plan(directory.plan)
        if existing is not None:
            return existing, "resume"
        position_from = None
        snapshot_reason = None
        if kind == "delta":
            if table.watermark is None:
                raise NoChangeColumnError(
                    f"{table.ref.qualified} has no change column {self.settings.watermark_column!r}"
                    ": set a watermark override (SQL_BACKUP_TABLES) or enable change capture "
                    "(sql-backup prepare-source)."
                )
            runs = chain(await self.store.manifests(self.database, table.ref), until=day)
            if not runs:
                raise BackupNotFoundError(
                    f"no complete full backup of {table.ref.qualified} on or before {day}: a "
                    "delta continues one. Run 'sql-backup backup --kind full' first."
                )
            position_from = runs[-1].position_to
            snapshot_reason = self._drift(table, runs)
        position_to, chunks, snapshot = await asyncio.to_thread(
            self._position_and_chunks, table, kind, position_from, snapshot_reason is not None
        )
        plan = Plan(
            plan_id=uuid.uuid4().hex,
            kind=kind,
            database=self.database,
            dialect=self.dialect.name,
            schema_name=table.ref.schema,
            table=table.ref.name,
            day=day,
            columns=tuple(
                ColumnSpec(name=c.name, source_type=c.source_type, nullable=c.nullable)
                for c in table.columns
            ),
            key=table.key,
            key_from=table.key_from,
            watermark=table.watermark,
            chunk_column=table.chunk_column.name,
            chunks=chunks,
            position_from=position_from,
            position_to=position_to,
            created_at=now_utc(),
            snapshot=snapshot,
            snapshot_reason=snapshot_reason if snapshot_reason else self._lost_changes(snapshot),
        )
        if not await self.store.put(directory.plan, plan, create_only=True):
            winner = await self.store.plan(directory.plan)  # another planner was first
            if winner is not None:
                return winner, "resume"
        _log.info(
            "planned",
            table=table.ref.qualified,
            kind=kind,
            day=str(day),
            chunks=len(chunks),
            snapshot=snapshot,
            position_from=position_from,
            position_to=position_to,
        )
        return plan, "new"

    def _drift(self, table: TableInfo, runs: list[Manifest]) -> str | None:
        """Why this delta must re-read the whole table (its columns, types or key differ from
        the run it would continue), or None. With ``schema_drift=fail`` the table is refused
        instead. A delta carries the columns of the run it continues: without this, a column
        added later would be dropped on restore and a dropped one would break it."""
        base = runs[restore_base(runs)].plan
        last = runs[-1].plan
        drift = schema_drift(base.columns, base.key, table.columns, table.key) or schema_drift(
            last.columns, last.key, table.columns, table.key
        )
        if drift is None:
            return None
        said = drift.describe()
        fields = {
            "table": table.ref.qualified,
            "since": f"{last.day}/{last.kind}",
            "added": list(drift.added),
            "dropped": list(drift.dropped),
            "changed": list(drift.changed),
            "key": list(drift.key_after),
        }
        if self.settings.schema_drift == "fail":
            _log.error("schema_drift", action="refused", **fields)
            raise SchemaDriftError(
                f"{table.ref.qualified} changed since its run of {last.day} ({said}): a delta "
                "cannot carry that. Take a full backup of it (sql-backup plan --kind full "
                f"--table {table.ref.qualified}), or set SQL_BACKUP_SCHEMA_DRIFT=snapshot to "
                "let the delta re-read the whole table."
            )
        _log.warning("schema_drift", action="snapshot", **fields)
        return f"schema changed since {last.day}: {said}"

    @staticmethod
    def _lost_changes(snapshot: bool) -> str | None:
        return "the source no longer holds the changes since the last run" if snapshot else None

    def _position_and_chunks(
        self, table: TableInfo, kind: Kind, position_from: str | None, drifted: bool = False
    ) -> tuple[str, tuple[ChunkSpec, ...], bool]:
        """Blocking: (position, chunks, re-snapshot). A full's chunks split the table; a
        delta's split its changes since ``position_from``, unless the source can no longer
        say what changed since then or the table's columns changed (re-snapshot: the whole
        table, chunked like a full). A key override is checked for uniqueness first."""
        with self.source.connect() as connection:
            check_key(self.source, connection, table)
            # The position first: whatever changes after it is the next delta's.
            position = str(self.source.fetch(connection, self.dialect.position())[0][0])
            since = str(position_from)
            resnapshot = kind == "delta" and (
                drifted or not self._delta_possible(connection, table, since)
            )
            if kind == "full" or resnapshot:
                boundaries = self.dialect.boundaries(table, self.settings.chunk_rows)
            else:
                boundaries = self.dialect.delta_boundaries(
                    table, since, self.settings.delta_chunk_rows
                )
            rows = self.source.fetch(connection, boundaries)
        return position, chunk_specs(str(r[0]) for r in rows), resnapshot

    def _delta_possible(
        self, connection: pyodbc.Connection, table: TableInfo, position_from: str
    ) -> bool:
        check = self.dialect.delta_check(table)
        if check is None:
            return True
        value = self.source.fetch(connection, check)[0][0]
        if self.dialect.delta_possible(position_from, value):
            return True
        _log.warning(
            "delta_resnapshot",
            table=table.ref.qualified,
            position_from=position_from,
            min_valid=str(value),
            reason="the source no longer holds the changes since the last run (a TRUNCATE, or "
            "change retention passed): this delta re-reads the whole table",
        )
        return False

    async def load_plan(self, key: str, plan_id: str) -> Plan:
        plan = self._plans.get(key)
        if plan is None:
            plan = await self.store.plan(key)
            if plan is None:
                raise PlanMismatchError(f"the plan {self.store.url(key)} does not exist")
            self._plans[key] = plan
        if plan.plan_id != plan_id:
            raise PlanMismatchError(
                f"work item of plan {plan_id} but {self.store.url(key)} is plan {plan.plan_id}"
            )
        return plan

    # -- chunks --------------------------------------------------------------------------

    async def run_chunk(self, plan: Plan, chunk: int) -> ChunkResult:
        directory = BackupDir.of(self.settings.backup_prefix, plan)
        record = await self.store.get(directory.record(chunk), PartRecord)
        if record is not None and record.plan_id == plan.plan_id:
            if self.metrics:
                self.metrics.part_done(plan, record, skipped=True)
            return ChunkResult(record, skipped=True)
        started = time.perf_counter()
        writer = await asyncio.to_thread(self._read_chunk, plan, chunk)
        key = directory.part(chunk)
        try:
            size, sha256 = await asyncio.to_thread(writer.finish)
            await self.store.put_part(
                key,
                writer.path,
                size=size,
                sha256=sha256,
                multipart_threshold=self.settings.multipart_threshold_bytes,
                part_bytes=self.settings.multipart_part_bytes,
            )
        finally:
            writer.close()
        record = PartRecord(
            plan_id=plan.plan_id,
            chunk=chunk,
            key=key,
            rows=writer.rows,
            bytes=size,
            checksum=writer.checksum.hexdigest(),
            sha256=sha256.hex(),
            ops=dict(writer.ops),
            arrow_schema=tuple(
                ColumnSpec(name=f.name, source_type="", nullable=f.nullable, arrow_type=str(f.type))
                for f in writer.schema
            ),
            seconds=round(time.perf_counter() - started, 3),
        )
        await self.store.put(directory.record(chunk), record)
        if self.metrics:
            self.metrics.part_done(plan, record, skipped=False)
        _log.info(
            "chunk_written",
            table=plan.qualified,
            kind=plan.kind,
            chunk=chunk,
            rows=record.rows,
            bytes=record.bytes,
            seconds=record.seconds,
        )
        return ChunkResult(record, skipped=False)

    def chunk_query(self, plan: Plan, chunk: int) -> tuple[Query, Query | None]:
        """The chunk's read and, for tables with LOBs, the query of their largest values."""
        table = TableInfo.of_plan(plan)
        lobs = any(c.lob for c in table.columns)
        spec = plan.chunks[chunk]
        if not plan.reads_changes:  # a full, or a delta that re-reads the table
            where = self.dialect.range_predicate(table, spec.lo, spec.hi)
            lob = self.dialect.lob_lengths(table, where) if lobs else None
            return self.dialect.chunk(table, spec.lo, spec.hi), lob
        if plan.position_from is None:
            raise PlanMismatchError(f"delta plan {plan.plan_id} has no start position")
        since = plan.position_from
        lob = self.dialect.lob_lengths_delta(table, since, spec.lo, spec.hi) if lobs else None
        return self.dialect.delta(table, since, spec.lo, spec.hi), lob

    def _buffer_sizes(self, plan: Plan, lob_query: Query | None) -> tuple[int, int, int]:
        """(batch rows, text bytes per value, binary bytes per value) for this chunk."""
        settings = self.settings
        if lob_query is None:
            return settings.batch_rows, 4096, 4096
        table = TableInfo.of_plan(plan)
        lobs = [c for c in table.columns if c.lob]
        with self.source.connect() as connection:
            lengths = [int(v or 0) for v in self.source.fetch(connection, lob_query)[0]]
        for column, length in zip(lobs, lengths, strict=True):
            if length > settings.lob_max_bytes:
                raise LobTooLargeError(
                    f"{plan.qualified}.{column.name} holds a value of {length:,} bytes, more "
                    f"than SQL_BACKUP_LOB_MAX_BYTES={settings.lob_max_bytes:,}. Raise it (and "
                    "MAX_BATCH_BYTES); nothing is ever truncated."
                )
        text = max([n for c, n in zip(lobs, lengths, strict=True) if c.lob_kind == "text"] + [1])
        binary = max(
            [n for c, n in zip(lobs, lengths, strict=True) if c.lob_kind == "binary"] + [1]
        )
        text, binary = max(text + 16, 1024), max(binary + 16, 1024)
        row_bytes = ROW_OVERHEAD_BYTES * len(table.columns) + sum(
            text if c.lob_kind == "text" else binary for c in lobs
        )
        rows = max(1, min(settings.batch_rows, settings.max_batch_bytes // row_bytes))
        return rows, text, binary

    def _read_chunk(self, plan: Plan, chunk: int) -> PartWriter:
        """Blocking: source → Parquet temp file. Runs in a thread."""
        query, lob_query = self.chunk_query(plan, chunk)
        batch_rows, text_bytes, binary_bytes = self._buffer_sizes(plan, lob_query)
        table = TableInfo.of_plan(plan)
        read_schema, batches = self.source.batches(
            query,
            batch_rows=batch_rows,
            max_text_bytes=text_bytes,
            max_binary_bytes=binary_bytes,
            max_batch_bytes=self.settings.max_batch_bytes + self.settings.lob_max_bytes,
            doubles=double_columns(table),
        )
        schema = arrow_schema_for(
            table, read_schema, delta=plan.kind == "delta", dialect=self.dialect
        )
        changes = plan.reads_changes
        writer = PartWriter(schema)
        try:
            for batch in batches:
                cast = batch.cast(schema)
                if changes:
                    writer.ops.update(cast.column(0).to_pylist())
                writer.write(cast)
        except BaseException:
            writer.close()
            raise
        return writer

    # -- finalising ----------------------------------------------------------------------

    async def finalize(self, plan: Plan) -> tuple[Manifest | None, bool]:
        """(manifest, written by this call) once every chunk is verified, else (None, False)."""
        directory = BackupDir.of(self.settings.backup_prefix, plan)
        existing = await self.store.manifest(directory.manifest)
        if existing is not None:
            return existing, False
        # Listing is one request per 1,000 records: read them only when all may be there.
        if len(await self.store.list_keys(directory.parts_prefix)) < len(plan.chunks):
            return None, False
        records = await self.store.records(directory, plan.plan_id)
        if len(records) < len(plan.chunks):
            return None, False
        parts = tuple(records[c.chunk] for c in plan.chunks)
        manifest = Manifest(
            plan=plan,
            parts=parts,
            rows=sum(p.rows for p in parts),
            bytes=sum(p.bytes for p in parts),
            completed_at=now_utc(),
        )
        created = await self.store.put(directory.manifest, manifest, create_only=True)
        if created:
            _log.info(
                "manifest_written",
                table=plan.qualified,
                kind=plan.kind,
                day=str(plan.day),
                rows=manifest.rows,
                parts=len(parts),
                manifest=self.store.url(directory.manifest),
            )
        return (manifest if created else await self.store.manifest(directory.manifest)), created

    # -- chunks given up on -------------------------------------------------------------

    async def record_failure(
        self, plan: Plan, chunk: int, error: str, *, attempts: int, dead_letter_topic: str | None
    ) -> None:
        """Mark a chunk as given up on: no manifest will claim the run until a rerun redoes it
        (``clear_failures``); ``incomplete`` then says the run ended without it."""
        directory = BackupDir.of(self.settings.backup_prefix, plan)
        failure = FailureRecord(
            plan_id=plan.plan_id,
            chunk=chunk,
            attempts=attempts,
            error=scrub(error)[:2000],
            failed_at=now_utc(),
            dead_letter_topic=dead_letter_topic,
        )
        await self.store.put(directory.failure(chunk), failure)
        if self.metrics:
            name = f"{plan.database}.{plan.schema_name}.{plan.table}"
            self.metrics.chunks.labels(self.metrics.base.worker, name, "failed").inc()

    async def incomplete(self, plan: Plan) -> dict[int, FailureRecord] | None:
        """The chunks given up on when every other chunk of the plan is recorded (the run is
        over and has no manifest), else None (still running, or complete)."""
        directory = BackupDir.of(self.settings.backup_prefix, plan)
        failed = await self.store.failures(directory, plan.plan_id)
        if not failed:
            return None
        records = await self.store.records(directory, plan.plan_id)
        if any(c.chunk not in records and c.chunk not in failed for c in plan.chunks):
            return None
        return {c: f for c, f in failed.items() if c not in records} or None

    async def clear_failures(self, plan: Plan) -> int:
        """Forget the chunks given up on before (a rerun redoes them); how many there were."""
        directory = BackupDir.of(self.settings.backup_prefix, plan)
        keys = await self.store.list_keys(directory.failures_prefix)
        if keys:
            await self.store.delete_keys(keys)
            _log.info("redoing_failed_chunks", table=plan.qualified, chunks=len(keys))
        return len(keys)

    # -- a whole run in this process -----------------------------------------------------

    async def backup(
        self, tables: list[TableInfo], *, kind: Kind, day: date
    ) -> list[tuple[Manifest, bool]]:
        """Plan and run every chunk here (``parallel_chunks`` at once); resumes unfinished runs.

        Returns the tables backed up. A table that cannot be planned, or one of whose chunks
        fails by itself, is left out (``skipped``, with a failure marker for the chunk) while
        the others go on; an outage of the source or S3 stops the run (rerun to resume)."""
        plans: list[tuple[Plan, str]] = []
        for table in tables:
            planned = await self.plan_or_skip(table, kind=kind, day=day)
            if planned is not None:
                plans.append(planned)
                if planned[1] == "resume":
                    await self.clear_failures(planned[0])
        todo = [plan for plan, status in plans if status != "complete"]
        if self.progress:
            total = sum(len(p.chunks) for p in todo)
            self.progress.start(f"{kind} backup of {len(tables)} table(s)", total=total)
        failed = await self._run_chunks(todo)
        results = []
        for plan, _status in plans:
            if plan.plan_id in failed:
                chunk, exc = failed[plan.plan_id]
                self.skip(
                    plan.qualified,
                    SqlBackupError(
                        f"chunk {chunk} of its {plan.kind} of {plan.day} failed: {exc}. The run "
                        "has no manifest (nothing claims it); fix the cause and run the same "
                        "command again: it redoes the chunks not recorded."
                    ),
                )
                continue
            manifest, created = await self.finalize(plan)
            if manifest is None:  # pragma: no cover - every chunk ran above
                raise SqlBackupError(f"{plan.qualified}: chunks missing after the run")
            results.append((manifest, created))
        if self.progress:
            self.progress.finish()
        return results

    async def _run_chunks(self, plans: list[Plan]) -> dict[str, tuple[int, Exception]]:
        """Every chunk of the plans, ``parallel_chunks`` at once. A chunk that fails by itself
        is marked failed and stops its table's chunks not yet started (the table's first
        failure is returned by plan id); an outage stops them all and is raised."""
        slots = asyncio.Semaphore(self.settings.parallel_chunks)
        failed: dict[str, tuple[int, Exception]] = {}

        async def one(plan: Plan, chunk: int) -> None:
            async with slots:
                if plan.plan_id in failed:
                    return
                try:
                    result = await self.run_chunk(plan, chunk)
                except Exception as exc:
                    if environment_error(exc):
                        raise
                    failed.setdefault(plan.plan_id, (chunk, exc))
                    await self.record_failure(
                        plan, chunk, str(exc), attempts=1, dead_letter_topic=None
                    )
                    return
            if self.progress:
                self.progress.advance(
                    rows=result.record.rows, nbytes=result.record.bytes, skipped=result.skipped
                )

        try:
            async with asyncio.TaskGroup() as group:  # an outage cancels the other chunks
                for plan in plans:
                    for spec in plan.chunks:
                        group.create_task(one(plan, spec.chunk))
        except ExceptionGroup as errors:
            raise errors.exceptions[0] from None
        return failed
