"""The Arrow → PostgreSQL binary COPY loader (``indutech_common.warehouse.copy_arrow_batches``)
against ``psql \\copy … FROM`` of the same rows as CSV, into the same table definition.

Data: tables of the demo ERP at ``BENCH_SQL_SCALE`` (300: ~900,000 order_lines), written as
sql-backup writes its parts (``PartWriter``: zstd Parquet, 100,000-row groups, the type
matrix's Arrow types) and as CSV by ``psql \\copy … TO``. Each run loads one file into a
fresh, empty table (``LIKE`` the source: same columns and NOT NULLs, no index), peer and
ours alternating, ``BENCH_LOADER_RUNS`` (3) rounds; min/median/max are kept.

Both sides run as their own process, and both are timed twice:
- ``load``: inside the process, from opening the file to the COPY's end, on a connection
  already open (psql's ``\\timing`` of its ``\\copy``; ours around ``copy_arrow_batches``
  reading the Parquet file). Process start and the TLS/SCRAM handshake are excluded.
- ``process``: the whole process, wall clock (interpreter start and imports, TLS and SCRAM
  handshake, the load, exit) — both included.

The loader's variants, same process and timing: ``pipelined`` (the shipped one),
``sequential`` (the same encoder, each batch encoded then sent, nothing overlapped) and
``tuples`` (Python tuples through asyncpg's ``copy_records_to_table``, restore before it).

    python -m bench loader                 # all, writes results.json / benchmarks.md
    python -m bench.loader FILE SCHEMA TABLE MODE   # one child run (prints seconds rows)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from bench.harness import REPO_ROOT, Result, run_quiet, run_workers
from indutech_common.warehouse import (
    BatchEncoder,
    connect_warehouse,
    copy_arrow_batches,
    target_columns,
)
from tests.support.stack import StackSettings, load_stack

SCALE = int(os.environ.get("BENCH_SQL_SCALE", "300"))
RUNS = int(os.environ.get("BENCH_LOADER_RUNS", "3"))
TABLES = ("order_lines", "gl_entries")
MODES = ("pipelined", "sequential", "tuples")
BATCH_ROWS = 100_000  # one row group of a sql-backup part (PartWriter)


# -- the child: one load, in its own process --------------------------------------------


async def _sequential(connection: object, table: str, schema: str, path: Path) -> int:
    """The same encoder, nothing overlapped: read, encode, send, one batch after another."""
    import asyncpg  # noqa: PLC0415 - the child's own import, timed as part of it

    assert isinstance(connection, asyncpg.Connection)
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    encoder = BatchEncoder(
        parquet.schema_arrow,
        await target_columns(connection, table, names, schema_name=schema),
    )

    async def chunks() -> AsyncIterator[bytes]:
        yield encoder.header()
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            yield encoder.encode(batch)
        yield encoder.trailer()

    status = await connection.copy_to_table(
        table, schema_name=schema, columns=names, source=chunks(), format="binary"
    )
    return int(status.rsplit(" ", 1)[-1])


async def _tuples(connection: object, table: str, schema: str, path: Path) -> int:
    """Python values through asyncpg's binary codecs (restore before the loader)."""
    import asyncpg  # noqa: PLC0415

    assert isinstance(connection, asyncpg.Connection)
    parquet = pq.ParquetFile(path)
    rows = 0
    names = parquet.schema_arrow.names

    async def records() -> AsyncIterator[tuple[object, ...]]:
        nonlocal rows
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            rows += batch.num_rows
            for record in zip(*(c.to_pylist() for c in batch.columns), strict=True):
                yield record

    await connection.copy_records_to_table(
        table, schema_name=schema, columns=names, records=records()
    )
    return rows


