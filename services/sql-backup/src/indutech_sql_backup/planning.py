"""Publishing plans: every chunk not yet done becomes a work item on ``sql.backup-work.v1``.

``publish_plans`` (the ``plan`` command and the delta scheduler) writes each table's
``_plan.json`` and sends one work item per chunk not yet verified. Items are keyed
by table (the contract) but spread over the topic's partitions by chunk number, so
the chunks of one large table are shared by every replica. A plan found complete is
announced again (the event id is stable: consumers dedupe).
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import TYPE_CHECKING

from indutech_common.kafka import create_producer, require_topics, start_client
from indutech_common.schemas.sql_backup import BackupDir, Kind, Plan, WorkItem
from indutech_common.schemas.topics import Topics
from indutech_sql_backup.announcing import completed_message
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.dialects import TableInfo
from indutech_sql_backup.engine import Engine

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer


def contract_topics(settings: SqlBackupSettings) -> dict[str, str]:
    """The topics every sql-backup process checks at start: configured name → contract."""
    return {
        settings.work_topic: Topics.BACKUP_WORK,
        settings.completed_topic: Topics.BACKUP_COMPLETED,
    }


async def start_producer(settings: SqlBackupSettings) -> AIOKafkaProducer:
    """A started producer, once the contract's topics are checked (the caller stops it)."""
    assert settings.kafka is not None  # noqa: S101 - checked by the CLI
    await require_topics(settings.kafka, contract_topics(settings), worker="sql-backup")
    producer = create_producer(settings.kafka)
    await start_client(producer, settings.kafka)
    return producer


def work_items(engine: Engine, plan: Plan, done: set[int]) -> list[WorkItem]:
    directory = BackupDir.of(engine.settings.backup_prefix, plan)
    return [
        WorkItem(
            event_id=f"{plan.plan_id}:{spec.chunk:05d}",
            event_time=plan.created_at,
            kind=plan.kind,
            database=plan.database,
            table=plan.qualified,
            day=plan.day,
            chunk=spec.chunk,
            chunks=len(plan.chunks),
            plan_id=plan.plan_id,
            plan_key=directory.plan,
        )
        for spec in plan.chunks
        if spec.chunk not in done
    ]


async def publish_plans(
    settings: SqlBackupSettings,
    engine: Engine,
    tables: list[TableInfo],
    *,
    kind: Kind,
    day: date,
) -> int:
    """Plan every table (or resume its unfinished plan) and publish the chunks not yet done."""
    producer = await start_producer(settings)
    published = 0
    try:
        partitions = sorted(await producer.partitions_for(settings.work_topic) or {0})
        for table in tables:
            planned = await engine.plan_or_skip(table, kind=kind, day=day)
            if planned is None:  # reported in engine.skipped; the other tables go on
                continue
            plan, status = planned
            if status == "complete":
                manifest, _ = await engine.finalize(plan)
                if manifest is not None:  # announce again: the event id is stable
                    await producer.send_and_wait(
                        settings.completed_topic,
                        completed_message(engine, manifest).model_dump_json().encode(),
                        key=plan.topic_key,
                    )
                continue
            directory = BackupDir.of(settings.backup_prefix, plan)
            if status == "resume":  # chunks given up on before are published again
                await engine.clear_failures(plan)
            done = set(await engine.store.records(directory, plan.plan_id))
            futures = [
                await producer.send(
                    settings.work_topic,
                    item.model_dump_json().encode(),
                    key=plan.topic_key,
                    partition=partitions[item.chunk % len(partitions)],
                )
                for item in work_items(engine, plan, done)
            ]
            await asyncio.gather(*futures)
            published += len(futures)
    finally:
        await producer.stop()
    return published
