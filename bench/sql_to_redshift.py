"""sql-to-redshift: one nightly cycle and a full rebuild of the demo ERP, at ``BENCH_SQL_SCALE``.

Data: the demo ERP (six tables) at scale 300 (``BENCH_SQL_SCALE``: 30,000 customers with LOB
notes, 300,000 orders, ~900,000 order lines, 300,000 invoices, 600,000 GL entries) in its
own schema of the ``erp`` database, backed up by the real sql-backup (a full on day 0; day
1's changes of ``indutech_devtools.erp``, then a delta), into its own S3 prefix; the
warehouse schemas are the bench's own. All removed after.

Measured in this process (``Loading``, as ``sql-to-redshift load`` / ``rebuild`` run it;
process start and imports excluded), ``BENCH_S2R_RUNS`` (3) rounds, min/median/max kept:

- ``rebuild``: ``Loading.rebuild()``: drop the staged tables, ledger and models, then apply
  every night from the backup (the full, then the delta): parts downloaded from MinIO and
  checked against their manifest, the Arrow → binary COPY, the delta's MERGE, the models,
  the reconciliation, the ledger.
- ``night``: the state reset to the full (``forget`` + ``load_all(until=day 0)``, not
  timed), then ``load_all()``: the delta night of every table, its models refreshed.

The staging rate against ``psql \\copy … FROM`` CSV is ``python -m bench loader`` (branch
h/loader: the same Parquet parts through ``copy_arrow_batches`` against psql, same table
definition, same boundaries); it is not measured twice here.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from datetime import date, timedelta

from bench.harness import Result, run_workers
from indutech_common.s3 import create_s3_client
from indutech_common.warehouse import connect_warehouse
from indutech_devtools.erp import change_statements
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.dialects import PostgresDialect
from indutech_sql_backup.engine import Engine
from indutech_sql_backup.sources import OdbcSource
from indutech_sql_to_redshift.cli import opened
from indutech_sql_to_redshift.config import SqlToRedshiftSettings
from tests.support.erp import demo_erp_statements
from tests.support.s3 import delete_prefix
from tests.support.stack import StackSettings, load_stack

SCALE = int(os.environ.get("BENCH_SQL_SCALE", "300"))
RUNS = int(os.environ.get("BENCH_S2R_RUNS", "3"))
DAY0 = date(2026, 3, 1)
DAY1 = DAY0 + timedelta(days=1)
CHUNK_ROWS = 250_000  # the chart's SQL_BACKUP_CHUNK_ROWS


def _spread(values: list[float]) -> str:
    return (
        f"min {min(values):.1f} / median {statistics.median(values):.1f} / max {max(values):.1f} s"
    )


async def _backup(stack: StackSettings, settings: SqlBackupSettings, schema: str) -> float:
    """The full of day 0, day 1's changes, the delta of day 1; the seconds of the backups."""
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, demo_erp_statements(schema, scale=SCALE))
    seconds = 0.0
    async with create_s3_client(stack.s3) as s3:
        engine = Engine(settings, s3)
        tables = await engine.discover()
        for kind, day in (("full", DAY0), ("delta", DAY1)):
            if kind == "delta":
                changes = change_statements(schema, day=1, scale=SCALE)
                await asyncio.to_thread(source.execute, changes)
            started = time.perf_counter()
            done = await engine.backup(tables, kind=kind, day=day)  # type: ignore[arg-type]
            seconds += time.perf_counter() - started
            if len(tables) != 6 or len(done) != len(tables):
                raise RuntimeError(f"the {kind} backup covered {len(done)} of {len(tables)} tables")
    return seconds


async def _cycles(
    settings: SqlToRedshiftSettings,
) -> tuple[list[float], list[float], dict[str, int]]:
    rebuilds: list[float] = []
    nights: list[float] = []
    rows: dict[str, int] = {}
    async with opened(settings) as loading:
        for _ in range(RUNS):
            started = time.perf_counter()
            report = await loading.rebuild()
            rebuilds.append(time.perf_counter() - started)
            if not report.ok or len(report.applied) != 12:
                raise RuntimeError(f"rebuild: {report.failed or len(report.applied)}")
            rows = {a.table: a.table_rows for a in report.applied if a.night.day == DAY1}
            tables = await loading.tables()
            await loading.sink.forget(tables)
            full = await loading.load_all(until=DAY0)
            if not full.ok or len(full.applied) != len(tables):
                raise RuntimeError(f"full: {full.failed}")
            started = time.perf_counter()
            night = await loading.load_all()
            nights.append(time.perf_counter() - started)
            if not night.ok or len(night.applied) != len(tables):
                raise RuntimeError(f"night: {night.failed}")
    return rebuilds, nights, rows


async def _drop(stack: StackSettings, schema: str, *warehouse: str) -> None:
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, [f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'])
    connection = await connect_warehouse(stack.warehouse)
    try:
        for name in warehouse:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


async def _bench(stack: StackSettings) -> list[Result]:
    run = uuid.uuid4().hex[:8]
    schema, raw, models = f"bench_s2r_{run}", f"bench_s2r_raw_{run}", f"bench_s2r_erp_{run}"
    prefix = f"bench/sql-to-redshift/{run}/"
    backup = SqlBackupSettings(
        erp=stack.erp,
        s3=stack.s3,
        backup_prefix=prefix,
        include=(f"{schema}.*",),
        chunk_rows=CHUNK_ROWS,
        delta_chunk_rows=CHUNK_ROWS,
        health={"host": "127.0.0.1", "port": 0},
    )
    loader = SqlToRedshiftSettings(
        s3=stack.s3,
        warehouse=stack.warehouse,
        backup_prefix=prefix,
        database=stack.erp.database,
        source_schema=schema,
        raw_schema=raw,
        model_schema=models,
        health={"host": "127.0.0.1", "port": 0},
    )
    try:
        backup_s = await _backup(stack, backup, schema)
        rebuilds, nights, rows = await _cycles(loader)
    finally:
        await _drop(stack, schema, raw, models)
        await delete_prefix(stack.s3, stack.s3.backup_bucket, prefix)
    total = sum(rows.values())
    data = (
        f"the demo ERP at scale {SCALE} (6 tables, {total:,} rows after day 1: "
        + ", ".join(f"{t} {n:,}" for t, n in sorted(rows.items()))
        + f"), backed up by sql-backup (full + delta, chunks of {CHUNK_ROWS:,}: {backup_s:.0f} s) "
        "to MinIO over TLS; PostgreSQL 15 as the warehouse; in-process (process start "
        f"excluded); {RUNS} runs, value = median; the machine is shared with other agents' work"
    )
    return [
        Result(
            "sql_to_redshift_rebuild_seconds",
            statistics.median(rebuilds),
            "s",
            notes=(
                f"sql-to-redshift rebuild: every table's full then its delta (parts checked "
                f"against the manifests, Arrow → binary COPY, MERGE, SCD2 dims and facts, "
                f"reconciliation, ledger; 12 transactions): {_spread(rebuilds)}; "
                f"{total / statistics.median(rebuilds):,.0f} table rows per second of rebuild; "
                f"{data}"
            ),
        ),
        Result(
            "sql_to_redshift_nightly_cycle_seconds",
            statistics.median(nights),
            "s",
            notes=(
                "one night (day 1's delta of the six tables: inserts, updates, deletes, a key "
                "re-issued) on top of the full: staged, merged, models refreshed (the facts "
                f"are rebuilt whole each night), reconciled: {_spread(nights)}; {data}"
            ),
        ),
    ]


def run() -> list[Result]:
    return run_workers(_bench(load_stack()))