async def _child(path: Path, schema: str, table: str, mode: str) -> tuple[float, int]:
    stack = load_stack()
    connection = await connect_warehouse(stack.warehouse)
    try:
        started = time.perf_counter()
        if mode == "pipelined":
            parquet = pq.ParquetFile(path)
            rows = await copy_arrow_batches(
                connection, table, parquet.iter_batches(batch_size=BATCH_ROWS), schema_name=schema
            )
        elif mode == "sequential":
            rows = await _sequential(connection, table, schema, path)
        else:
            rows = await _tuples(connection, table, schema, path)
        return time.perf_counter() - started, rows
    finally:
        await connection.close()


# -- the parent: data, the two sides, alternating ---------------------------------------


def _psql_env(stack: StackSettings) -> dict[str, str]:
    wh = stack.warehouse
    return {
        **os.environ,
        "PGHOST": wh.host,
        "PGPORT": str(wh.port),
        "PGUSER": wh.user,
        "PGDATABASE": wh.database,
        "PGPASSWORD": wh.password.get_secret_value() if wh.password else "",
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": str(wh.ca_file),
    }


def _psql(stack: StackSettings, *commands: str) -> str:
    args = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-q"]
    for command in commands:
        args += ["-c", command]
    return run_quiet(*args, env=_psql_env(stack))


async def _prepare(stack: StackSettings, schema: str, directory: Path) -> dict[str, int]:
    """The demo ERP in ``schema`` of the warehouse; each bench table as CSV and as a
    sql-backup part. Returns each table's rows."""
    from indutech_devtools import erp  # noqa: PLC0415 - the bench's data only
    from indutech_sql_backup.dialects.types import postgres_type  # noqa: PLC0415
    from indutech_sql_backup.sinks.parquet import PartWriter  # noqa: PLC0415

    connection = await connect_warehouse(stack.warehouse)
    try:
        for statement in erp.create_statements(schema, scale=SCALE):
            await connection.execute(statement)
        rows = {}
        for table in TABLES:
            columns = await connection.fetch(
                "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute "
                "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped "
                "ORDER BY attnum",
                f'"{schema}"."{table}"',
            )
            schema_arrow = pa.schema(
                [(c["attname"], postgres_type(c["type"]).arrow) for c in columns]
            )
            csv = directory / f"{table}.csv"
            await asyncio.to_thread(
                _psql, stack, f"\\copy \"{schema}\".{table} TO '{csv}' WITH (FORMAT csv)"
            )
            data = pa_csv.read_csv(
                csv,
                read_options=pa_csv.ReadOptions(column_names=schema_arrow.names),
                convert_options=pa_csv.ConvertOptions(
                    column_types=schema_arrow,
                    true_values=["t"],
                    false_values=["f"],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
            with PartWriter(schema_arrow, directory=directory) as part:
                for batch in data.cast(schema_arrow).to_batches(max_chunksize=BATCH_ROWS):
                    part.write(batch)
                part.finish()
                os.link(part.path, directory / f"{table}.parquet")  # kept after its close
            rows[table] = data.num_rows
        return rows
    finally:
        await connection.close()


def _peer(stack: StackSettings, csv: Path, schema: str, target: str) -> tuple[float, float]:
    """psql \\copy FROM the CSV: (its \\timing, the process's wall clock)."""
    started = time.perf_counter()
    out = _psql(
        stack, "\\timing on", f'\\copy "{schema}"."{target}" FROM \'{csv}\' WITH (FORMAT csv)'
    )
    wall = time.perf_counter() - started
    timing = next(line for line in out.splitlines() if line.startswith("Time:"))
    return float(timing.split()[1]) / 1000, wall


def _ours(
    stack: StackSettings, parquet: Path, schema: str, target: str, mode: str
) -> tuple[float, float, int]:
    env = {**os.environ, "STACK_DIR": str(stack.stack_dir)}
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "bench.loader", str(parquet), schema, target, mode],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=900,
        check=False,
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"loader child failed: {completed.stderr[-2000:]}")
    seconds, rows = completed.stdout.split()[-2:]
    return float(seconds), wall, int(rows)


