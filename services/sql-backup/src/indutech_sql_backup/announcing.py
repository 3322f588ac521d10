"""Announcing a finished run on ``sql.backup-completed.v1`` (at least once, deduplicated by
its ``_announced.json`` marker and, for consumers, by the manifest URL as event id)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from indutech_common.schemas.sql_backup import BackupCompleted, BackupDir, Manifest
from indutech_sql_backup.engine import Engine
from indutech_sql_backup.errors import AnnouncementInterruptedError

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

ANNOUNCE_POLL_S = 0.5

_log = structlog.get_logger(__name__)


def completed_message(engine: Engine, manifest: Manifest) -> BackupCompleted:
    plan = manifest.plan
    key = BackupDir.of(engine.settings.backup_prefix, plan).manifest
    return BackupCompleted(
        event_id=engine.store.url(key),
        event_time=manifest.completed_at,
        kind=plan.kind,
        database=plan.database,
        table=plan.qualified,
        day=plan.day,
        manifest=engine.store.url(key),
        rows=manifest.rows,
        bytes=manifest.bytes,
        parts=len(manifest.parts),
        position_from=plan.position_from,
        position_to=plan.position_to,
    )


async def announce_once(
    producer: AIOKafkaProducer,
    engine: Engine,
    manifest: Manifest,
    *,
    written_here: bool,
    should_exit: asyncio.Event | None = None,
) -> bool:
    """Send sql.backup-completed.v1 for ``manifest`` unless its ``_announced.json`` exists.

    The marker is written after the send, so a crash in between sends it again (consumers
    dedupe by event_id, the manifest URL); a crash between the manifest and the send no
    longer loses the announcement: whoever handles a redelivered chunk of the finished
    plan sends it. A replica that did not write the manifest first gives its writer
    ``announce_grace_s`` to mark it, so two replicas finishing the last chunks together
    do not both announce. Returns whether this call sent it.
    """
    settings = engine.settings
    marker = BackupDir.of(settings.backup_prefix, manifest.plan).announced
    if not written_here:
        grace_ends = manifest.completed_at.timestamp() + settings.announce_grace_s
        while True:
            if await engine.store.get_bytes(marker) is not None:
                return False
            left = grace_ends - time.time()
            if left <= 0:
                break
            if should_exit is not None and should_exit.is_set():
                raise AnnouncementInterruptedError("shutting down before the announcement")
            await asyncio.sleep(min(left, ANNOUNCE_POLL_S))
    message = completed_message(engine, manifest)
    await producer.send_and_wait(
        settings.completed_topic, message.model_dump_json().encode(), key=manifest.plan.topic_key
    )
    sent_at = time.time()
    await engine.store.put(marker, message)
    if engine.metrics is not None:
        # only the replica that sent it: one duration per run, not one per replica
        engine.metrics.announced(manifest.plan, at=sent_at)
    _log.info("backup_announced", table=message.table, day=str(message.day), kind=message.kind)
    return True
