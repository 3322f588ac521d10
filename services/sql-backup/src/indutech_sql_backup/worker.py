"""sql-backup replicas: one consumer group draining ``sql.backup-work.v1``.

Work items are published by ``planning.publish_plans`` (the ``plan`` command, the
delta scheduler). A replica keeps up to ``parallel_chunks`` items running at once
(arrow-odbc reads in threads): a slot that frees takes the next item at once, without
waiting for the other running chunks. A partition's offset is committed only
after every item before it is uploaded, verified and recorded. A killed replica's
uncommitted items are redelivered: finished ones are skipped by their record,
unfinished ones are redone under the same part name. Whoever finishes a
table's last chunk writes the manifest and announces it on
``sql.backup-completed.v1`` (``announcing``).

A work item that fails by itself (not by an outage: see ``environment_error``) is
tried ``max_attempts`` times, then dead-lettered with its reason: its chunk is
marked failed in S3 (the run gets no manifest until a rerun redoes it), an error
is counted, and the partition moves on. Outages are retried without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

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
from indutech_common.kafka.deadletter import DeadLetterWriter
from indutech_common.lifecycle import Worker
from indutech_common.logging import scrub
from indutech_common.s3 import create_s3_client, ping_bucket
from indutech_common.schemas.sql_backup import Plan, WorkItem
from indutech_common.schemas.topics import Topics
from indutech_sql_backup.announcing import announce_once
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.engine import BackupMetrics, Engine
from indutech_sql_backup.errors import PlanMismatchError, environment_error
from indutech_sql_backup.planning import contract_topics

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import ConsumerRecord

POLL_TIMEOUT_MS = 500
BUSY_POLL_TIMEOUT_MS = 100  # a free slot while others run: look for work, then check them
MAX_ANNOUNCE_LOCKS = 1000
DEAD_LETTER_REASON = "work_item_failed"

ItemRunner = Callable[["ConsumerRecord[bytes, bytes]"], Awaitable[None]]


class DeadLetters(Protocol):
    """What the worker needs of ``indutech_common.kafka.deadletter.DeadLetterWriter``."""

    async def send(
        self,
        value: bytes,
        *,
        reason: str,
        error: str,
        source: str,
        offset: int | str,
        key: bytes | None = None,
        extra_headers: Sequence[tuple[str, bytes]] = (),
    ) -> None: ...

    async def flush(self) -> None: ...


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a task's outcome as seen (asyncio logs exceptions nobody retrieved)."""
    if not task.cancelled():
        task.exception()


