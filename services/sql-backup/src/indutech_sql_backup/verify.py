"""``sql-backup verify``: every part against its manifest, and the backup against the source.

1. Integrity (always): each part of the restore chain (the newest full up to
   the day, then its deltas) is downloaded; its SHA-256, row count and content
   checksum must equal the manifest's; every run from the one a restore starts
   with must have that run's columns and key, and every part its plan's columns;
   and restore's own decoding (``restore.decode_part``) must load every column
   of every row: each column stored as the type matrix stores it, every value
   convertible to what the target's binary COPY takes. Columns kept as their
   source text (interval, arrays, …) are cast back by the restore target (when
   TARGET__* is set) exactly as restore will, writing nothing; they are listed.
2. Source (default): when the full run is the last of the chain (no delta
   after it), each chunk's key range is read again from the source and its
   count and checksum compared. After deltas the source has moved on by design;
   compare a restore with the source instead (the tests do).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import date

import asyncpg

from indutech_common.schemas.sql_backup import Manifest, Plan
from indutech_common.warehouse import connect_warehouse
from indutech_sql_backup.checksum import TableChecksum
from indutech_sql_backup.dialects import TableInfo, TableRef
from indutech_sql_backup.engine import Engine, arrow_schema_for, double_columns
from indutech_sql_backup.errors import BackupNotFoundError, RestoreDecodeError
from indutech_sql_backup.restore import check_casts, decode_part
from indutech_sql_backup.sinks import chain, chain_problems, read_part, restore_base


@dataclass
class VerifyReport:
    ok: bool = True
    parts: int = 0
    rows: int = 0
    lines: list[str] = field(default_factory=list)
    cast_columns: set[str] = field(default_factory=set)
    """Columns restored from their text by a cast on the target server."""

    def fail(self, line: str) -> None:
        self.ok = False
        self.lines.append("MISMATCH " + line)


def _source_checksum(engine: Engine, plan: Plan, chunk: int) -> tuple[int, str]:
    """Blocking: the chunk read again from the source, checksummed like the worker does."""
    query, lob = engine.chunk_query(plan, chunk)
    rows, text, binary = engine._buffer_sizes(plan, lob)
    schema_read, batches = engine.source.batches(
        query,
        batch_rows=rows,
        max_text_bytes=text,
        max_binary_bytes=binary,
        max_batch_bytes=engine.settings.max_batch_bytes + engine.settings.lob_max_bytes,
        doubles=double_columns(TableInfo.of_plan(plan)),
    )
    schema = arrow_schema_for(
        TableInfo.of_plan(plan), schema_read, delta=False, dialect=engine.dialect
    )
    checksum = TableChecksum(schema)
    for batch in batches:
        checksum.update(batch.cast(schema))
    return checksum.rows, checksum.hexdigest()


async def _integrity(
    engine: Engine,
    manifest: Manifest,
    report: VerifyReport,
    target: asyncpg.Connection | None,
) -> None:
    for part in manifest.parts:
        data = await engine.store.get_bytes(part.key)
        where = engine.store.url(part.key)
        if data is None:
            report.fail(f"{where}: missing")
            continue
        if hashlib.sha256(data).hexdigest() != part.sha256:
            report.fail(f"{where}: object bytes differ from the manifest")
            continue
        table = read_part(data)
        checksum = TableChecksum(table.schema)
        checksum.update(table)
        if table.num_rows != part.rows or checksum.hexdigest() != part.checksum:
            report.fail(f"{where}: {table.num_rows} rows / checksum differ from the manifest")
            continue
        try:
            # Restore's own decoding, every column of every row: equal checksums of a part
            # restore cannot load would be no backup.
            loads, rows = decode_part(manifest.plan, table)
            if target is not None:
                await check_casts(target, loads, rows)
        except RestoreDecodeError as exc:
            report.fail(f"{where}: restore cannot load it: {exc}")
            continue
        report.cast_columns.update(c.name for c in loads if c.via_text)
        report.parts += 1
        report.rows += part.rows


async def verify(
    engine: Engine, table: TableRef, *, day: date | None, source: bool = True
) -> VerifyReport:
    runs = chain(await engine.store.manifests(engine.database, table), until=day)
    if not runs:
        raise BackupNotFoundError(f"no complete backup of {table.qualified} to verify")
    report = VerifyReport()
    target = None
    if engine.settings.target is not None:
        target = await connect_warehouse(engine.settings.target)
    try:
        for manifest in runs:
            await _integrity(engine, manifest, report, target)
    finally:
        if target is not None:
            await target.close()
    for problem in chain_problems(runs[restore_base(runs) :]):  # columns the restore needs
        report.fail(problem)
    report.lines.append(
        f"{table.qualified}: {report.parts} part(s), {report.rows:,} rows in "
        f"{' + '.join(f'{m.plan.day}/{m.plan.kind}' for m in runs)} match their manifests"
        " and decode as restore loads them"
    )
    if report.cast_columns:
        cast = ", ".join(sorted(report.cast_columns))
        checked = (
            "each value cast by the restore target as restore will"
            if target is not None
            else "NOT cast-checked: set TARGET__* (the restore target) to check them"
        )
        report.lines.append(f"restored from their source text by a server cast: {cast} ({checked})")
    if not source:
        return report
    if len(runs) > 1:
        report.lines.append("source check skipped: deltas follow the full run (restore to compare)")
        return report
    plan = runs[0].plan
    for part in runs[0].parts:
        rows, checksum = await asyncio.to_thread(_source_checksum, engine, plan, part.chunk)
        if (rows, checksum) != (part.rows, part.checksum):
            report.fail(
                f"chunk {part.chunk}: source has {rows:,} rows, backup {part.rows:,} (or the "
                "content differs): changed since the backup, or a wrong backup"
            )
    if report.ok:
        report.lines.append(f"source: {len(runs[0].parts)} chunk(s) equal to the backup")
    return report


__all__ = ["VerifyReport", "verify"]