def _fresh(stack: StackSettings, schema: str, table: str, target: str) -> None:
    _psql(
        stack,
        f'DROP TABLE IF EXISTS "{schema}"."{target}"; '
        f'CREATE TABLE "{schema}"."{target}" (LIKE "{schema}"."{table}" INCLUDING DEFAULTS)',
    )


def _spread(values: list[float]) -> str:
    return (
        f"min {min(values):,.0f} / median {statistics.median(values):,.0f} / max {max(values):,.0f}"
    )


def _bench(stack: StackSettings) -> list[Result]:
    schema = f"bench_ld_{uuid.uuid4().hex[:8]}"
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        directory = Path(tmp)
        rows = run_workers(_prepare(stack, schema, directory))
        try:
            for table in TABLES:
                csv, parquet = directory / f"{table}.csv", directory / f"{table}.parquet"
                n = rows[table]
                load: dict[str, list[float]] = {"psql": [], **{m: [] for m in MODES}}
                wall: dict[str, list[float]] = {"psql": [], **{m: [] for m in MODES}}
                for _ in range(RUNS):
                    _fresh(stack, schema, table, "target")
                    seconds, whole = _peer(stack, csv, schema, "target")
                    load["psql"].append(n / seconds)
                    wall["psql"].append(n / whole)
                    for mode in MODES:
                        _fresh(stack, schema, table, "target")
                        seconds, whole, copied = _ours(stack, parquet, schema, "target", mode)
                        if copied != n:
                            raise RuntimeError(f"{mode} copied {copied:,} rows, not {n:,}")
                        load[mode].append(n / seconds)
                        wall[mode].append(n / whole)
                results += _results(table, n, load, wall, csv, parquet)
        finally:
            _psql(stack, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return results


def _results(  # noqa: PLR0917 - a bench helper: one call site
    table: str,
    rows: int,
    load: dict[str, list[float]],
    wall: dict[str, list[float]],
    csv: Path,
    parquet: Path,
) -> list[Result]:
    csv_mb, parquet_mb = csv.stat().st_size / 1e6, parquet.stat().st_size / 1e6
    sizes = f"{rows:,} rows; CSV {csv_mb:.0f} MB, Parquet {parquet_mb:.0f} MB (zstd)"
    out = []
    for mode in MODES:
        for timing, values, boundary in (
            ("load", load, "excl. process start and TLS/SCRAM handshake (both sides)"),
            ("process", wall, "incl. process start and TLS/SCRAM handshake (both sides)"),
        ):
            ours, peer = values[mode], values["psql"]
            out.append(
                Result(
                    f"loader_{table}_{mode}_{timing}_rows_per_s",
                    statistics.median(ours),
                    "rows/s",
                    peer="psql \\copy FROM CSV",
                    peer_value=statistics.median(peer),
                    notes=(
                        f"{sizes}; {len(ours)} runs alternating, {boundary}; ours "
                        f"{_spread(ours)}, psql {_spread(peer)}"
                    ),
                )
            )
    return out


# -- the restore's RTO: sql-backup backup → restore, against psql \copy of the same rows --

RTO_CHUNK_ROWS = 150_000
BIG_ORDERS = int(os.environ.get("BENCH_RTO_BIG_ORDERS", "2000000"))  # ~3 lines each: 6 M


def _big_order_lines(schema: str) -> list[str]:
    """order_lines alone with ``BIG_ORDERS`` orders (~6 M rows), the demo's own rows."""
    from indutech_devtools import erp  # noqa: PLC0415 - the bench's data only
    from indutech_sql_backup.dialects import PostgresDialect, TableRef  # noqa: PLC0415

    ddl = erp.TABLES["order_lines"][0]
    s = f'"{schema}"'
    capture = PostgresDialect().install_change_capture(
        TableRef(schema, "order_lines"), ("order_id", "line_no")
    )
    return [
        f"DROP SCHEMA IF EXISTS {s} CASCADE",
        f"CREATE SCHEMA {s}",
        f"CREATE TABLE {s}.order_lines ({ddl})",
        *capture,
        f"INSERT INTO {s}.order_lines SELECT o, l, 1 + (o * l) % 15000, "  # noqa: S608
        "round(((o + l) % 97) / 4.0 + 0.125, 3), round(((o * 31 + l) % 100000) / 100.0, 4), "
        "round(((o + l) % 97) / 4.0 * ((o * 31 + l) % 100000) / 100.0, 2) "
        f"FROM generate_series(1, {BIG_ORDERS}) AS o, generate_series(1, 1 + o % 5) AS l",
    ]


async def _rto(stack: StackSettings, label: str, statements: list[str], schema: str) -> Result:
    r"""Back the schema up (full) once, then ``RUNS`` rounds, alternating: restore every
    table as ``sql-backup restore`` does (one after another, each with its primary key), and
    the peer: psql \copy of the same rows as CSV into tables of the restored definitions,
    then the same primary key (``ALTER TABLE … ADD PRIMARY KEY``), both by psql's \timing."""
    from indutech_common.s3 import create_s3_client  # noqa: PLC0415
    from indutech_sql_backup.config import SqlBackupSettings  # noqa: PLC0415
    from indutech_sql_backup.dialects import PostgresDialect, TableRef  # noqa: PLC0415
    from indutech_sql_backup.engine import Engine  # noqa: PLC0415
    from indutech_sql_backup.restore import Restorer  # noqa: PLC0415
    from indutech_sql_backup.sources import OdbcSource  # noqa: PLC0415

    unique = uuid.uuid4().hex[:8]
    restored, peer = f"bench_rto_{unique}", f"bench_rtopeer_{unique}"
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, statements)
    settings = SqlBackupSettings(
        erp=stack.erp,
        s3=stack.s3,
        kafka=stack.kafka,
        target=stack.warehouse,
        backup_prefix=f"bench/loader/{unique}/",
        include=(f"{schema}.*",),
        chunk_rows=RTO_CHUNK_ROWS,
        health={"host": "127.0.0.1", "port": 0},
    )
    ours: list[float] = []
    copies: list[float] = []
    keyed: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-rto-") as tmp:
            async with create_s3_client(stack.s3) as s3:
                engine = Engine(settings, s3)
                tables = [
                    t for t in await engine.discover() if not t.ref.name.startswith("indutech")
                ]
                await engine.backup(tables, kind="full", day=date(2026, 1, 1))
                names = [t.ref.name for t in tables]
                for round_ in range(RUNS):
                    rows = parquet = 0
                    started = time.perf_counter()
                    for table in tables:
                        report = await Restorer(settings, s3).restore(
                            table.ref,
                            day=None,
                            target=TableRef(restored, table.ref.name),
                            replace=True,
                        )
                        rows += report.rows
                        parquet += report.bytes_read
                    ours.append(time.perf_counter() - started)
                    if round_ == 0:
                        await asyncio.to_thread(
                            _export_csv, stack, schema, restored, names, Path(tmp)
                        )
                    copy_s, key_s = await asyncio.to_thread(
                        _peer_tables, stack, restored, peer, names, Path(tmp)
                    )
                    copies.append(copy_s)
                    keyed.append(copy_s + key_s)
    finally:
        await asyncio.to_thread(source.execute, [f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'])
        await asyncio.to_thread(
            _psql,
            stack,
            f'DROP SCHEMA IF EXISTS "{restored}" CASCADE; DROP SCHEMA IF EXISTS "{peer}" CASCADE',
        )
    seconds = statistics.median(ours)
    return Result(
        f"loader_restore_rto_{label}_rows_per_s",
        rows / seconds,
        "rows/s",
        peer="psql \\copy FROM CSV + ADD PRIMARY KEY",
        peer_value=rows / statistics.median(keyed),
        notes=(
            f"{label}: {rows:,} rows ({parquet / 1e6:.0f} MB Parquet in {RTO_CHUNK_ROWS:,}-row "
            f"parts), {RUNS} rounds alternating; RTO (restore: S3 GET, SHA-256 + checksum, "
            f"binary COPY, primary key, table after table, in-process, connection included) "
            f"min {min(ours):.1f} / median {seconds:.1f} / max {max(ours):.1f} s; psql \\copy "
            f"+ key (\\timing, excl. process start and handshake) min {min(keyed):.1f} / "
            f"median {statistics.median(keyed):.1f} / max {max(keyed):.1f} s, \\copy alone "
            f"median {statistics.median(copies):.1f} s"
        ),
    )


def _export_csv(
    stack: StackSettings, source_schema: str, restored: str, tables: list[str], directory: Path
) -> None:
    """Each table's rows, in the restored table's columns, as CSV from the source."""
    erp = stack.erp
    erp_env = {
        **_psql_env(stack),
        "PGHOST": erp.host,
        "PGPORT": str(erp.port),
        "PGUSER": erp.user,
        "PGDATABASE": erp.database,
        "PGPASSWORD": erp.password.get_secret_value() if erp.password else "",
        "PGSSLROOTCERT": str(erp.ca_file),
    }
    for table in tables:
        columns = _psql(
            stack,
            "\\pset tuples_only on",
            "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "  # noqa: S608 - the bench's own names
            f'WHERE attrelid = to_regclass(\'"{restored}"."{table}"\') AND attnum > 0 '
            "AND NOT attisdropped",
        ).strip()
        run_quiet(
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f'\\copy (SELECT {columns} FROM "{source_schema}"."{table}") '  # noqa: S608 - the bench's own names
            f"TO '{directory / table}.csv' WITH (FORMAT csv)",
            env=erp_env,
        )


def _timing(out: str) -> float:
    return sum(
        float(line.split()[1]) / 1000 for line in out.splitlines() if line.startswith("Time:")
    )


def _peer_tables(
    stack: StackSettings, restored: str, peer: str, tables: list[str], directory: Path
) -> tuple[float, float]:
    """Seconds of psql \\copy of every table, and of adding their primary keys after."""
    copy_s = key_s = 0.0
    _psql(stack, f'DROP SCHEMA IF EXISTS "{peer}" CASCADE; CREATE SCHEMA "{peer}"')
    for table in tables:
        key = _psql(
            stack,
            "\\pset tuples_only on",
            "SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n) FROM pg_index i "  # noqa: S608 - the bench's own names
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            f'WHERE i.indrelid = to_regclass(\'"{restored}"."{table}"\') AND i.indisprimary',
        ).strip()
        _psql(stack, f'CREATE TABLE "{peer}"."{table}" (LIKE "{restored}"."{table}")')
        copy_s += _timing(
            _psql(
                stack,
                "\\timing on",
                f'\\copy "{peer}"."{table}" FROM \'{directory / table}.csv\' WITH (FORMAT csv)',
            )
        )
        key_s += _timing(
            _psql(stack, "\\timing on", f'ALTER TABLE "{peer}"."{table}" ADD PRIMARY KEY ({key})')
        )
    return copy_s, key_s


def run_rto() -> list[Result]:
    stack = load_stack()
    from tests.support.erp import demo_erp_statements  # noqa: PLC0415

    demo = f"bench_rtoerp_{uuid.uuid4().hex[:8]}"
    big = f"bench_rtobig_{uuid.uuid4().hex[:8]}"
    results = [run_workers(_rto(stack, "demo_erp", demo_erp_statements(demo, scale=SCALE), demo))]
    if BIG_ORDERS:
        results.append(run_workers(_rto(stack, "6m_order_lines", _big_order_lines(big), big)))
    return results


def run() -> list[Result]:
    return _bench(load_stack()) + run_rto()


if __name__ == "__main__":
    seconds, copied = run_workers(_child(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]))
    print(f"{seconds:.6f} {copied}")
