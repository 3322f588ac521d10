"""sql-backup replicas: one consumer group draining ``sql.backup-work.v1``.

``publish_plans`` (the ``plan`` command) writes each table's ``_plan.json`` and
sends one work item per chunk not yet verified. Items are keyed by table (the
contract) but spread over the topic's partitions by chunk number, so the
chunks of one large table are shared by every replica.

A replica keeps up to ``parallel_chunks`` items running at once (arrow-odbc
reads in threads): a slot that frees takes the next item at once, without
waiting for the other running chunks. A partition's offset is committed only
after every item before it is uploaded, verified and recorded. A killed replica's
uncommitted items are redelivered: finished ones are skipped by their record,
unfinished ones are redone under the same part name. Whoever finishes a
table's last chunk writes the manifest and announces it on
``sql.backup-completed.v1``.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from indutech_common.kafka import (
    create_consumer,
    create_producer,
    ping_producer,
    require_topics,
    start_client,
    stop_client,
)
from indutech_common.lifecycle import Worker
from indutech_common.retry import Backoff
from indutech_common.s3 import create_s3_client, ping_bucket
from indutech_common.schemas.sql_backup import BackupCompleted, BackupEvent
from indutech_common.schemas.topics import Topics
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.dialects import TableInfo
from indutech_sql_backup.engine import BackupMetrics, Engine
from indutech_sql_backup.errors import AnnouncementInterruptedError, PlanMismatchError
from indutech_sql_backup.sinks import BackupDir, Manifest, Plan

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import ConsumerRecord

POLL_TIMEOUT_MS = 500
BUSY_POLL_TIMEOUT_MS = 100  # a free slot while others run: look for work, then check them
RETRY_DELAY_S = 5.0
ANNOUNCE_POLL_S = 0.5
MAX_ANNOUNCE_LOCKS = 1000

_log = structlog.get_logger(__name__)


class WorkItem(BackupEvent):
    """One chunk to back up (value of ``sql.backup-work.v1``, key = table)."""

    chunk: int
    chunks: int
    plan_id: str
    plan_key: str


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a task's outcome as seen (asyncio logs exceptions nobody retrieved)."""
    if not task.cancelled():
        task.exception()


def _table_key(plan: Plan) -> bytes:
    return f"{plan.database}.{plan.schema_name}.{plan.table}".encode()


def work_items(engine: Engine, plan: Plan, done: set[int]) -> list[WorkItem]:
    directory = BackupDir.of(engine.settings.backup_prefix, plan)
    return [
        WorkItem(
            event_id=f"{plan.plan_id}:{spec.chunk:05d}",
            event_time=plan.created_at,
            kind=plan.kind,
            database=plan.database,
            table=f"{plan.schema_name}.{plan.table}",
            day=plan.day,
            chunk=spec.chunk,
            chunks=len(plan.chunks),
            plan_id=plan.plan_id,
            plan_key=directory.plan,
        )
        for spec in plan.chunks
        if spec.chunk not in done
    ]


def completed_message(engine: Engine, manifest: Manifest) -> BackupCompleted:
    plan = manifest.plan
    key = BackupDir.of(engine.settings.backup_prefix, plan).manifest
    return BackupCompleted(
        event_id=engine.store.url(key),
        event_time=manifest.completed_at,
        kind=plan.kind,
        database=plan.database,
        table=f"{plan.schema_name}.{plan.table}",
        day=plan.day,
        manifest=engine.store.url(key),
        rows=manifest.rows,
        bytes=manifest.bytes,
        parts=len(manifest.parts),
        position_from=plan.position_from,
        position_to=plan.position_to,
    )


def contract_topics(settings: SqlBackupSettings) -> dict[str, str]:
    """The topics every sql-backup process checks at start: configured name → contract."""
    return {
        settings.work_topic: Topics.BACKUP_WORK,
        settings.completed_topic: Topics.BACKUP_COMPLETED,
    }


async def _producer(settings: SqlBackupSettings) -> AIOKafkaProducer:
    assert settings.kafka is not None  # noqa: S101 - checked by the CLI
    await require_topics(settings.kafka, contract_topics(settings), worker="sql-backup")
    producer = create_producer(settings.kafka)
    await start_client(producer, settings.kafka)
    return producer


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
        settings.completed_topic, message.model_dump_json().encode(), key=_table_key(manifest.plan)
    )
    await engine.store.put_json(marker, message)
    _log.info("backup_announced", table=message.table, day=str(message.day), kind=message.kind)
    return True


async def announce(
    settings: SqlBackupSettings, engine: Engine, results: list[tuple[Manifest, bool]]
) -> None:
    """Announce every manifest of a run in this process that is not announced yet."""
    if not results:
        return
    producer = await _producer(settings)
    try:
        for manifest, created in results:
            await announce_once(producer, engine, manifest, written_here=created)
    finally:
        await producer.stop()


