"""The ERP part of `make demo`: a generated ERP backed up to S3, restored, and loaded.

The ERP is PostgreSQL's ``erp`` database (the SQL Server stand-in, read through
unixODBC + psqlODBC). The full backup goes the production way: ``plan`` splits
every table into key-range chunks on a Kafka topic and two worker replicas share
them; the next day's delta (inserts, updates, deletes) runs in one process;
``verify`` re-reads the source; ``restore`` rebuilds each table as of the delta's
day in the warehouse, and the demo compares it with the source row for row.

Flow 5 runs beside it: the ``sql-to-redshift`` worker is started with the backup and
consumes its announcements (``sql.backup-completed.v1``), loading each table's full and
then its delta into the warehouse (``demo_raw_<run>``, models in ``demo_erp_<run>``). The
demo waits until every table's head is the delta's night, stops the worker with SIGTERM,
runs ``sql-to-redshift verify``, reconciles every table (rows and exact money totals) and
the order-line fact with the source, and prints a few fact rows and the SCD2 history of a
customer the delta changed.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

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
# The customer whose SCD2 history is shown: the demo ERP's day 1 changes every customer
# with id % 11 == 1 (email, credit limit).
CHANGED_CUSTOMER = 1
LOAD_TIMEOUT_S = 120


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


async def drop_schemas(stack: StackSettings, source_schema: str, *warehouse: str) -> None:
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, [f'DROP SCHEMA IF EXISTS "{source_schema}" CASCADE'])
    connection: asyncpg.Connection = await connect_warehouse(stack.warehouse)
    try:
        for schema in warehouse:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def fetch(settings: WarehouseSettings, sql: str, *args: object) -> list[asyncpg.Record]:
    connection: asyncpg.Connection = await connect_warehouse(settings)
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


class Loader:
    """The sql-to-redshift worker of the demo run, and what it loaded."""

    def __init__(self, stack: StackSettings, run: str, work: Path, env: dict[str, str]) -> None:
        self.stack = stack
        self.source_schema = f"erp_demo_{run}"
        self.raw, self.models = f"demo_raw_{run}", f"demo_erp_{run}"
        self.log = work / "sql-to-redshift.log"
        self.env = {
            **{k: v for k, v in env.items() if not k.startswith("SQL_BACKUP_")},
            "SQL_TO_REDSHIFT_BACKUP_PREFIX": env["SQL_BACKUP_BACKUP_PREFIX"],
            "SQL_TO_REDSHIFT_DATABASE": stack.erp.database,
            "SQL_TO_REDSHIFT_SOURCE_SCHEMA": self.source_schema,
            "SQL_TO_REDSHIFT_RAW_SCHEMA": self.raw,
            "SQL_TO_REDSHIFT_MODEL_SCHEMA": self.models,
            "SQL_TO_REDSHIFT_COMPLETED_TOPIC": env["SQL_BACKUP_COMPLETED_TOPIC"],
            "SQL_TO_REDSHIFT_GROUP_ID": f"demo-{run}-sql-to-redshift",
            "SQL_TO_REDSHIFT_SESSION_TIMEOUT_MS": "6000",
            "SQL_TO_REDSHIFT_HEALTH__HOST": "127.0.0.1",
            "SQL_TO_REDSHIFT_HEALTH__PORT": "0",
            "SQL_TO_REDSHIFT_LOGGING__LEVEL": "INFO",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "indutech_sql_to_redshift", "run"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=out,
            )
        say(
            f"   sql-to-redshift (pid {self.process.pid}) consumes "
            f"{self.env['SQL_TO_REDSHIFT_COMPLETED_TOPIC']} → warehouse {self.raw}, {self.models}"
        )

    def heads(self) -> dict[str, date]:
        try:
            found = asyncio.run(
                fetch(self.stack.warehouse, f"SELECT source_table, day FROM {self.raw}._load_state")  # noqa: S608 - the demo's own schema
            )
        except asyncpg.PostgresError:  # the worker has not created its ledger yet
            return {}
        return {row["source_table"]: row["day"] for row in found}

    def wait(self, day: date) -> bool:
        """Until every table's head is ``day`` (or the timeout, or the worker died)."""
        started = time.monotonic()
        heads: dict[str, date] = {}
        while time.monotonic() - started < LOAD_TIMEOUT_S:
            heads = self.heads()
            if len(heads) == len(TABLES) and all(d == day for d in heads.values()):
                break
            if self.process is None or self.process.poll() is not None:
                break
            time.sleep(0.5)
        done = sum(d == day for d in heads.values())
        say(
            f"   sql-to-redshift: {done}/{len(TABLES)} tables loaded up to {day} "
            f"({time.monotonic() - started:.1f} s after the restore)"
        )
        return done == len(TABLES)

    def stop(self) -> int:
        if self.process is None:
            return -1
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        say(f"   sql-to-redshift: SIGTERM → drained and exited {code}")
        return code

    def verify(self) -> bool:
        done = subprocess.run(
            [sys.executable, "-m", "indutech_sql_to_redshift", "verify"],
            cwd=REPO_ROOT,
            env=self.env | {"SQL_TO_REDSHIFT_LOGGING__LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for line in done.stdout.splitlines():
            say(f"     {line}")
        if done.returncode != 0:
            say(f"   sql-to-redshift verify exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return done.returncode == 0


async def totals(
    settings: WarehouseSettings, schema: str, table: str, money: list[str]
) -> tuple[Any, ...]:
    """Rows and the exact sum of each money column."""
    sums = "".join(f", SUM({c})" for c in money)
    found = await fetch(settings, f"SELECT COUNT(*){sums} FROM {schema}.{table}")  # noqa: S608 - the demo's own names
    return tuple(found[0])


async def money_columns(settings: WarehouseSettings, schema: str, table: str) -> list[str]:
    found = await fetch(
        settings,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 "
        "AND table_name = $2 AND data_type = 'numeric' ORDER BY ordinal_position",
        schema,
        table,
    )
    return [row[0] for row in found]


ORDER_LINES_JOINED = (
    "SELECT COUNT(*), SUM(l.amount) FROM {s}.order_lines AS l JOIN {s}.orders AS o "
    "ON o.id = l.order_id"
)


def reconcile(stack: StackSettings, loader: Loader) -> bool:
    """Every staged table against the source (rows, exact money totals), and the order-line
    fact against the source's order lines joined with their orders."""
    erp = stack.warehouse.model_copy(update={"database": stack.erp.database})
    same = True
    for table in TABLES:
        money = asyncio.run(money_columns(erp, loader.source_schema, table))
        source = asyncio.run(totals(erp, loader.source_schema, table, money))
        loaded = asyncio.run(totals(stack.warehouse, loader.raw, table, money))
        equal = source == loaded
        same &= equal
        sums = ", ".join(f"{c} {v}" for c, v in zip(money, loaded[1:], strict=True))
        say(f"     {table}: {loaded[0]:,} rows{', ' if sums else ''}{sums}; source equal: {equal}")
    source_fact = asyncio.run(fetch(erp, ORDER_LINES_JOINED.format(s=loader.source_schema)))[0]
    fact = asyncio.run(
        fetch(stack.warehouse, f"SELECT COUNT(*), SUM(amount) FROM {loader.models}.fact_order_line")  # noqa: S608 - the demo's own schema
    )[0]
    equal = tuple(fact) == tuple(source_fact)
    same &= equal
    say(f"     fact_order_line: {fact[0]:,} rows, amount {fact[1]}; source joined equal: {equal}")
    return same


def show_models(stack: StackSettings, loader: Loader, full_day: date, delta_day: date) -> bool:
    """A few order-line fact rows, and the SCD2 history of a customer the delta changed:
    two versions, the first closed on the delta's day, the second current from it."""
    rows = asyncio.run(
        fetch(
            stack.warehouse,
            "SELECT order_id, line_no, order_date, order_status, customer_code, region, "  # noqa: S608 - the demo's own schema
            f"product_sku, qty, amount, currency FROM {loader.models}.fact_order_line "
            "WHERE customer_id = $1 ORDER BY order_id, line_no LIMIT 5",
            CHANGED_CUSTOMER,
        )
    )
    say(f"   {loader.models}.fact_order_line, customer {CHANGED_CUSTOMER}'s first lines:")
    say(
        f"     {'order':>5} {'line':>4} {'date':<10} {'status':<9} {'customer':<9} {'region':<6} "
        f"{'product':<8} {'qty':>8} {'amount':>10} cur"
    )
    for r in rows:
        say(
            f"     {r[0]:>5} {r[1]:>4} {r[2]!s:<10} {r[3]:<9} {r[4]:<9} {r[5]:<6} {r[6]:<8} "
            f"{r[7]:>8} {r[8]:>10} {r[9]}"
        )
    history = asyncio.run(
        fetch(
            stack.warehouse,
            "SELECT customer_sk, email, credit_limit, valid_from, valid_to, is_current "  # noqa: S608 - the demo's own schema
            f"FROM {loader.models}.dim_customer WHERE customer_id = $1 ORDER BY valid_from",
            CHANGED_CUSTOMER,
        )
    )
    say(f"   {loader.models}.dim_customer, customer {CHANGED_CUSTOMER} (changed by the delta):")
    say(
        f"     {'customer_sk':<12} {'email':<16} {'credit':>8} {'valid_from':<10} "
        f"{'valid_to':<10} current"
    )
    for h in history:
        say(f"     {h[0][:11]}… {h[1] or '-':<16} {h[2]!s:>8} {h[3]!s:<10} {h[4]!s:<10} {h[5]}")
    shape = [(h[3], h[4], h[5]) for h in history]
    expected = [(full_day, delta_day, False), (delta_day, date(9999, 12, 31), True)]
    ok = bool(rows) and shape == expected
    say(f"   SCD2 history: two versions, closed and opened on {delta_day}: {ok}")
    return ok


def restore_and_compare(
    stack: StackSettings,
    env: dict[str, str],
    *,
    schema: str,
    restore_schema: str,
    day: date,
    work: Path,
) -> bool:
    """sql-backup's restore of every table as of ``day``, compared with the source row for row."""
    say(f"-- restore every table as of {day} into the warehouse, compare with the source")
    erp = stack.warehouse.model_copy(update={"database": stack.erp.database})
    same = True
    for table in TABLES:
        sql_backup(
            env,
            "restore",
            "--table",
            f"{schema}.{table}",
            "--date",
            day.isoformat(),
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
    return same


def warehouse_demo(stack: StackSettings, loader: Loader, full_day: date, delta_day: date) -> bool:
    """Flow 5's end: both nights loaded, the worker drained, verify, the reconciliation with
    the source, and the models shown."""
    say("== sql-to-redshift: the backup's announcements → warehouse, staged and modelled")
    started = time.monotonic()
    loaded = loader.wait(delta_day)
    drained = loader.stop() == 0
    say("-- verify: each table's last night, rows and money totals against its ledger")
    verified = loaded and loader.verify()
    say("-- reconciliation: the warehouse against the source ERP (rows, exact money totals)")
    reconciled = loaded and reconcile(stack, loader)
    say(f"   reconciliation: warehouse equals the source: {reconciled}")
    history = loaded and show_models(stack, loader, full_day, delta_day)
    # the worker loads while sql-backup runs: what the demo waits for is this tail
    say(f"   ({time.monotonic() - started:.1f} s after the restore: drain, verify, checks)")
    return loaded and drained and verified and reconciled and history


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
    loader = Loader(stack, run, work, env)
    try:
        loader.start()
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
        same = restore_and_compare(
            stack, env, schema=schema, restore_schema=restore_schema, day=delta_day, work=work
        )
        flow5 = warehouse_demo(stack, loader, full_day, delta_day)
        return same and flow5 and codes == [0] * REPLICAS and parts == published
    finally:
        for replica in replicas:
            if replica.poll() is None:  # the demo failed or timed out around it
                replica.kill()
                replica.wait()
        if loader.process is not None and loader.process.poll() is None:
            loader.process.kill()
            loader.process.wait()
        asyncio.run(drop_schemas(stack, schema, restore_schema, loader.raw, loader.models))
        asyncio.run(delete_topics(stack.kafka, [work_topic, completed_topic]))
