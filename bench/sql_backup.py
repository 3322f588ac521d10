"""sql-backup: PostgreSQL (over psqlODBC + arrow-odbc) → zstd Parquet on S3, per worker, against
``psql -c "COPY (SELECT …) TO STDOUT"`` of the same table in the same run; 1 vs 2 worker
replicas draining the same plan through Kafka; restore rate and the implied RTO.

Data: the demo ERP's ``order_lines`` at scale 300 (~900,000 rows; ``BENCH_SQL_SCALE``) in its
own schema, removed after. Large enough that the fixed cost of a run (plan, group join,
manifest) weighs little, as in a 40 TB backup; small enough to run in a few minutes.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import date
from typing import Any

from bench.harness import Result, run_quiet, run_workers
from indutech_common.s3 import create_s3_client
from indutech_common.schemas import Topics
from indutech_common.warehouse import connect_warehouse
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.dialects import PostgresDialect, TableRef
from indutech_sql_backup.engine import Engine
from indutech_sql_backup.planning import publish_plans
from indutech_sql_backup.restore import Restorer
from indutech_sql_backup.sources import OdbcSource
from indutech_sql_backup.worker import SqlBackupWorker
from tests.support.erp import demo_erp_statements
from tests.support.kafka import create_topics, delete_topics
from tests.support.stack import StackSettings, load_stack

SCALE = int(os.environ.get("BENCH_SQL_SCALE", "300"))
TABLE = "order_lines"
CHUNK_ROWS = 150_000  # 6 chunks at the default scale: 3 rounds of the 2 parallel reads
TB40 = 40e12
SECONDS_3_DAYS = 3 * 86_400


def _psql_copy(stack: StackSettings, schema: str) -> tuple[float, int]:
    """Seconds and bytes of psql COPY TO STDOUT of the table (the ceiling of a plain read)."""
    erp = stack.erp
    env = {
        **os.environ,
        "PGPASSWORD": erp.password.get_secret_value() if erp.password else "",
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": str(erp.ca_file),
    }
    started = time.perf_counter()
    out = run_quiet(
        "psql",
        "-h",
        erp.host,
        "-p",
        str(erp.port),
        "-U",
        erp.user,
        "-d",
        erp.database,
        "-c",
        f'COPY (SELECT * FROM "{schema}"."{TABLE}" ORDER BY order_id, line_no) TO STDOUT',  # noqa: S608
        env=env,
    )
    return time.perf_counter() - started, len(out.encode())


async def _drain(settings: SqlBackupSettings, replicas: int, day: date) -> float:
    async with create_s3_client(settings.s3) as s3:
        engine = Engine(settings, s3)
        tables = await engine.discover([f"{settings.include[0].split('.')[0]}.{TABLE}"])
        workers = [SqlBackupWorker(settings) for _ in range(replicas)]
        serving = [asyncio.create_task(w.serve(install_signal_handlers=False)) for w in workers]
        await asyncio.sleep(3)  # every replica has joined the group
        started = time.perf_counter()
        await publish_plans(settings, engine, tables, kind="full", day=day)
        # one GET of the manifest key per poll: this loop shares the workers' process
        # and GIL, and a full plan() per poll (two GETs) cost them ~10 % of the run
        manifest_key = engine.directory(tables[0], day, "full").manifest
        while True:
            if await engine.store.get_bytes(manifest_key) is not None:
                break
            await asyncio.sleep(0.05)  # the manifest is seen within 50 ms of its writing
        elapsed = time.perf_counter() - started
        for worker in workers:
            worker.request_exit()
        await asyncio.gather(*serving)
        return elapsed


async def _bench(stack: StackSettings) -> list[Result]:
    unique = uuid.uuid4().hex[:8]
    schema = f"bench_sb_{unique}"
    prefix = f"bench/sql-backup/{unique}/"
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, demo_erp_statements(schema, scale=SCALE))
    topics = [f"bench.{unique}.work", f"bench.{unique}.completed"]
    await create_topics(
        stack.kafka, {topics[0]: Topics.BACKUP_WORK, topics[1]: Topics.BACKUP_COMPLETED}
    )
    base: dict[str, Any] = {
        "erp": stack.erp,
        "s3": stack.s3,
        "kafka": stack.kafka,
        "target": stack.warehouse,
        "backup_prefix": prefix,
        "include": (f"{schema}.*",),
        "work_topic": topics[0],
        "completed_topic": topics[1],
        "health": {"host": "127.0.0.1", "port": 0},
        "chunk_rows": CHUNK_ROWS,
        "session_timeout_ms": 6000,
    }
    try:
        peer_s, peer_bytes = await asyncio.to_thread(_psql_copy, stack, schema)
        one = SqlBackupSettings(**{**base, "group_id": f"bench-{unique}-1", "parallel_chunks": 2})
        two = SqlBackupSettings(**{**base, "group_id": f"bench-{unique}-2", "parallel_chunks": 1})
        one_s = await _drain(one, 1, date(2026, 1, 1))
        two_s = await _drain(two, 2, date(2026, 1, 2))
        async with create_s3_client(stack.s3) as s3:
            manifest = (
                await Engine(one, s3).store.manifests(stack.erp.database, TableRef(schema, TABLE))
            )[0]
            restorer = Restorer(one, s3)
            report = await restorer.restore(
                TableRef(schema, TABLE), day=date(2026, 1, 1), target=TableRef(schema, "restored")
            )
    finally:
        await delete_topics(stack.kafka, topics)
        await asyncio.to_thread(source.execute, [f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'])
        connection = await connect_warehouse(stack.warehouse)
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await connection.close()
    rows = manifest.rows
    # MB/s counts the source bytes psql moved (COPY text): one numerator for both.
    ours_mb_s = peer_bytes / one_s / 1e6
    peer_mb_s = peer_bytes / peer_s / 1e6
    per_worker_mb_s = ours_mb_s
    replicas = TB40 / (per_worker_mb_s * 1e6) / SECONDS_3_DAYS
    note = f"{rows:,} rows of order_lines (scale {SCALE}), chunks of {CHUNK_ROWS:,}, 2 cores"
    return [
        Result(
            "sql_backup_rows_per_s_1_worker",
            rows / one_s,
            "rows/s",
            peer="psql COPY TO STDOUT",
            peer_value=rows / peer_s,
            notes=note + "; parallel_chunks=2; plan → Kafka → Parquet on S3 → manifest",
        ),
        Result(
            "sql_backup_mb_per_s_1_worker",
            ours_mb_s,
            "MB/s (COPY-text bytes)",
            peer="psql COPY TO STDOUT",
            peer_value=peer_mb_s,
            notes=f"Parquet written: {manifest.bytes / 1e6:.1f} MB; " + note,
        ),
        Result(
            "sql_backup_2_workers_speedup",
            one_s / two_s,
            "x (2 replicas vs 1)",
            notes=f"1 replica {one_s:.1f}s, 2 replicas {two_s:.1f}s on the same 2-core host",
        ),
        Result(
            "sql_backup_replicas_for_40tb_in_3_days",
            replicas,
            "replicas",
            notes=f"40 TB / ({per_worker_mb_s:.1f} MB/s per worker x 3 days), source-bytes basis",
        ),
        Result(
            "sql_backup_restore_rows_per_s",
            report.rows_per_s,
            "rows/s",
            notes=(
                f"{report.rows:,} rows ({report.bytes_read / 1e6:.1f} MB Parquet) restored in "
                f"{report.seconds:.1f}s by binary COPY; at this rate one restorer needs "
                f"{report.seconds / max(report.bytes_read, 1) * 1e9 / 3600:.2f} h per GB of Parquet"
            ),
        ),
    ]


def run() -> list[Result]:
    return run_workers(_bench(load_stack()))
