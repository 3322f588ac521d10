# ruff: noqa: S608 - SQL built from the test's own quoted schema name and constants
"""A work item that fails every time (its table was dropped after planning) is tried
MAX_ATTEMPTS times by a real replica, then dead-lettered to Kafka with its reason; the other
table's items complete, the failed table's run has no manifest and says why, and a rerun
after the cause is fixed finishes the same run."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import date

import pytest
import structlog.testing
from aiokafka.structs import ConsumerRecord

from indutech_common.kafka import create_consumer, start_client
from indutech_common.s3 import create_s3_client
from indutech_common.schemas import Topics
from indutech_common.schemas.sql_backup import BackupDir, Plan
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.dialects import PostgresDialect
from indutech_sql_backup.engine import Engine
from indutech_sql_backup.planning import publish_plans
from indutech_sql_backup.sources import OdbcSource
from indutech_sql_backup.worker import SqlBackupWorker
from tests.integration.sql_backup.conftest import Erp, backup_keys, settings_for
from tests.support.kafka import temporary_topics
from tests.support.stack import StackSettings

DAY = date(2026, 8, 1)


async def run_sql(stack: StackSettings, *statements: str) -> None:
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, list(statements))


async def read_topic(
    stack: StackSettings, topic: str, *, at_least: int
) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = create_consumer(stack.kafka, topic, group_id=None)
    await start_client(consumer, stack.kafka)
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(found) < at_least:
            batches = await consumer.getmany(timeout_ms=500)
            found += [r for rs in batches.values() for r in rs]
        # Anything more (a duplicate) would arrive right after.
        batches = await consumer.getmany(timeout_ms=1000)
        found += [r for rs in batches.values() for r in rs]
    finally:
        await consumer.stop()
    return found


def assert_counted(worker: SqlBackupWorker) -> None:
    """One error of kind work_item_dead_lettered and one dead letter, in /metrics' terms."""
    registry = worker.metrics.registry
    labels = {"worker": "sql-backup", "kind": "work_item_dead_lettered"}
    assert registry.get_sample_value("indutech_errors_total", labels) == 1
    labels = {"worker": "sql-backup", "reason": "work_item_failed"}
    assert registry.get_sample_value("indutech_dead_lettered_records_total", labels) == 1


class TestPoisonItems:
    @pytest.mark.timeout(180)
    async def test_a_chunk_failing_every_time_is_dead_lettered_and_the_others_complete(
        self, stack: StackSettings, erp: Erp, unique: str
    ) -> None:
        s = f'"{erp.schema}"'
        create_fragile = [
            f"CREATE TABLE {s}.fragile (id integer PRIMARY KEY, v text)",
            f"INSERT INTO {s}.fragile SELECT i, 'f' || i FROM generate_series(1, 10) i",
        ]
        await run_sql(
            stack,
            f"CREATE SCHEMA {s}",
            f"CREATE TABLE {s}.good (id integer PRIMARY KEY, v text)",
            f"INSERT INTO {s}.good SELECT i, 'v' || i FROM generate_series(1, 200) i",
            *create_fragile,
        )
        dead_letters = f"test.{unique}.dead-letter"
        settings = settings_for(
            stack,
            erp,
            chunk_rows=40,
            max_attempts=3,
            retry_delay_s=0.2,
            idle_exit_s=3.0,
            dead_letter_topic=dead_letters,
        )
        async with (
            temporary_topics(stack.kafka, {dead_letters: Topics.DEAD_LETTER}),
            create_s3_client(stack.s3) as s3,
        ):
            engine = Engine(settings, s3)
            tables = await engine.discover()
            published = await publish_plans(settings, engine, tables, kind="full", day=DAY)
            by_name = {t.ref.name: t for t in tables}
            good = (await engine.plan(by_name["good"], kind="full", day=DAY))[0]
            fragile = (await engine.plan(by_name["fragile"], kind="full", day=DAY))[0]
            assert published == len(good.chunks) + len(fragile.chunks) == 6
            await run_sql(stack, f"DROP TABLE {s}.fragile")  # its chunk now fails every time

            worker = SqlBackupWorker(settings)
            with structlog.testing.capture_logs() as logs:
                assert await worker.serve(install_signal_handlers=False) == 0
            attempts = [e for e in logs if e["event"] == "work_item_attempt_failed"]
            assert [e["attempt"] for e in attempts] == [1, 2, 3]
            assert all("does not exist" in e["error"] for e in attempts)
            [letter] = await read_topic(stack, dead_letters, at_least=1)
            headers = dict(letter.headers)
            assert headers["reason"] == b"work_item_failed"
            assert (
                b'relation "' + erp.schema.encode() + b'.fragile" does not exist'
                in (headers["error"])
            )
            assert headers["attempts"] == b"3"
            assert headers["table"] == f"erp.{erp.schema}.fragile".encode()
            assert headers["source"] == f"{erp.work_topic}/{letter.partition}".encode()
            item = json.loads(letter.value)
            assert (item["plan_id"], item["chunk"]) == (fragile.plan_id, 0)
            assert letter.key == f"erp.{erp.schema}.fragile".encode()
            assert worker.dead_lettered == 1
            assert worker.chunks_written == len(good.chunks), "the other items all completed"
            assert_counted(worker)
            [incomplete] = [e for e in logs if e["event"] == "backup_incomplete"]
            assert incomplete["table"] == f"{erp.schema}.fragile"
            assert incomplete["failed_chunks"] == [0]
            keys = await backup_keys(stack, erp.prefix)
            good_dir = BackupDir.of(settings.backup_prefix, good)
            fragile_dir = BackupDir.of(settings.backup_prefix, fragile)
            assert good_dir.manifest in keys
            assert fragile_dir.manifest not in keys, "no manifest claims the failed run"
            assert fragile_dir.failure(0) in keys

            # Fixed: a rerun of the plan republishes the missing chunk and finishes the run.
            await run_sql(stack, *create_fragile)
            await rerun_finishes(stack, erp, settings, fragile)


async def rerun_finishes(
    stack: StackSettings, erp: Erp, settings: SqlBackupSettings, fragile: Plan
) -> None:
    async with create_s3_client(stack.s3) as s3:
        rerun = Engine(settings, s3)
        tables = await rerun.discover([f"{erp.schema}.fragile"])
        assert await publish_plans(settings, rerun, tables, kind="full", day=DAY) == 1
        second = SqlBackupWorker(settings)
        assert await second.serve(install_signal_handlers=False) == 0
        assert second.chunks_written == 1
        directory = BackupDir.of(settings.backup_prefix, fragile)
        keys = await backup_keys(stack, erp.prefix)
        assert directory.manifest in keys
        assert directory.failure(0) not in keys
        manifest = await rerun.store.manifest(directory.manifest)
    assert manifest is not None
    assert (manifest.plan.plan_id, manifest.rows) == (fragile.plan_id, 10)
