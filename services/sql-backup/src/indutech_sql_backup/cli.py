"""``sql-backup``: back up, plan, serve as a worker replica or the scheduler, verify, restore.

The demo ERP is made by ``python -m indutech_devtools.erp`` (dev tools, not this package).

Exit codes: 0 done; 1 failed (the message says what to do next); 2 bad
configuration or usage; 3 worker drain deadline exceeded; 4 verify found a mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, date, datetime
from typing import Any

import uvloop

from indutech_common.cli import EXIT_CONFIG, worker_main
from indutech_common.errors import IndutechError
from indutech_common.lifecycle import Worker
from indutech_common.logging import configure_logging, register_secrets_of, scrub
from indutech_common.s3 import create_s3_client
from indutech_common.schemas.sql_backup import Manifest
from indutech_sql_backup.announcing import announce_once
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.dialects import MssqlDialect, PostgresDialect, TableRef
from indutech_sql_backup.engine import Engine
from indutech_sql_backup.planning import publish_plans, start_producer
from indutech_sql_backup.progress import Progress
from indutech_sql_backup.restore import Restorer
from indutech_sql_backup.scheduling import DeltaScheduler
from indutech_sql_backup.sources import OdbcSource
from indutech_sql_backup.verify import verify
from indutech_sql_backup.worker import SqlBackupWorker

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_MISMATCH = 4


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _table(text: str) -> TableRef:
    try:
        return TableRef.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("worker", help="consume sql.backup-work.v1 as one replica (default)")
    discover = commands.add_parser("discover", help="list the tables a backup would take")
    discover.add_argument("--table", action="append", default=[], type=str)
    for name, text in (
        ("backup", "plan and run a backup in this process (parallel chunks)"),
        ("plan", "plan a backup and publish its chunks to sql.backup-work.v1"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--kind", choices=["full", "delta"], default="full")
        command.add_argument("--date", type=_day, default=None, help="run day (default: today UTC)")
        command.add_argument(
            "--table", action="append", default=[], help="schema.table (default: all selected)"
        )
    verify = commands.add_parser("verify", help="check parts against manifests and the source")
    verify.add_argument("--table", required=True, type=_table)
    verify.add_argument("--date", type=_day, default=None)
    verify.add_argument("--no-source", action="store_true", help="check S3 objects only")
    restore = commands.add_parser("restore", help="rebuild a table as of a day into a target")
    restore.add_argument("--table", required=True, type=_table, help="schema.table backed up")
    restore.add_argument("--date", type=_day, default=None, help="as of this day (default: latest)")
    restore.add_argument("--target", required=True, type=_table, help="schema.table to create")
    restore.add_argument("--replace", action="store_true", help="drop the target table first")
    prepare = commands.add_parser("prepare-source", help="install or print change capture DDL")
    prepare.add_argument("--table", action="append", default=[], required=True, type=_table)
    prepare.add_argument("--key", action="append", default=[], help="key column (no PK)")
    commands.add_parser("schedule", help="plan a delta every day at DELTA_AT_UTC")


def today() -> date:
    return datetime.now(UTC).date()


async def with_engine(
    settings: SqlBackupSettings, body: Callable[[Engine], Awaitable[int]], *, progress: bool
) -> int:
    async with create_s3_client(settings.s3) as s3:
        engine = Engine(settings, s3, progress=Progress() if progress else None)
        return await body(engine)


async def announce(
    settings: SqlBackupSettings, engine: Engine, results: list[tuple[Manifest, bool]]
) -> None:
    """Announce every manifest of a run in this process that is not announced yet."""
    if not results:
        return
    producer = await start_producer(settings)
    try:
        for manifest, created in results:
            await announce_once(producer, engine, manifest, written_here=created)
    finally:
        await producer.stop()


def report_skipped(settings: SqlBackupSettings, engine: Engine, command: str) -> int:
    """List the tables left out of the run on stderr; the exit code the setting asks for."""
    for skipped in engine.skipped:
        print(f"sql-backup {command}: {scrub(skipped.line())}", file=sys.stderr)
    if not engine.skipped:
        return EXIT_OK
    tables = len({s.table for s in engine.skipped})
    if settings.fail_on_skipped_table:
        print(
            f"sql-backup {command}: {tables} table(s) skipped, the others done: failing the run "
            "(SQL_BACKUP_FAIL_ON_SKIPPED_TABLE=true). Fix each cause above and run it again.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


async def cmd_backup(settings: SqlBackupSettings, args: argparse.Namespace) -> int:
    async def body(engine: Engine) -> int:
        tables = await engine.discover(args.table)
        results = await engine.backup(tables, kind=args.kind, day=args.date or today())
        for manifest, created in results:
            state = "written" if created else "already complete"
            print(
                f"{manifest.plan.qualified}: {manifest.rows:,} rows in {len(manifest.parts)} "
                f"part(s), {manifest.bytes / 1e6:.1f} MB ({state})"
            )
        if settings.kafka is not None:
            await announce(settings, engine, results)
        return report_skipped(settings, engine, "backup")

    return await with_engine(settings, body, progress=True)


async def cmd_plan(settings: SqlBackupSettings, args: argparse.Namespace) -> int:
    async def body(engine: Engine) -> int:
        tables = await engine.discover(args.table)
        published = await publish_plans(
            settings, engine, tables, kind=args.kind, day=args.date or today()
        )
        print(f"published {published} work item(s) to {settings.work_topic}")
        return report_skipped(settings, engine, "plan")

    return await with_engine(settings, body, progress=False)


async def cmd_discover(settings: SqlBackupSettings, args: argparse.Namespace) -> int:
    async def body(engine: Engine) -> int:
        for table in await engine.discover(args.table):
            print(
                f"{table.ref.qualified}: key ({', '.join(table.key)}) from {table.key_from}, "
                f"change column {table.watermark or 'none (full backups only)'}, "
                f"{len(table.columns)} columns"
            )
        return report_skipped(settings, engine, "discover")

    return await with_engine(settings, body, progress=False)


async def cmd_verify(settings: SqlBackupSettings, args: argparse.Namespace) -> int:
    async def body(engine: Engine) -> int:
        report = await verify(engine, args.table, day=args.date, source=not args.no_source)
        for line in report.lines:
            print(line)
        return EXIT_OK if report.ok else EXIT_MISMATCH

    return await with_engine(settings, body, progress=False)


async def cmd_restore(settings: SqlBackupSettings, args: argparse.Namespace) -> int:
    async with create_s3_client(settings.s3) as s3:
        restorer = Restorer(settings, s3, progress=Progress())
        report = await restorer.restore(
            args.table, day=args.date, target=args.target, replace=args.replace
        )
    print(
        f"restored {report.table} as of {report.day or 'latest'} into {report.target}: "
        f"{report.rows:,} rows from {' + '.join(report.runs)} in {report.seconds:.2f}s "
        f"({report.rows_per_s:,.0f} rows/s, {report.bytes_read / 1e6:.1f} MB read)"
    )
    return EXIT_OK


async def cmd_prepare(settings: SqlBackupSettings, args: argparse.Namespace) -> int:
    if settings.erp.dialect == "mssql":
        dialect = MssqlDialect()
        for ref in args.table:
            for statement in dialect.enable_change_tracking(settings.erp.database, ref):
                print(statement + ";")
        print("-- run the statements above as a DBA on the SQL Server (nothing was executed)")
        return EXIT_OK
    postgres = PostgresDialect()
    engine_source = OdbcSource(settings.erp, postgres)
    async with create_s3_client(settings.s3) as s3:
        engine = Engine(settings, s3)
        tables = (
            await engine.discover([ref.qualified for ref in args.table]) if not args.key else []
        )
        if engine.skipped:
            report_skipped(settings, engine, "prepare-source")
            return EXIT_FAILED
    statements: list[str] = []
    for ref in args.table:
        key = tuple(args.key) or next(t.key for t in tables if t.ref == ref)
        statements += postgres.install_change_capture(ref, key)
    await asyncio.to_thread(engine_source.execute, statements)
    print(f"change capture installed on {', '.join(r.qualified for r in args.table)}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[SqlBackupSettings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "backup": cmd_backup,
    "plan": cmd_plan,
    "discover": cmd_discover,
    "verify": cmd_verify,
    "restore": cmd_restore,
    "prepare-source": cmd_prepare,
}


def run(settings: SqlBackupSettings, args: argparse.Namespace) -> int:
    command = args.command or "worker"
    needs_kafka = command in ("worker", "plan", "schedule")
    if needs_kafka and settings.kafka is None:
        print(
            f"sql-backup {command}: needs Kafka: set SQL_BACKUP_KAFKA__BOOTSTRAP_SERVERS, "
            "__USERNAME and __PASSWORD (or INDUTECH_KAFKA__*).",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if command in ("worker", "schedule"):
        worker: Worker[SqlBackupSettings] = (
            SqlBackupWorker(settings) if command == "worker" else DeltaScheduler(settings)
        )
        return worker.run()
    configure_logging(
        level=settings.logging.level, fmt=settings.logging.format, service="sql-backup"
    )
    register_secrets_of(settings)
    try:
        return uvloop.run(COMMANDS[command](settings, args))
    except IndutechError as exc:
        print(f"sql-backup {command}: {scrub(str(exc))}", file=sys.stderr)
        return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    return worker_main(
        prog="sql-backup",
        description=(
            "Flow 4: the ERP database (SQL Server; PostgreSQL locally) to S3 as Parquet: full "
            "snapshots in key-range chunks, nightly deltas with deletes, verified manifests, "
            "restore as of a day. Without a command it runs as a worker replica."
        ),
        settings_cls=SqlBackupSettings,
        run=run,
        argv=argv,
        add_arguments=add_arguments,
    )


if __name__ == "__main__":
    sys.exit(main())
