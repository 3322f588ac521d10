"""sql-backup: PostgreSQL (over psqlODBC + arrow-odbc) → zstd Parquet on S3, one worker with
``parallel_chunks`` reads at once, against ``psql`` COPY of the same key ranges over as many
connections (``parallel_chunks`` psql processes, each copying its share of the plan's
ranges); 1 vs 2 worker replicas draining the same plan through Kafka; the restore rate.

Timing, the same on both sides: process start and the connection handshakes (TLS, SCRAM) of
the bulk reads are outside the clock. Our workers are running and have drained one
uncounted warm-up plan, so their pooled ODBC connections are open; the psql processes are
started and have answered a ``SELECT`` before the clock starts. Ours still counts its plan
(one control connection and the boundaries query), Kafka and the S3 writes; the peer is
handed the plan's key ranges and writes COPY text to local files. The sides run in rotating
order for ``REPEATS`` rounds, so each sees the same noise; every row keeps min / median / max.

Data: the demo ERP's ``order_lines`` at scale 300 (~900,000 rows; ``BENCH_SQL_SCALE``) in its
own schema, removed after. Large enough that a run's fixed cost (plan, group join, manifest)
weighs little; small enough to run in a few minutes.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any

from bench.harness import Result, run_workers
from bench.stats import spread
from indutech_common.s3 import create_s3_client
from indutech_common.schemas import Topics
from indutech_common.schemas.sql_backup import ChunkSpec, Manifest, Plan
from indutech_common.settings import OdbcSourceSettings
from indutech_common.warehouse import connect_warehouse
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.dialects import PostgresDialect, TableInfo, TableRef
from indutech_sql_backup.engine import Engine
from indutech_sql_backup.planning import publish_plans
from indutech_sql_backup.restore import Restorer
from indutech_sql_backup.sources import OdbcSource
from indutech_sql_backup.worker import SqlBackupWorker
from tests.support.erp import demo_erp_statements
from tests.support.kafka import create_topics, delete_topics
from tests.support.stack import StackSettings, load_stack

SCALE = int(os.environ.get("BENCH_SQL_SCALE", "300"))
REPEATS = int(os.environ.get("BENCH_SQL_REPEATS", "3"))
TABLE = "order_lines"
CHUNK_ROWS = 150_000  # 6 chunks at the default scale: 3 rounds of the 2 parallel reads
PARALLEL_CHUNKS = 2  # one replica's reads at once = the peer's psql processes
PSQL_TIMEOUT_S = 600.0
DONE = "indutech-bench-done"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def range_copy(plan: Plan, chunk: ChunkSpec) -> str:
    """psql's COPY of one chunk: the rows with ``lo < chunk column <= hi`` (the plan's
    bounds, cast to the column's type as the worker's query casts them), in key order."""
    column = next(c for c in plan.columns if c.name == plan.chunk_column)
    name = PostgresDialect().quote(column.name)
    where = [
        f"{name} {op} CAST({_literal(bound)} AS {column.source_type})"
        for op, bound in ((">", chunk.lo), ("<=", chunk.hi))
        if bound is not None
    ]
    table = f"{PostgresDialect().quote(plan.schema_name)}.{PostgresDialect().quote(plan.table)}"
    order = ", ".join(PostgresDialect().quote(k) for k in plan.key)
    return (
        f"COPY (SELECT * FROM {table} WHERE {' AND '.join(where) or 'true'} "  # noqa: S608 - quoted identifiers, literal bounds
        f"ORDER BY {order}) TO STDOUT;"
    )


def share(chunks: Sequence[ChunkSpec], sessions: int) -> list[list[ChunkSpec]]:
    """The chunks dealt round-robin to ``sessions`` psql processes: each chunk once. The
    chunks hold the same number of rows, so this matches the worker's free-slot order."""
    return [list(chunks[k::sessions]) for k in range(sessions)]