async def publish_plans(
    settings: SqlBackupSettings,
    engine: Engine,
    tables: list[TableInfo],
    *,
    kind: Literal["full", "delta"],
    day: date,
) -> int:
    """Plan every table (or resume its unfinished plan) and publish the chunks not yet done."""
    producer = await _producer(settings)
    published = 0
    try:
        partitions = sorted(await producer.partitions_for(settings.work_topic) or {0})
        for table in tables:
            plan, status = await engine.plan(table, kind=kind, day=day)
            if status == "complete":
                manifest, _ = await engine.finalize(plan)
                if manifest is not None:  # announce again: the event id is stable
                    await producer.send_and_wait(
                        settings.completed_topic,
                        completed_message(engine, manifest).model_dump_json().encode(),
                        key=_table_key(plan),
                    )
                continue
            directory = BackupDir.of(settings.backup_prefix, plan)
            done = set(await engine.store.records(directory, plan.plan_id))
            futures = [
                await producer.send(
                    settings.work_topic,
                    item.model_dump_json().encode(),
                    key=_table_key(plan),
                    partition=partitions[item.chunk % len(partitions)],
                )
                for item in work_items(engine, plan, done)
            ]
            await asyncio.gather(*futures)
            published += len(futures)
    finally:
        await producer.stop()
    return published