class SqlBackupWorker(Worker[SqlBackupSettings]):
    """One replica. ``run_item`` replaces what is done with each work item (default
    ``process_item``: run the chunk, finalise, announce); the slots, commits, retries and
    dead-lettering around it stay the same."""

    name = "sql-backup"

    def __init__(self, settings: SqlBackupSettings, *, run_item: ItemRunner | None = None) -> None:
        super().__init__(settings)
        self.run_item: ItemRunner = run_item or self.process_item
        # Failures of each item that failed by itself, by (topic, partition, offset): the
        # redelivery after the seek is the same offset. Per replica: a replica that takes
        # the partition over starts counting again.
        self.attempts: dict[tuple[str, int, int], int] = {}
        self.dead_lettered = 0
        self.backup_metrics = BackupMetrics(self.metrics)
        self._idle_since = time.monotonic()
        self.chunks_done = 0
        self.chunks_written = 0
        # Items of one plan run concurrently: one announcement check at a time per plan.
        self._announcing: dict[str, asyncio.Lock] = {}

    async def startup(self) -> None:
        settings = self.settings
        assert settings.kafka is not None  # noqa: S101 - checked by the CLI
        s3 = await self.enter("s3", create_s3_client(settings.s3))
        bucket = settings.s3.backup_bucket
        self.health.register_ping("s3", lambda: ping_bucket(s3, bucket))
        self.engine = Engine(settings, s3, metrics=self.backup_metrics)
        # Closers run last-registered first: the Kafka clients stop, then the ERP pool and
        # the S3 client go (no chunk reads or writes any more by then).
        source = self.engine.source
        self.add_closer("erp", lambda: asyncio.to_thread(source.close))
        topics = contract_topics(settings) | {settings.dead_letter_topic: Topics.DEAD_LETTER}
        await require_topics(settings.kafka, topics, worker=self.name)
        self.producer: AIOKafkaProducer = create_producer(settings.kafka)
        await start_client(self.producer, settings.kafka)
        self.add_closer("kafka_producer", lambda: stop_client(self.producer))
        self.dead_letters: DeadLetters = DeadLetterWriter(
            self.producer, metrics=self.metrics, topic=settings.dead_letter_topic
        )
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
        self.add_closer("kafka_consumer", lambda: stop_client(self.consumer))
        self.log.info(
            "consuming",
            topic=settings.work_topic,
            group_id=settings.group_id,
            parallel_chunks=settings.parallel_chunks,
            max_attempts=settings.max_attempts,
            dead_letter_topic=settings.dead_letter_topic,
            backup=f"s3://{bucket}/{settings.backup_prefix}sql-server/",
        )

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
        return await self.sleep_or_exit(self.settings.retry_delay_s)

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
        task = asyncio.create_task(self._attempt(record))

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

    async def _attempt(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """One try of an item. A failure of the item itself counts; at ``max_attempts`` the
        item is dead-lettered and ends well, so its offset is committed and the partition
        moves on. An outage's failures do not count (every item would fail the same)."""
        where = (record.topic, record.partition, record.offset)
        try:
            await self.run_item(record)
        except Exception as exc:
            if environment_error(exc):
                raise
            attempts = self.attempts[where] = self.attempts.get(where, 0) + 1
            self.log.warning(
                "work_item_attempt_failed",
                partition=record.partition,
                offset=record.offset,
                attempt=attempts,
                max_attempts=self.settings.max_attempts,
                error=scrub(str(exc))[:500],
            )
            if attempts < self.settings.max_attempts:
                raise
            await self._give_up(record, exc, attempts)
            self.attempts.pop(where, None)
        else:
            self.attempts.pop(where, None)

    async def _give_up(
        self, record: ConsumerRecord[bytes, bytes], exc: Exception, attempts: int
    ) -> None:
        """Mark the chunk of an item that failed ``attempts`` times as failed (so no manifest
        claims its run), dead-letter the item, count it, and say when its run ended
        incomplete. The marker comes first: if S3 is down the item is simply tried again
        later, with no dead letter sent twice."""
        error = scrub(f"{type(exc).__name__}: {exc}")
        item: WorkItem | None = None
        with contextlib.suppress(ValueError):  # malformed: dead-lettered as is, no chunk to mark
            item = WorkItem.model_validate_json(record.value)
        plan = await self._mark_failed(item, error, attempts) if item is not None else None
        headers: list[tuple[str, bytes]] = [("attempts", str(attempts).encode())]
        if item is not None:
            headers += [
                ("table", f"{item.database}.{item.table}".encode()),
                ("chunk", str(item.chunk).encode()),
                ("plan", item.plan_key.encode()),
            ]
        await self.dead_letters.send(
            record.value,
            reason=DEAD_LETTER_REASON,
            error=error,
            source=f"{record.topic}/{record.partition}",
            offset=record.offset,
            key=record.key,
            extra_headers=headers,
        )
        # Delivered before the offset moves past the item: a dead letter is never lost.
        await self.dead_letters.flush()
        self.dead_lettered += 1
        self.metrics.error("work_item_dead_lettered")
        self.log.error(
            "work_item_dead_lettered",
            table=item.table if item else None,
            chunk=item.chunk if item else None,
            day=str(item.day) if item else None,
            kind=item.kind if item else None,
            attempts=attempts,
            error=error[:500],
            dead_letter_topic=self.settings.dead_letter_topic,
            next_step="fix the cause, then run 'sql-backup plan' for that table and day "
            "again: it republishes the chunks not recorded",
        )
        if plan is not None:
            try:
                await self._report_incomplete(plan)
            except Exception as report_exc:  # the dead letter is out: never redo the item for this
                self.log.warning("incomplete_check_failed", error=scrub(str(report_exc))[:300])

    async def _mark_failed(self, item: WorkItem, error: str, attempts: int) -> Plan | None:
        """Write the chunk's failure marker; the plan, or None when there is none to mark (a
        replaced plan, an unreadable one: the dead letter still goes out)."""
        try:
            plan = await self.engine.load_plan(item.plan_key, item.plan_id)
            await self.engine.record_failure(
                plan,
                item.chunk,
                error,
                attempts=attempts,
                dead_letter_topic=self.settings.dead_letter_topic,
            )
        except Exception as exc:
            if environment_error(exc):
                raise
            self.log.warning(
                "failure_marker_not_written", event_id=item.event_id, error=scrub(str(exc))[:300]
            )
            return None
        return plan

    async def _report_incomplete(self, plan: Plan) -> None:
        """The run of ``plan`` ended without a manifest (chunks given up on): say so once."""
        failed = await self.engine.incomplete(plan)
        if failed is not None:
            self.log.error(
                "backup_incomplete",
                table=plan.qualified,
                kind=plan.kind,
                day=str(plan.day),
                failed_chunks=sorted(failed),
                reason="chunks were dead-lettered: no manifest, the run is not restorable; "
                "fix the cause and run 'sql-backup plan' for it again",
            )

    async def process_item(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Run a work item's chunk, then finalise (and announce) its plan when it was the
        last one."""
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
        if manifest is None:
            await self._report_incomplete(plan)
        else:
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
