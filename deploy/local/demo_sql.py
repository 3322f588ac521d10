"""The sql-backup part of `make demo`: a generated ERP backed up to S3 and restored.

The ERP is PostgreSQL's ``erp`` database (the SQL Server stand-in, read through
unixODBC + psqlODBC). The full backup goes the production way: ``plan`` splits
every table into key-range chunks on a Kafka topic and two worker replicas share
them; the next day's delta (inserts, updates, deletes) runs in one process;
``verify`` re-reads the source; ``restore`` rebuilds each table as of the delta's
day in the warehouse, and the demo compares it with the source row for row.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import asyncpg

from indutech_common.schemas import Topics
from indutech_common.settings import WarehouseSettings
from indutech_common.warehouse import connect_warehouse
from indutech_devtools.erp import change_statements
from indutech_sql_backup.dialects import PostgresDialect
from indutech_sql_backup.sources import OdbcSource
from tests.support.erp import demo_erp_statements
from tests.support.kafka import create_topics, delete_topics
from tests.support.s3 import list_keys
from tests.support.stack import REPO_ROOT, StackSettings
from tests.support.warehouse import table_rows

TABLES = ("customers", "products", "orders", "order_lines", "invoices", "gl_entries")
KEYS = {"order_lines": "order_id, line_no"}
REPLICAS = 2
SCALE = 3


def say(message: str) -> None:
    print(message, flush=True)


def sql_backup(env: dict[str, str], *args: str, log: Path | None = None) -> str:
    """One sql-backup command; its output is shown (progress goes to the log when given)."""
    command = [sys.executable, "-m", "indutech_sql_backup", *args]
    with (log or Path("/dev/null")).open("ab") as stderr:
        done = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr if log else None,
            text=True,
            timeout=600,
            check=False,
        )
    for line in done.stdout.splitlines():
        say(f"   {line}")
    if done.returncode != 0:
        raise RuntimeError(f"sql-backup {args[0]} exited {done.returncode} (log: {log})")
    return done.stdout


def replica_chunks(log: Path) -> tuple[int, int] | None:
    """(chunks taken, chunks written) of a replica, from its JSON ``idle_exit`` log line.

    A chunk redelivered by a rebalance is taken twice and written once: the second
    replica finds its part record and skips it.
    """
    for line in log.read_text(errors="replace").splitlines():
        if '"idle_exit"' in line:
            try:
                entry = json.loads(line)
                return int(entry["chunks_done"]), int(entry["chunks_written"])
            except (ValueError, KeyError):
                return None
    return None


async def rows(settings: WarehouseSettings, schema: str, table: str) -> list[tuple[object, ...]]:
    # row_version is the source's change-capture column, not data
    found = await table_rows(
        settings, schema, table, order_by=KEYS.get(table, "id"), skip_columns=["row_version"]
    )
    return [tuple(row) for row in found]


def load_erp(stack: StackSettings, schema: str, statements: list[str], what: str) -> None:
    """Run demo ERP statements (indutech_devtools.erp) in the ERP, in one transaction."""
    OdbcSource(stack.erp, PostgresDialect()).execute(statements)
    say(f"   {what} written to {stack.erp.database}.{schema}")


async def drop_schemas(stack: StackSettings, source_schema: str, restore_schema: str) -> None:
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, [f'DROP SCHEMA IF EXISTS "{source_schema}" CASCADE'])
    connection: asyncpg.Connection = await connect_warehouse(stack.warehouse)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{restore_schema}" CASCADE')
    finally:
        await connection.close()


def sql_demo(stack: StackSettings, run: str, work: Path, base_env: dict[str, str]) -> bool:
    schema, restore_schema = f"erp_demo_{run}", f"erp_restore_{run}"
    work_topic, completed_topic = f"demo.{run}.sql-backup-work", f"demo.{run}.sql-backup-done"
    prefix = f"demo/{run}/"
    env = {
        **base_env,
        "SQL_BACKUP_BACKUP_PREFIX": prefix,
        "SQL_BACKUP_INCLUDE": json.dumps([f"{schema}.*"]),
        "SQL_BACKUP_WORK_TOPIC": work_topic,
        "SQL_BACKUP_COMPLETED_TOPIC": completed_topic,
        "SQL_BACKUP_GROUP_ID": f"demo-{run}-sql-backup",
        "SQL_BACKUP_CHUNK_ROWS": "2000",
        "SQL_BACKUP_SESSION_TIMEOUT_MS": "6000",
        "SQL_BACKUP_IDLE_EXIT_S": "8",
        "SQL_BACKUP_HEALTH__HOST": "127.0.0.1",
        "SQL_BACKUP_HEALTH__PORT": "0",
        # the commands print their results; their log lines would only repeat them
        "SQL_BACKUP_LOGGING__LEVEL": "WARNING",
        # restore writes into the warehouse database (the Redshift stand-in)
        **{
            name.replace("INDUTECH_WAREHOUSE__", "SQL_BACKUP_TARGET__"): value
            for name, value in base_env.items()
            if name.startswith("INDUTECH_WAREHOUSE__")
        },
    }
    full_day = date(2026, 3, 1)
    delta_day = full_day + timedelta(days=1)
    say("== ERP backup: PostgreSQL 'erp' (SQL Server stand-in, over ODBC) → S3 Parquet")
    say(f"   s3://{stack.s3.backup_bucket}/{prefix}sql-server/…, schema {schema}")
    asyncio.run(
        create_topics(
            stack.kafka, {work_topic: Topics.BACKUP_WORK, completed_topic: Topics.BACKUP_COMPLETED}
        )
    )
    replicas: list[subprocess.Popen[bytes]] = []
    try:
        load_erp(
            stack, schema, demo_erp_statements(schema, scale=SCALE), f"demo ERP (scale {SCALE})"
        )
        say(f"-- full backup of {full_day}: plan, then {REPLICAS} worker replicas share the chunks")
        planned = sql_backup(env, "plan", "--kind", "full", "--date", full_day.isoformat())
        match = re.search(r"published (\d+) work item", planned)
        published = int(match.group(1)) if match else -1
        logs = [work / f"sql-backup-{n}.log" for n in range(REPLICAS)]
        for log in logs:
            with log.open("ab") as out:
                replicas.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "indutech_sql_backup", "worker"],
                        cwd=REPO_ROOT,
                        env=env | {"SQL_BACKUP_LOGGING__LEVEL": "INFO"},  # idle_exit counts
                        stdout=out,
                        stderr=out,
                    )
                )
        codes = [replica.wait(timeout=600) for replica in replicas]
        written = 0
        for n, (log, code) in enumerate(zip(logs, codes, strict=True)):
            taken, wrote = replica_chunks(log) or (0, 0)
            written += wrote
            say(f"   replica {n}: took {taken} chunk(s), wrote {wrote}; idle → exited {code}")
        keys = asyncio.run(list_keys(stack.s3, stack.s3.backup_bucket, prefix))
        parts = len([k for k in keys if "/full/part-" in k and k.endswith(".parquet")])
        say(
            f"   {published} work items → {parts} parts in S3 ({written} chunk writes; a chunk "
            "redone after a rebalance is rewritten under its own name)"
        )
        load_erp(stack, schema, change_statements(schema, day=1, scale=SCALE), "day 1 changes")
        say(f"-- nightly delta of {delta_day}: day 1's inserts, updates and deletes")
        sql_backup(
            env,
            "backup",
            "--kind",
            "delta",
            "--date",
            delta_day.isoformat(),
            log=work / "sql-backup-delta.log",
        )
        say("-- verify orders: every part against its manifest")
        sql_backup(env, "verify", "--table", f"{schema}.orders", "--no-source")
        say(f"-- restore every table as of {delta_day} into the warehouse, compare with the source")
        erp = stack.warehouse.model_copy(update={"database": stack.erp.database})
        same = True
        for table in TABLES:
            sql_backup(
                env,
                "restore",
                "--table",
                f"{schema}.{table}",
                "--date",
                delta_day.isoformat(),
                "--target",
                f"{restore_schema}.{table}",
                log=work / "sql-backup-restore.log",
            )
            source = asyncio.run(rows(erp, schema, table))
            restored = asyncio.run(rows(stack.warehouse, restore_schema, table))
            equal = source == restored
            same &= equal
            counts = f"source {len(source):,} rows, restored {len(restored):,}"
            say(f"   {table}: {counts}, equal: {equal}")
        say(f"   restored tables equal the source: {same}")
        return same and codes == [0] * REPLICAS and parts == published
    finally:
        for replica in replicas:
            if replica.poll() is None:  # the demo failed or timed out around it
                replica.kill()
                replica.wait()
        asyncio.run(drop_schemas(stack, schema, restore_schema))
        asyncio.run(delete_topics(stack.kafka, [work_topic, completed_topic]))