@dataclass
class _Psql:
    process: subprocess.Popen[str]
    output: Path
    errors: IO[str]

    def send(self, text: str) -> None:
        assert self.process.stdin is not None  # opened with stdin=PIPE
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def close(self) -> None:
        """End of input: psql exits; its pipes and error file are closed."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(PSQL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.errors.close()

    def expect(self, marker: str) -> None:
        assert self.process.stdout is not None  # opened with stdout=PIPE
        line = self.process.stdout.readline().strip()
        if line != marker:
            self.errors.seek(0)
            raise RuntimeError(
                f"psql answered {line!r}, not {marker!r} (exit {self.process.poll()}): "
                f"{self.errors.read()[-2000:]}"
            )


def _psql_env(erp: OdbcSourceSettings) -> dict[str, str]:
    return {
        **os.environ,
        "PGPASSWORD": erp.password.get_secret_value() if erp.password else "",
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": str(erp.ca_file),
    }


def _start_psql(erp: OdbcSourceSettings, directory: Path, k: int) -> _Psql:
    """A psql process reading commands from stdin, connected once it answers; its COPY
    output goes to ``psql-k.out`` in ``directory``."""
    errors = (directory / f"psql-{k}.err").open("w+")
    process = subprocess.Popen(
        ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
         "-h", erp.host, "-p", str(erp.port), "-U", erp.user, "-d", erp.database],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True,
        env=_psql_env(erp),
    )  # fmt: skip
    session = _Psql(process, directory / f"psql-{k}.out", errors)
    try:
        session.send(f"SELECT '{DONE}';\n")
        session.expect(DONE)
    except BaseException:
        session.close()
        raise
    return session


def psql_ranges(
    erp: OdbcSourceSettings, plan: Plan, sessions: int, directory: Path
) -> tuple[float, int]:
    """Seconds and COPY-text bytes of ``sessions`` psql processes copying the plan's ranges
    at once, each over its own connection; the clock runs from the first command sent to
    the last process's answer after its last COPY (started and connected before)."""
    shares = share(plan.chunks, sessions)
    started_sessions: list[_Psql] = []
    try:
        for k in range(sessions):
            started_sessions.append(_start_psql(erp, directory, k))
        scripts = [
            f"\\o {s.output}\n"
            + "\n".join(range_copy(plan, c) for c in mine)
            + f"\n\\o\nSELECT '{DONE}';\n"
            for s, mine in zip(started_sessions, shares, strict=True)
        ]
        started = time.perf_counter()
        for session, script in zip(started_sessions, scripts, strict=True):
            session.send(script)
        for session in started_sessions:
            session.expect(DONE)
        elapsed = time.perf_counter() - started
    finally:
        for session in started_sessions:
            session.close()
    size = 0
    for session in started_sessions:
        size += session.output.stat().st_size
        session.output.unlink()
    return elapsed, size


@dataclass
class _Drain:
    seconds: float
    plan_seconds: float
    manifest: Manifest
    bulk_connections: int


@asynccontextmanager
async def _replicas(
    settings: SqlBackupSettings, count: int
) -> AsyncIterator[list[SqlBackupWorker]]:
    workers = [SqlBackupWorker(settings) for _ in range(count)]
    serving = [asyncio.create_task(w.serve(install_signal_handlers=False)) for w in workers]
    try:
        await asyncio.sleep(3)  # every replica has joined the group
        yield workers
    finally:
        for worker in workers:
            worker.request_exit()
        await asyncio.gather(*serving)


def _bulk_connections(workers: list[SqlBackupWorker]) -> int:
    return sum(w.engine.source.connections_opened for w in workers)


async def _drain(
    settings: SqlBackupSettings, workers: list[SqlBackupWorker], table: TableInfo, day: date
) -> _Drain:
    """One full backup of the table by the running replicas: from planning to the manifest."""
    opened = _bulk_connections(workers)
    async with create_s3_client(settings.s3) as s3:
        engine = Engine(settings, s3)
        started = time.perf_counter()
        await publish_plans(settings, engine, [table], kind="full", day=day)
        planned = time.perf_counter() - started
        # one GET of the manifest key per poll: this loop shares the workers' process
        # and GIL, and a full plan() per poll (two GETs) cost them ~10 % of the run
        manifest_key = engine.directory(table, day, "full").manifest
        while True:
            if await engine.store.get_bytes(manifest_key) is not None:
                break
            await asyncio.sleep(0.05)  # the manifest is seen within 50 ms of its writing
        elapsed = time.perf_counter() - started
        manifest = await engine.store.manifest(manifest_key)
    if manifest is None:
        raise RuntimeError(f"the manifest {manifest_key} vanished after it was seen")
    return _Drain(elapsed, planned, manifest, _bulk_connections(workers) - opened)


