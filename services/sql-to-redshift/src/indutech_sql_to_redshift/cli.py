"""``sql-to-redshift``: run the worker, ``load`` a table, ``rebuild``, ``verify``, ``migrate``.

Exit codes: 0 done; 1 a table could not be loaded (the message says what to do next);
2 bad configuration or usage; 3 worker drain deadline exceeded; 4 ``verify`` found a table
behind its backup, blocked, or with other rows than its ledger recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date

from indutech_common.cli import EXIT_CONFIG, worker_main
from indutech_common.errors import ConfigError
from indutech_common.logging import configure_logging
from indutech_common.s3 import create_s3_client
from indutech_sql_to_redshift.config import IDENTIFIER, SqlToRedshiftSettings
from indutech_sql_to_redshift.errors import LoadError
from indutech_sql_to_redshift.loading import Loading, LoadReport
from indutech_sql_to_redshift.sinks import Applied, WarehouseSink, stager_for
from indutech_sql_to_redshift.sources import BackupSource
from indutech_sql_to_redshift.worker import SqlToRedshiftWorker

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BEHIND = 4


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _table(text: str) -> str:
    name = text.rsplit(".", 1)[-1]
    if not IDENTIFIER.match(name):
        raise argparse.ArgumentTypeError(f"{text!r} is not a lower-case table name")
    return name


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "run", help="consume sql.backup-completed.v1 and load each announced table (default)"
    )
    load = commands.add_parser(
        "load", help="apply the pending nights of one table (or all) up to a day, in order"
    )
    load.add_argument(
        "--table", type=_table, default=None, help="table (or schema.table); default: every table"
    )
    load.add_argument(
        "--date", type=_day, default=None, help="last night to apply (default: every night)"
    )
    rebuild = commands.add_parser(
        "rebuild", help="drop the staged tables, ledger and models and load everything again"
    )
    rebuild.add_argument(
        "--from",
        dest="start",
        type=_day,
        default=None,
        help="start at the newest full backup on or before this day (default: the first full)",
    )
    commands.add_parser(
        "verify", help="each table's last night, what is pending or blocked, rows vs ledger"
    )
    commands.add_parser("migrate", help="create the schemas, ledger and model tables, then exit")


@asynccontextmanager
async def opened(settings: SqlToRedshiftSettings) -> AsyncIterator[Loading]:
    """The backup and the warehouse as the commands other than ``run`` use them."""
    async with create_s3_client(settings.s3) as s3:
        source = BackupSource(
            s3,
            bucket=settings.s3.backup_bucket,
            prefix=settings.backup_prefix,
            database=settings.database,
            schema=settings.source_schema,
        )
        sink = await WarehouseSink.open(
            settings.warehouse,
            raw_schema=settings.raw_schema,
            model_schema=settings.model_schema,
            stager=stager_for(settings, s3),
        )
        try:
            if settings.create_schema:
                await sink.migrate()
            yield Loading(source, sink, tables=settings.tables, progress=_print_applied)
        finally:
            await sink.close()


def _print_applied(done: Applied) -> None:
    models = f"; refreshed {', '.join(done.models)}" if done.models else ""
    print(
        f"{done.table} {done.night}: {done.backup_rows:,} rows in the backup, "
        f"{done.table_rows:,} in the table ({done.seconds:.2f} s){models}",
        flush=True,
    )


def _report(report: LoadReport, command: str) -> int:
    for table, error in sorted(report.failed.items()):
        print(f"sql-to-redshift {command}: {table}: {error}", file=sys.stderr)
    print(f"{len(report.applied)} night(s) applied, {len(report.failed)} table(s) failed")
    return EXIT_OK if report.ok else EXIT_FAILED


async def load(settings: SqlToRedshiftSettings, table: str | None, day: date | None) -> int:
    async with opened(settings) as loading:
        if table is None:
            return _report(await loading.load_all(until=day), "load")
        try:
            applied = await loading.load_table(table, until=day)
        except LoadError as exc:
            print(f"sql-to-redshift load: {exc}", file=sys.stderr)
            return EXIT_FAILED
    print(f"{len(applied)} night(s) of {table} applied")
    return EXIT_OK


async def rebuild(settings: SqlToRedshiftSettings, start: date | None) -> int:
    async with opened(settings) as loading:
        return _report(await loading.rebuild(start=start), "rebuild")


async def verify(settings: SqlToRedshiftSettings) -> int:
    async with opened(settings) as loading:
        statuses = await loading.verify()
    for s in statuses:
        head = f"{s.head.day} {s.head.kind}" if s.head else "nothing loaded"
        rows = "" if s.totals is None else f", {s.totals.describe()}"
        behind = f", {len(s.pending)} night(s) pending" if s.pending else ""
        state = "ok" if s.ok else "NOT OK"
        print(f"{s.table}: {state}: {head}{rows}{behind}")
        if s.problem:
            print(f"  {s.problem}")
    return EXIT_OK if statuses and all(s.ok for s in statuses) else EXIT_BEHIND


async def migrate(settings: SqlToRedshiftSettings) -> int:
    async with opened(settings.model_copy(update={"create_schema": True})):
        pass
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    def run(settings: SqlToRedshiftSettings, args: argparse.Namespace) -> int:
        if args.command in (None, "run"):
            return SqlToRedshiftWorker(settings).run()
        configure_logging(
            level=settings.logging.level,
            fmt=settings.logging.format,
            service=SqlToRedshiftWorker.name,
        )
        try:
            if args.command == "load":
                return asyncio.run(load(settings, args.table, args.date))
            if args.command == "rebuild":
                return asyncio.run(rebuild(settings, args.start))
            if args.command == "verify":
                return asyncio.run(verify(settings))
            return asyncio.run(migrate(settings))
        except ConfigError as exc:
            print(f"sql-to-redshift: {exc}", file=sys.stderr)
            return EXIT_CONFIG

    return worker_main(
        prog="sql-to-redshift",
        description=(
            "Flow 5: the ERP backup in S3 (sql-backup's manifests and Parquet parts) into the "
            "warehouse: each table staged in erp_raw night by night, in order, one transaction "
            "per (table, night) with a ledger (a rerun changes nothing, a missing night stops "
            "the table), and the erp models (SCD2 dimensions, denormalised facts) refreshed "
            "in the same transaction."
        ),
        settings_cls=SqlToRedshiftSettings,
        run=run,
        argv=argv,
        add_arguments=_add_arguments,
    )


if __name__ == "__main__":
    sys.exit(main())
