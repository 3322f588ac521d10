"""The delta scheduler: plans a delta of every selected table each day (run one of these)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from indutech_common.kafka import require_topics
from indutech_common.lifecycle import Worker
from indutech_common.retry import Backoff
from indutech_common.s3 import create_s3_client
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.engine import BackupMetrics, Engine
from indutech_sql_backup.planning import contract_topics, publish_plans

PLANNING_BACKOFF = Backoff(initial_s=30.0, max_s=900.0)


def next_run(now: datetime, at_utc: str) -> datetime:
    hour, minute = (int(part) for part in at_utc.split(":"))
    candidate = now.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return candidate if candidate > now else candidate + timedelta(days=1)


class DeltaScheduler(Worker[SqlBackupSettings]):
    """Plans a delta of every selected table each day at ``delta_at_utc`` (run one of these)."""

    name = "sql-backup-scheduler"

    async def startup(self) -> None:
        assert self.settings.kafka is not None  # noqa: S101 - checked by the CLI
        # at start, not at the first delta hours later: a missing topic is found at deploy
        await require_topics(self.settings.kafka, contract_topics(self.settings), worker=self.name)
        self.s3 = await self.enter("s3", create_s3_client(self.settings.s3))
        self.backup_metrics = BackupMetrics(self.metrics)

    async def main_loop(self) -> None:
        while not self.should_exit.is_set():
            due = next_run(datetime.now(UTC), self.settings.delta_at_utc)
            self.log.info("next_delta", at=due.isoformat())
            if await self.sleep_or_exit((due - datetime.now(UTC)).total_seconds()):
                return
            # A failed planning retries the same day with backoff: waiting for tomorrow
            # would lose nothing (the next delta starts at the last position) but
            # would leave a day without its restore point.
            delays = PLANNING_BACKOFF.delays()
            while True:
                engine = Engine(self.settings, self.s3, metrics=self.backup_metrics)
                try:
                    tables = await engine.discover()
                    count = await publish_plans(
                        self.settings, engine, tables, kind="delta", day=due.date()
                    )
                    break
                except Exception:
                    self.log.exception("delta_planning_failed", day=due.date().isoformat())
                    self.metrics.error("delta_planning")
                if await self.sleep_or_exit(next(delays)):
                    return
            self.log.info(
                "delta_planned",
                work_items=count,
                tables=len(tables),
                skipped=[s.table for s in engine.skipped],
            )
            # Skipped tables are retried tomorrow (their causes need a person: no key, a
            # schema change refused, no full yet); until then, no success when they count.
            if not engine.skipped or not self.settings.fail_on_skipped_table:
                self.metrics.record_success(stream="plans", count=count, last_event_time=None)