@dataclass
class _Rounds:
    one: list[_Drain]
    two: list[_Drain]
    peer: list[tuple[float, int]]
    restores: list[tuple[float, int, int]]  # seconds, rows, Parquet bytes read


async def _rounds(
    stack: StackSettings, one: SqlBackupSettings, two: SqlBackupSettings, schema: str
) -> _Rounds:
    async with create_s3_client(stack.s3) as s3:
        tables = await Engine(one, s3).discover([f"{schema}.{TABLE}"])
    table = tables[0]
    out = _Rounds([], [], [], [])
    day = date(2026, 1, 1)
    with tempfile.TemporaryDirectory(prefix="indutech-bench-") as tmp:
        directory = Path(tmp)
        async with _replicas(one, 1) as one_workers, _replicas(two, 2) as two_workers:
            # Warm-up, not counted: pooled bulk connections opened, the table in the cache.
            warm = await _drain(one, one_workers, table, day)
            await _drain(two, two_workers, table, day)
            await asyncio.to_thread(
                psql_ranges, stack.erp, warm.manifest.plan, PARALLEL_CHUNKS, directory
            )

            async def ours_one(r: int) -> None:
                out.one.append(await _drain(one, one_workers, table, day + timedelta(r + 1)))

            async def ours_two(r: int) -> None:
                out.two.append(await _drain(two, two_workers, table, day + timedelta(r + 1)))

            async def peer(r: int) -> None:
                del r
                out.peer.append(
                    await asyncio.to_thread(
                        psql_ranges, stack.erp, warm.manifest.plan, PARALLEL_CHUNKS, directory
                    )
                )

            sides = [ours_one, peer, ours_two]
            for r in range(REPEATS):
                for side in sides[r % 3 :] + sides[: r % 3]:  # each side first in turn
                    await side(r)
    async with create_s3_client(stack.s3) as s3:
        restorer = Restorer(one, s3)
        for r in range(REPEATS):
            report = await restorer.restore(
                table.ref, day=day + timedelta(r + 1), target=TableRef(schema, f"restored_{r}")
            )
            out.restores.append((report.seconds, report.rows, report.bytes_read))
    return out