class SqlBackupWorker(Worker[SqlBackupSettings]):
    name = "sql-backup"

    def __init__(self, settings: SqlBackupSettings) -> None:
        super().__init__(settings)
        self.backup_metrics = BackupMetrics(self.metrics)
        self._stack = AsyncExitStack()
        self._idle_since = time.monotonic()
        self.chunks_done = 0
        self.chunks_written = 0
        # Items of one plan run concurrently: one announcement check at a time per plan.
        self._announcing: dict[str, asyncio.Lock] = {}

    async def startup(self) -> None:
        settings = self.settings
        assert settings.kafka is not None  # noqa: S101 - checked by the CLI
        s3 = await self._stack.enter_async_context(create_s3_client(settings.s3))
        bucket = settings.s3.backup_bucket
        self.health.register_ping("s3", lambda: ping_bucket(s3, bucket))
        self.engine = Engine(settings, s3, metrics=self.backup_metrics)
        await require_topics(settings.kafka, contract_topics(settings), worker=self.name)
        self.producer: AIOKafkaProducer = create_producer(settings.kafka)
        await start_client(self.producer, settings.kafka)
        self._stack.push_async_callback(stop_client, self.producer)
        self.health.register_ping("kafka", lambda: ping_producer(self.producer))
        self.consumer: AIOKafkaConsumer = create_consumer(
            settings.kafka,
            settings.work_topic,
            group_id=settings.group_id,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 4),
            max_poll_interval_ms=settings.max_poll_interval_ms,
        )
        await start_client(self.consumer, settings.kafka)
        self._stack.push_async_callback(stop_client, self.consumer)
        self.log.info(
            "consuming",
            topic=settings.work_topic,
            group_id=settings.group_id,
            parallel_chunks=settings.parallel_chunks,
            backup=f"s3://{bucket}/{settings.backup_prefix}sql-server/",
        )

    async def shutdown(self) -> None:
        await self._stack.aclose()
        engine: Engine | None = getattr(self, "engine", None)
        if engine is not None:
            engine.source.close()

    async def main_loop(self) -> None:
        slots = self.settings.parallel_chunks
        # Items in poll order per partition, with the task running each.
        pending: dict[TopicPartition, list[tuple[int, asyncio.Task[None]]]] = {}
        running: dict[tuple[str, bytes | None], asyncio.Task[None]] = {}
        try:
            while True:
                busy = {t for items in pending.values() for _, t in items if not t.done()}
                if busy:
                    self._idle_since = time.monotonic()
                failed = await self._commit_done(pending)
                if failed or self.should_exit.is_set():
                    if await self._settle(pending, busy, failed):
                        return
                    continue
                if len(busy) >= slots:
                    await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
                    continue
                batches = await self.consumer.getmany(
                    timeout_ms=BUSY_POLL_TIMEOUT_MS if busy else POLL_TIMEOUT_MS,
                    max_records=slots - len(busy),
                )
                records = [r for rs in batches.values() for r in rs]
                if records:
                    self._idle_since = time.monotonic()
                elif not busy and self._idle_expired():
                    return
                for record in records:
                    task = self._start(record, running)
                    tp = TopicPartition(record.topic, record.partition)
                    pending.setdefault(tp, []).append((record.offset, task))
        finally:
            left = [t for t in running.values() if not t.done()]
            for task in left:  # cancelled (drain deadline): the chunks are redone later
                task.cancel()
            if left:
                await asyncio.gather(*left, return_exceptions=True)

    async def _settle(
        self,
        pending: dict[TopicPartition, list[tuple[int, asyncio.Task[None]]]],
        busy: set[asyncio.Task[None]],
        failed: dict[TopicPartition, int],
    ) -> bool:
        """After a failure or an exit request: finish what is in hand and commit it, then
        redo from each first failure after a pause. True when the loop should return."""
        if busy:
            await asyncio.wait(busy)
        failed = {**await self._commit_done(pending), **failed}
        if not failed:
            return True
        for tp, offset in failed.items():
            self.consumer.seek(tp, offset)
        pending.clear()
        return await self.sleep_or_exit(RETRY_DELAY_S)

    def _idle_expired(self) -> bool:
        idle_exit = self.settings.idle_exit_s
        if idle_exit is None or time.monotonic() - self._idle_since <= idle_exit:
            return False
        self.log.info("idle_exit", chunks_done=self.chunks_done, chunks_written=self.chunks_written)
        return True

    def _start(
        self,
        record: ConsumerRecord[bytes, bytes],
        running: dict[tuple[str, bytes | None], asyncio.Task[None]],
    ) -> asyncio.Task[None]:
        """The task of a work item; the same item redelivered while it runs here (partitions
        taken away and given back) joins that run instead of writing the part twice at once."""
        key = (record.topic, record.value)
        task = running.get(key)
        if task is not None:
            return task
        started = time.perf_counter()
        task = asyncio.create_task(self._one(record))

        def finished(_: asyncio.Task[None]) -> None:
            running.pop(key, None)
            self.metrics.batch_duration.labels(self.name).observe(time.perf_counter() - started)

        task.add_done_callback(finished)
        running[key] = task
        return task

    async def _commit_done(
        self, pending: dict[TopicPartition, list[tuple[int, asyncio.Task[None]]]]
    ) -> dict[TopicPartition, int]:
        """Commit each partition up to its first unfinished item. A partition whose oldest
        finished item failed is dropped from ``pending`` (its later items are redone after
        the seek) and returned with that item's offset."""
        commit: dict[TopicPartition, int] = {}
        failed: dict[TopicPartition, int] = {}
        for tp, items in list(pending.items()):
            while items and items[0][1].done():
                offset, task = items[0]
                error = None if task.cancelled() else task.exception()
                if task.cancelled() or error is not None:
                    failed[tp] = offset
                    self.metrics.error(type(error).__name__ if error else "cancelled")
                    self.log.error(
                        "chunk_failed", partition=str(tp), offset=offset, error=str(error)
                    )
                    for _, later in items[1:]:  # their outcome no longer matters: retrieve it
                        later.add_done_callback(_retrieve)
                    del pending[tp]
                    break
                items.pop(0)
                commit[tp] = offset + 1
        if commit:
            try:
                await self.consumer.commit(commit)
            except (CommitFailedError, IllegalStateError) as exc:
                # Partitions moved meanwhile: the new owner skips what is recorded.
                self.log.warning("commit_lost_partition", error=str(exc))
                self.metrics.error("commit_failed")
        return failed

    async def _one(self, record: ConsumerRecord[bytes, bytes]) -> None:
        item = WorkItem.model_validate_json(record.value)
        try:
            plan = await self.engine.load_plan(item.plan_key, item.plan_id)
        except PlanMismatchError as exc:
            # A replaced or deleted plan: its items are obsolete, never a reason to stall.
            self.log.warning("obsolete_work_item", event_id=item.event_id, error=str(exc))
            self.metrics.error("obsolete_work_item")
            return
        result = await self.engine.run_chunk(plan, item.chunk)
        self.chunks_done += 1
        self.chunks_written += int(not result.skipped)
        manifest, created = await self.engine.finalize(plan)
        if manifest is not None:
            if len(self._announcing) > MAX_ANNOUNCE_LOCKS:  # a long-lived replica: forget idle ones
                self._announcing = {k: v for k, v in self._announcing.items() if v.locked()}
            async with self._announcing.setdefault(plan.plan_id, asyncio.Lock()):
                await announce_once(
                    self.producer,
                    self.engine,
                    manifest,
                    written_here=created,
                    should_exit=self.should_exit,
                )


PLANNING_BACKOFF = Backoff(initial_s=30.0, max_s=900.0)


def next_run(now: datetime, at_utc: str) -> datetime:
    hour, minute = (int(part) for part in at_utc.split(":"))
    candidate = now.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return candidate if candidate > now else candidate + timedelta(days=1)


class DeltaScheduler(Worker[SqlBackupSettings]):
    """Plans a delta of every selected table each day at ``delta_at_utc`` (run one of these)."""

    name = "sql-backup-scheduler"

    async def startup(self) -> None:
        self._stack = AsyncExitStack()
        self.s3 = await self._stack.enter_async_context(create_s3_client(self.settings.s3))

    async def shutdown(self) -> None:
        await self._stack.aclose()

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
                engine = Engine(self.settings, self.s3)
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
            self.metrics.record_success(stream="plans", count=count, last_event_time=None)
            self.log.info("delta_planned", work_items=count, tables=len(tables))
