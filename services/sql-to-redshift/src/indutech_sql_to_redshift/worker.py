"""sql-to-redshift: the lifecycle. Night planning is in ``nights``, applying in ``sinks``.

One unit of work is a poll of ``sql.backup-completed.v1``: every table it names (of the
configured database and schema) gets its pending nights applied, one transaction each,
then the offsets are committed. A table that cannot go on (a corrupt part, a missing night)
is logged and counted (``indutech_errors{kind}``, the seed's "errors > 0" alarm) and waits
for the next announcement or a ``load``; an outage of S3 or the warehouse is retried with
backoff and the poll is not committed until it is done.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from datetime import time as day_start

import asyncpg
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import Gauge, Histogram

from indutech_common.errors import ConfigError
from indutech_common.kafka import require_topics
from indutech_common.lifecycle import Worker
from indutech_common.retry import Backoff
from indutech_common.s3 import create_s3_client
from indutech_common.schemas import Topics
from indutech_sql_to_redshift.config import SqlToRedshiftSettings
from indutech_sql_to_redshift.errors import LoadError
from indutech_sql_to_redshift.loading import Loading
from indutech_sql_to_redshift.sinks import Applied, WarehouseSink, stager_for
from indutech_sql_to_redshift.sources import AnnouncementSource, BackupSource
from indutech_sql_to_redshift.sources.announcements import Announcements

# What an outage looks like: retried, never fatal.
OUTAGE_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    BotoCoreError,
    ClientError,
)


class SqlToRedshiftWorker(Worker[SqlToRedshiftSettings]):
    name = "sql-to-redshift"

    def __init__(self, settings: SqlToRedshiftSettings) -> None:
        super().__init__(settings)
        r = self.metrics.registry
        self.table_rows = Gauge(
            "indutech_sql_to_redshift_table_rows",
            "Rows of each staged table after its last night",
            ["worker", "table"],
            registry=r,
        )
        self.night_duration = Histogram(
            "indutech_sql_to_redshift_night_seconds",
            "Time to apply one night of one table (one transaction)",
            ["worker"],
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
            registry=r,
        )
        self.money_total = Gauge(
            "indutech_sql_to_redshift_money_total",
            "Sum of each decimal column of each staged table after its last night (reconciled "
            "against the backup inside the night's transaction)",
            ["worker", "table", "column"],
            registry=r,
        )
        self.lag = Gauge(
            "indutech_sql_to_redshift_lag_seconds",
            "Now minus the completion of the oldest announced backup not yet applied, per table "
            "(0 when caught up; the seed's alarm: > 30 min)",
            ["worker", "table"],
            registry=r,
        )
        # per table: when its oldest announced, not yet applied backup completed
        self.waiting: dict[str, float] = {}
        self.last_night = Gauge(
            "indutech_sql_to_redshift_last_night_timestamp_seconds",
            "The day (00:00 UTC) of the last night applied, per table",
            ["worker", "table"],
            registry=r,
        )

    async def startup(self) -> None:
        settings = self.settings
        if settings.kafka is None:
            raise ConfigError(
                "sql-to-redshift run consumes sql.backup-completed.v1: set the Kafka settings "
                "(INDUTECH_KAFKA__*)"
            )
        await require_topics(
            settings.kafka, {settings.completed_topic: Topics.BACKUP_COMPLETED}, worker=self.name
        )
        s3 = await self.enter("s3", create_s3_client(settings.s3))
        source = self.adopt(
            BackupSource(
                s3,
                bucket=settings.s3.backup_bucket,
                prefix=settings.backup_prefix,
                database=settings.database,
                schema=settings.source_schema,
            )
        )
        sink = self.adopt(
            await WarehouseSink.open(
                settings.warehouse,
                raw_schema=settings.raw_schema,
                model_schema=settings.model_schema,
                stager=stager_for(settings, s3),
            )
        )
        if settings.create_schema:
            await sink.migrate()
        self.loading = Loading(source, sink, tables=settings.tables, progress=self._applied)
        self.announcements = self.adopt(
            await AnnouncementSource.open(
                settings.kafka,
                settings.completed_topic,
                group_id=settings.group_id,
                session_timeout_ms=settings.session_timeout_ms,
            )
        )
        self.log.info(
            "consuming",
            topic=settings.completed_topic,
            group_id=settings.group_id,
            database=settings.database,
            schema=settings.source_schema,
            raw_schema=settings.raw_schema,
            model_schema=settings.model_schema,
        )

    async def main_loop(self) -> None:
        while not self.should_exit.is_set():
            batch = await self.announcements.read()
            self._update_lag()
            if not batch:
                continue
            for problem in batch.invalid:
                self.metrics.error("invalid_announcement")
                self.log.error("announcement_invalid", error=problem)
            tables = self._tables_of(batch)
            if not await self._load(tables):
                return  # asked to exit during an outage: the poll is read again next time
            await self.announcements.commit(batch.offsets)

    def _tables_of(self, batch: Announcements) -> list[str]:
        settings = self.settings
        prefix = f"{settings.source_schema}."
        tables = {
            c.table.removeprefix(prefix)
            for c in batch.completed
            if c.database == settings.database and c.table.startswith(prefix)
        }
        if settings.tables:
            tables &= set(settings.tables)
        for message in batch.completed:
            table = message.table.removeprefix(prefix)
            if table in tables:
                moment = message.event_time.timestamp()
                self.waiting[table] = min(self.waiting.get(table) or moment, moment)
        return sorted(tables)

    def _update_lag(self) -> None:
        now = time.time()
        for table, since in self.waiting.items():
            self.lag.labels(self.name, table).set(max(0.0, now - since) if since else 0.0)

    async def _load(self, tables: list[str]) -> bool:
        """Apply every pending night of ``tables``; False when asked to exit mid-outage."""
        delays = Backoff(initial_s=1.0, max_s=self.settings.retry_max_s).delays()
        remaining = list(tables)
        while remaining:
            table = remaining[0]
            try:
                await self.loading.load_table(table)
                self.waiting[table] = 0.0  # caught up with every backup of the table
            except LoadError as exc:
                self.metrics.error(exc.kind)
                # no traceback: the message says what is wrong and what to do
                self.log.error("table_blocked", table=table, kind=exc.kind, error=str(exc))  # noqa: TRY400
            except OUTAGE_ERRORS as exc:
                self.metrics.error("outage")
                delay = next(delays)
                self.log.warning(
                    "load_failed_retrying",
                    table=table,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 2),
                )
                if await self.sleep_or_exit(delay):
                    return False
                continue
            remaining.pop(0)
        return True

    def _applied(self, done: Applied) -> None:
        self.table_rows.labels(self.name, done.table).set(done.table_rows)
        for column, total in (done.totals.money if done.totals else {}).items():
            # a float for Prometheus; the exact decimal is in the ledger
            self.money_total.labels(self.name, done.table, column).set(float(total))
        self.night_duration.labels(self.name).observe(done.seconds)
        midnight = datetime.combine(done.night.day, day_start.min, tzinfo=UTC)
        self.last_night.labels(self.name, done.table).set(midnight.timestamp())
        self.metrics.record_success(stream=done.table, count=done.backup_rows, last_event_time=None)