async def _bench(stack: StackSettings) -> list[Result]:
    unique = uuid.uuid4().hex[:8]
    schema = f"bench_sb_{unique}"
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, demo_erp_statements(schema, scale=SCALE))
    topics = [f"bench.{unique}.work1", f"bench.{unique}.work2", f"bench.{unique}.completed"]
    await create_topics(
        stack.kafka,
        {
            topics[0]: Topics.BACKUP_WORK,
            topics[1]: Topics.BACKUP_WORK,
            topics[2]: Topics.BACKUP_COMPLETED,
        },
    )
    base: dict[str, Any] = {
        "erp": stack.erp,
        "s3": stack.s3,
        "kafka": stack.kafka,
        "target": stack.warehouse,
        "include": (f"{schema}.*",),
        "completed_topic": topics[2],
        "health": {"host": "127.0.0.1", "port": 0},
        "chunk_rows": CHUNK_ROWS,
        "session_timeout_ms": 6000,
    }
    # Each configuration its own work topic and prefix: both sets of replicas run at once.
    one = SqlBackupSettings(
        **base,
        group_id=f"bench-{unique}-1",
        work_topic=topics[0],
        backup_prefix=f"bench/sql-backup/{unique}/one/",
        parallel_chunks=PARALLEL_CHUNKS,
    )
    two = SqlBackupSettings(
        **base,
        group_id=f"bench-{unique}-2",
        work_topic=topics[1],
        backup_prefix=f"bench/sql-backup/{unique}/two/",
        parallel_chunks=PARALLEL_CHUNKS // 2,
    )
    try:
        rounds = await _rounds(stack, one, two, schema)
    finally:
        await delete_topics(stack.kafka, topics)
        await asyncio.to_thread(source.execute, [f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'])
        connection = await connect_warehouse(stack.warehouse)
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await connection.close()
    return results(rounds)


def results(rounds: _Rounds) -> list[Result]:
    manifest = rounds.one[0].manifest
    rows = manifest.rows
    text_bytes = statistics.median(size for _, size in rounds.peer)
    one_s = [d.seconds for d in rounds.one]
    two_s = [d.seconds for d in rounds.two]
    peer_s = [s for s, _ in rounds.peer]
    ours_rows = [rows / s for s in one_s]
    peer_rows = [rows / s for s in peer_s]
    ours_mb = [text_bytes / s / 1e6 for s in one_s]
    peer_mb = [size / s / 1e6 for s, size in rounds.peer]
    plan_s = [d.plan_seconds for d in rounds.one]
    handshakes = sum(d.bulk_connections for d in rounds.one + rounds.two)
    timing = (
        f"{REPEATS} rounds in rotating order (ours 1 replica, psql, ours 2 replicas), after an "
        f"uncounted warm-up of each; both sides exclude process start and the TLS/SCRAM "
        f"handshakes of the bulk reads (our pooled connections open from the warm-up, "
        f"{handshakes} opened in the timed rounds; psql's processes connected before the "
        f"clock); ours includes its plan (one control connection + boundaries query: "
        f"{spread(plan_s, 2)} s), Kafka and the S3 writes; the peer is handed the plan's "
        f"ranges and writes COPY text to local files"
    )
    data = (
        f"{rows:,} rows of order_lines (scale {SCALE}) in {len(manifest.plan.chunks)} chunks "
        f"of {CHUNK_ROWS:,}; 2-core machine shared with other agents"
    )
    peer = f"psql COPY of the same key ranges, {PARALLEL_CHUNKS} processes at once"
    restore_rows = [r / s for s, r, _ in rounds.restores]
    restore_s = [s for s, _, _ in rounds.restores]
    parquet_mb = rounds.restores[0][2] / 1e6
    return [
        Result(
            "sql_backup_rows_per_s_1_worker",
            statistics.median(ours_rows),
            "rows/s",
            peer=peer,
            peer_value=statistics.median(peer_rows),
            notes=f"one replica, parallel_chunks={PARALLEL_CHUNKS} (= the peer's connections): "
            f"plan → Kafka → Parquet on S3 → manifest; ours {spread(ours_rows)}, psql "
            f"{spread(peer_rows)} rows/s; {timing}; {data}",
        ),
        Result(
            "sql_backup_mb_per_s_1_worker",
            statistics.median(ours_mb),
            "MB/s (COPY-text bytes)",
            peer=peer,
            peer_value=statistics.median(peer_mb),
            notes=f"MB/s of the COPY text of the same rows ({text_bytes / 1e6:.1f} MB), one "
            f"numerator for both; Parquet written {manifest.bytes / 1e6:.1f} MB; ours "
            f"{spread(ours_mb, 1)}, psql {spread(peer_mb, 1)} MB/s; same rounds as "
            f"sql_backup_rows_per_s_1_worker",
        ),
        Result(
            "sql_backup_2_workers_speedup",
            statistics.median(one_s) / statistics.median(two_s),
            "x (2 replicas vs 1)",
            notes=f"median drain of 1 replica (parallel_chunks {PARALLEL_CHUNKS}) ÷ 2 replicas "
            f"(parallel_chunks {PARALLEL_CHUNKS // 2} each: the same {PARALLEL_CHUNKS} reads at "
            f"once) on the same 2-core host: 1 replica {spread(one_s, 2)} s, 2 replicas "
            f"{spread(two_s, 2)} s; the same rounds as sql_backup_rows_per_s_1_worker. Says "
            f"nothing about replicas on separate nodes: not measured here",
        ),
        Result(
            "sql_backup_restore_rows_per_s",
            statistics.median(restore_rows),
            "rows/s",
            notes=f"{rows:,} rows ({parquet_mb:.1f} MB Parquet) restored by Restorer.restore "
            f"(the Arrow → binary COPY loader, primary key, in-process, warehouse connection "
            f"included) {REPEATS} times into new tables: {spread(restore_rows)} rows/s, "
            f"{spread(restore_s, 2)} s; the comparison with psql \\copy FROM is "
            f"loader_restore_rto_*",
        ),
    ]


def run() -> list[Result]:
    return run_workers(_bench(load_stack()))
