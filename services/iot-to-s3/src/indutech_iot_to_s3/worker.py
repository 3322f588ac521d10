"""iot-to-s3: the iot.* topics into the S3 lake as Parquet, every record exactly once.

The delivery protocol (per partition, one segment in flight at a time)
----------------------------------------------------------------------
1. Records are read ``read_committed`` and buffered in the partition's open
   *segment*: a contiguous offset range ``[start, end]`` with the valid records
   grouped by event-time hour (late events go to their own hour). Invalid
   records are held as the segment's dead letters and still count in the range.
2. Rotation (record count, buffered bytes, age, idleness, or the global memory
   cap) *seals* the segment and plans one object per hour, keyed
   ``{topic}+{partition}+{first offset of that hour in the segment}``.
3. Before any upload, the plan is written to S3 as an *intent*
   (``{lake_prefix}_state/iot-to-s3/intents/{topic}/{partition}/{start}.json``,
   created with ``If-None-Match: *``).
4. The objects are uploaded (SSE enforced by the common client; multipart when
   large); S3 failures are retried with backoff for as long as it takes.
5. Only then is ``end + 1`` committed for that partition, in one Kafka
   transaction with the segment's dead letters, by the partition's own
   transactional producer (``{group_id}.{topic}.{partition}``); then the intent
   is deleted (never before: it is what a replay needs until the commit).

On assignment a partition is paused until its recovery ran: its transactional
producer is started (which fences the previous owner's and ends its open
transaction), the committed offset ``C`` is read, the intents that end before
``C`` are deleted (committed, so done: a kill between commit and delete) and
any intent with ``end >= C`` is *replayed*: the same
offsets ``[start, end]`` are read again and sealed at exactly ``end`` whatever
the current rotation settings, which re-plans the same keys with the same
records (the plan is a pure function of the records), overwrites whatever part
of it was uploaded, and commits ``end + 1``. So a crash at any point (before
the intent, between intent and uploads, mid-upload, between upload and commit,
before the intent's deletion) and a change of rotation settings between runs
leave every record in exactly one object, and every dead letter committed once
in its topic (an aborted transaction's copies are invisible to read_committed).

On revoke, an in-flight flush may finish within ``rebalance_flush_timeout_s``
(else it is cancelled and its intent is replayed by the next owner); open
buffers are dropped, since nothing past the last commit was written. When the
buffered bytes reach ``memory_cap_bytes`` the largest open segments are sealed
early; while they still exceed it (S3 down) every partition is paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, ProducerFenced
from prometheus_client import Counter, Gauge

from indutech_common.kafka import (
    DeadLetterWriter,
    create_consumer,
    create_producer,
    require_topics,
    start_client,
    stop_client,
)
from indutech_common.lifecycle import Worker
from indutech_common.s3 import create_s3_client, ping_bucket
from indutech_common.schemas import Topics
from indutech_iot_to_s3.config import IotToS3Settings
from indutech_iot_to_s3.errors import IntentConflictError
from indutech_iot_to_s3.segments import HourBuffer, PlannedObject, Poll, Segment
from indutech_iot_to_s3.sinks import Intent, IntentJournal, LakeWriter, ParquetEncoder, S3Calls
from indutech_iot_to_s3.sources import RecordCodec

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import ConsumerRecord
    from types_aiobotocore_s3 import S3Client

POLL_TIMEOUT_MS = 200
RESUME_FRACTION = 0.8
RESTART_DELAY_S = 2.0

Step = Literal["intent_written", "uploaded", "before_commit", "committed"]
STEPS: tuple[Step, ...] = ("intent_written", "uploaded", "before_commit", "committed")
StepHook = Callable[[Step, TopicPartition], Awaitable[None]]


@dataclass(frozen=True)
class DeadLetter:
    """A refused record, held until the transaction that commits its segment's offsets."""

    value: bytes
    key: bytes | None
    offset: int
    reason: str
    detail: str


@dataclass
class PartitionState:
    tp: TopicPartition
    open: Segment
    producer: AIOKafkaProducer | None = None  # transactional, owned with the partition
    dead_letters: list[DeadLetter] = field(default_factory=list)  # of the open segment(s)
    dead_letter_bytes: int = 0
    recovering: bool = True
    recovery: asyncio.Task[None] | None = None
    replay: Intent | None = None
    inflight: asyncio.Task[None] | None = None
    inflight_bytes: int = 0
    last_offset: int = -1
    paused: bool = True
    recovery_delay_s: float = 0.0
    failed: bool = False  # a flush failed: later segments must not write or commit


def _open_bytes(state: PartitionState) -> int:
    """What sealing the partition's open segment would hand to a flush."""
    return state.open.size_bytes + state.dead_letter_bytes


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: IotToS3Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._worker.on_assigned(set(assigned))


class IotToS3Worker(Worker[IotToS3Settings]):
    name = "iot-to-s3"

    def __init__(self, settings: IotToS3Settings, *, on_step: StepHook | None = None) -> None:
        """``on_step`` is awaited at each point of the delivery protocol (``STEPS``): the seam
        through which the kill tests stop a worker exactly there before they SIGKILL it."""
        super().__init__(settings)
        self.on_step = on_step
        self.partitions: dict[TopicPartition, PartitionState] = {}
        self.codec = RecordCodec(
            sensor_topic=settings.sensor_topic, ticket_topic=settings.ticket_topic
        )
        self.encoders = {t: ParquetEncoder(self.codec.model_for(t)) for t in settings.topics}
        registry = self.metrics.registry
        self.buffered_bytes = Gauge(
            "indutech_iot_to_s3_buffered_bytes",
            "Arrow bytes of the records held in memory (open and in-flight segments)",
            ["worker"],
            registry=registry,
        )
        self.paused_gauge = Gauge(
            "indutech_iot_to_s3_paused",
            "1 while consumption is paused because the memory cap is reached",
            ["worker"],
            registry=registry,
        )
        self.objects_written = Counter(
            "indutech_iot_to_s3_objects_written",
            "Parquet objects uploaded to the lake",
            ["worker", "stream"],
            registry=registry,
        )
        self.segments_replayed = Counter(
            "indutech_iot_to_s3_segments_replayed",
            "Segments of a previous owner replayed from their intent",
            ["worker"],
            registry=registry,
        )
        self._upload_slots = asyncio.Semaphore(settings.max_concurrent_uploads)
        self._capped = False
        self._closing: set[asyncio.Task[None]] = set()  # producers of lost partitions

    # -- lifecycle -------------------------------------------------------------------------

    async def startup(self) -> None:
        settings = self.settings
        self.s3: S3Client = await self.enter("s3", create_s3_client(settings.s3))
        bucket = settings.s3.lake_bucket
        self.health.register_ping("s3", lambda: ping_bucket(self.s3, bucket))
        calls = S3Calls(self.metrics, backoff_max_s=settings.s3_backoff_max_s)
        self.journal = IntentJournal(self.s3, calls, bucket=bucket, prefix=settings.lake_prefix)
        self.lake = LakeWriter(
            self.s3,
            calls,
            bucket=bucket,
            multipart_threshold=settings.multipart_threshold_bytes,
            part_bytes=settings.multipart_part_bytes,
        )
        topics = {settings.sensor_topic: Topics.SENSOR_READINGS}
        topics |= {settings.ticket_topic: Topics.CLIENT_TICKETS}
        topics |= {settings.dead_letter_topic: Topics.DEAD_LETTER}
        await require_topics(settings.kafka, topics, worker=self.name)
        fetch_max = max(1024 * 1024, min(16 * 1024 * 1024, settings.memory_cap_bytes // 4))
        self.consumer: AIOKafkaConsumer = create_consumer(
            settings.kafka,
            group_id=settings.group_id,
            group_instance_id=settings.group_instance_id,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 4),
            fetch_max_bytes=fetch_max,
            max_partition_fetch_bytes=min(fetch_max, 1024 * 1024),
        )
        await start_client(self.consumer, settings.kafka)
        self.add_closer("kafka", lambda: stop_client(self.consumer))
        self.health.register_ping("kafka", self._ping_kafka)
        # Registered after the consumer, so closed before it: the partitions' producers
        # come and go with the assignment, and whatever is open at stop closes here.
        self.add_closer("partition_producers", self._close_partitions)
        self.consumer.subscribe(list(settings.topics), listener=_Rebalance(self))
        # What exists now (modules, clients, settings) lives as long as the process: moved
        # out of the collector's sight, so the full collections that the per-record garbage
        # of every poll (the consumer's record objects) triggers no longer walk it each time
        # (about 1 µs a record with this heap; bench/narrative.md).
        gc.freeze()
        self.log.info(
            "consuming",
            topics=list(settings.topics),
            group_id=settings.group_id,
            lake=f"s3://{bucket}/{settings.lake_prefix}iot/",
            rotation=settings.rotation.model_dump(),
            memory_cap_bytes=settings.memory_cap_bytes,
            frozen_objects=gc.get_freeze_count(),
        )

    async def main_loop(self) -> None:
        while not self.should_exit.is_set():
            self._start_recoveries()
            self._apply_memory_cap()
            batches = await self.consumer.getmany(
                timeout_ms=POLL_TIMEOUT_MS, max_records=self.settings.poll_max_records
            )
            for tp, records in batches.items():
                state = self.partitions.get(tp)
                if state is not None and not state.recovering:
                    await self._take(state, records)
            self._rotate(time.monotonic())
            self._update_gauges()
        await self._drain()

    async def _close_partitions(self) -> None:
        """Cancel what still runs for a partition, then stop every transactional producer."""
        for state in self.partitions.values():
            for task in (state.inflight, state.recovery):
                if task is not None and not task.done():
                    task.cancel()
        for state in self.partitions.values():
            self._close_producer(state)
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def _ping_kafka(self) -> None:
        """Readiness: the cluster metadata can be fetched through the consumer's connections."""
        await self.consumer.topics()

    def transactional_id(self, tp: TopicPartition) -> str:
        """One per partition: whoever owns the partition next fences the previous owner."""
        return f"{self.settings.group_id}.{tp.topic}.{tp.partition}"

    def _close_producer(self, state: PartitionState) -> None:
        producer, state.producer = state.producer, None
        if producer is not None:
            self._stop_later(producer)

    def _stop_later(self, producer: AIOKafkaProducer) -> None:
        task = asyncio.create_task(stop_client(producer))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _drain(self) -> None:
        """SIGTERM: seal every open segment, wait for every flush (uploads and commits)."""
        self.log.info("draining", partitions=len(self.partitions))
        while True:
            self._rotate(time.monotonic(), force=True)
            pending = [s.inflight for s in self.partitions.values() if s.inflight is not None]
            if not pending:
                break  # what is left is an unfinished replay: its intent stays for next time
            await asyncio.gather(*pending, return_exceptions=True)
        self._update_gauges()

    # -- rebalances and recovery -----------------------------------------------------------

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            if tp not in self.partitions:
                self.partitions[tp] = PartitionState(tp, Segment(tp.topic, tp.partition))
                self.consumer.pause(tp)
        self.log.info("partitions_assigned", partitions=sorted(str(tp) for tp in assigned))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        states = [self.partitions[tp] for tp in revoked if tp in self.partitions]
        for state in states:
            state.recovering = True  # no more buffering or sealing for it
            if state.recovery is not None:
                state.recovery.cancel()
        inflight = [s.inflight for s in states if s.inflight is not None and not s.inflight.done()]
        if inflight:
            _, late = await asyncio.wait(inflight, timeout=self.settings.rebalance_flush_timeout_s)
            for task in late:  # its intent stays in S3: the next owner replays it
                task.cancel()
        for state in states:
            if self.partitions.get(state.tp) is state:
                del self.partitions[state.tp]
            self._close_producer(state)  # the next owner's producer fences it anyway
        self.log.info(
            "partitions_revoked",
            partitions=sorted(str(tp) for tp in revoked),
            dropped_records=sum(s.open.records for s in states),
        )
        self._update_gauges()

    def _start_recoveries(self) -> None:
        for state in self.partitions.values():
            if state.recovering and state.recovery is None:
                state.recovery = asyncio.create_task(self._recover(state))

    async def _recover(self, state: PartitionState) -> None:
        tp = state.tp
        if state.recovery_delay_s:
            await asyncio.sleep(state.recovery_delay_s)
        try:
            if state.producer is None:
                state.producer = await self._start_producer(tp)
            # Read only now: starting the producer ended the previous owner's transaction
            # (aborted, or completed if it was committing), so the offset is settled.
            committed = await self.consumer.committed(tp)
            intent = await self.journal.pending(tp.topic, tp.partition, committed)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("recovery_failed", partition=str(tp))
            self.metrics.error("recovery")
            await asyncio.sleep(1.0)
            state.recovery = None  # the main loop starts it again
            return
        if self.partitions.get(tp) is not state:
            self._close_producer(state)
            return
        if committed is None:
            await self.consumer.seek_to_beginning(tp)
        else:
            self.consumer.seek(tp, committed)
        if intent is not None:
            state.replay = intent
            state.open = Segment(tp.topic, tp.partition, replay_end=intent.end)
            self.segments_replayed.labels(self.name).inc()
            self.log.warning(
                "replaying_intent",
                partition=str(tp),
                committed=committed,
                start=intent.start,
                end=intent.end,
                objects=len(intent.objects),
            )
        state.recovering = False
        state.paused = False
        self.consumer.resume(tp)
        self.log.info("partition_ready", partition=str(tp), committed=committed)

    async def _start_producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        """The partition's transactional producer; starting it fences the previous owner's."""
        producer = create_producer(self.settings.kafka, transactional_id=self.transactional_id(tp))
        try:
            await start_client(producer, self.settings.kafka)
        except asyncio.CancelledError:  # revoked while starting (start_client stops it on errors)
            self._stop_later(producer)
            raise
        return producer

    # -- buffering and rotation --------------------------------------------------------------

    async def _take(self, state: PartitionState, records: list[ConsumerRecord[Any, Any]]) -> None:
        """Buffer one poll of a partition: validated at once straight into Arrow columns,
        the refused records held as dead letters, then fed to the open segment(s)."""
        if records and records[0].offset <= state.last_offset:
            # already buffered (a re-fetch after a seek)
            records = [r for r in records if r.offset > state.last_offset]
        if not records:
            return
        state.last_offset = records[-1].offset
        topic = state.tp.topic
        offsets = [r.offset for r in records]
        decoded = self.codec.decode_batch(topic, offsets, [r.value for r in records])
        for rejected in decoded.rejected:
            # Held, not sent: they go out in the transaction that commits their offsets.
            record = records[rejected.index]
            value = record.value or b""
            state.dead_letters.append(
                DeadLetter(value, record.key, record.offset, rejected.reason, rejected.detail)
            )
            state.dead_letter_bytes += len(value)
        rotation = self.settings.rotation
        poll = Poll(offsets, decoded.valid)
        while not poll.done() and self.partitions.get(state.tp) is state and not state.recovering:
            reason = poll.feed(
                state.open, max_records=rotation.max_records, max_bytes=rotation.max_bytes
            )
            if reason is not None:
                self._seal(state, reason)
        self.metrics.records_in.labels(self.name, topic).inc(decoded.valid_count)

    def _rotate(self, now: float, *, force: bool = False) -> None:
        rotation = self.settings.rotation
        for state in list(self.partitions.values()):
            if state.inflight is not None or state.open.empty or state.recovering:
                continue
            reason = "drain" if force else state.open.rotation_due(rotation, now)
            if force and state.open.replay_end is not None and not state.open.replay_complete():
                continue  # a replay ends at its recorded end offset, never earlier
            if reason is not None:
                self._seal(state, reason)

    def _seal(self, state: PartitionState, reason: str) -> None:
        """Start flushing the open segment; the next records go to a fresh one."""
        segment = state.open
        state.open = Segment(segment.topic, segment.partition)
        replay = state.replay if segment.replay_end is not None else None
        state.replay = None
        end = segment.end if segment.end is not None else -1
        cut = next((i for i, d in enumerate(state.dead_letters) if d.offset > end), None)
        dead = state.dead_letters[:cut]
        state.dead_letters = state.dead_letters[len(dead) :]
        dead_bytes = sum(len(d.value) for d in dead)
        state.dead_letter_bytes -= dead_bytes
        previous = state.inflight
        state.inflight_bytes += segment.size_bytes + dead_bytes
        state.inflight = asyncio.create_task(
            self._flush(state, segment, dead, reason=reason, replay=replay, after=previous)
        )

    def _buffered_bytes(self) -> int:
        return sum(
            s.open.size_bytes + s.dead_letter_bytes + s.inflight_bytes
            for s in self.partitions.values()
        )

    def _apply_memory_cap(self) -> None:
        cap = self.settings.memory_cap_bytes
        if self._buffered_bytes() >= cap:
            # Flush early instead of growing: seal the largest open segments first.
            candidates = sorted(
                (
                    s
                    for s in self.partitions.values()
                    if s.inflight is None and not s.open.empty and s.open.replay_end is None
                ),
                key=_open_bytes,
                reverse=True,
            )
            open_bytes = sum(_open_bytes(s) for s in candidates)
            for state in candidates:
                if open_bytes < cap // 2:
                    break
                open_bytes -= _open_bytes(state)
                self._seal(state, "memory_cap")
        buffered = self._buffered_bytes()
        if not self._capped and buffered >= cap:
            self._capped = True
            self.log.warning("memory_cap_reached_pausing", buffered_bytes=buffered, cap=cap)
        elif self._capped and buffered < cap * RESUME_FRACTION:
            self._capped = False
            self.log.info("memory_below_cap_resuming", buffered_bytes=buffered, cap=cap)
        for state in self.partitions.values():
            # A replay is never paused: it must reach its end offset to free its memory.
            want_paused = state.recovering or (self._capped and state.open.replay_end is None)
            if want_paused != state.paused:
                (self.consumer.pause if want_paused else self.consumer.resume)(state.tp)
                state.paused = want_paused

    def _update_gauges(self) -> None:
        self.buffered_bytes.labels(self.name).set(self._buffered_bytes())
        self.paused_gauge.labels(self.name).set(1 if self._capped else 0)

    # -- flushing ----------------------------------------------------------------------------

    async def _flush(
        self,
        state: PartitionState,
        segment: Segment,
        dead_letters: list[DeadLetter],
        *,
        reason: str,
        replay: Intent | None,
        after: asyncio.Task[None] | None,
    ) -> None:
        try:
            if after is not None:
                await asyncio.gather(after, return_exceptions=True)
            if state.failed or self.partitions.get(state.tp) is not state:
                return  # an earlier segment failed: the partition recovers from its commit
            await self._write_segment(state, segment, dead_letters, reason=reason, replay=replay)
        except asyncio.CancelledError:
            state.failed = True
            raise
        except IntentConflictError as exc:
            self.log.error(  # noqa: TRY400 - an expected race, not a bug: no traceback
                "intent_conflict", partition=str(state.tp), error=str(exc)
            )
            self.metrics.error("intent_conflict")
            self._restart_partition(state)
        except Exception:
            self.log.exception("flush_failed", partition=str(state.tp))
            self.metrics.error("flush")
            self._restart_partition(state)
        finally:
            state.inflight_bytes -= segment.size_bytes + sum(len(d.value) for d in dead_letters)
            if state.inflight is asyncio.current_task():
                state.inflight = None

    def _restart_partition(self, state: PartitionState) -> None:
        """Drop what is buffered and recover from the committed offset and the intents."""
        state.failed = True
        if self.partitions.get(state.tp) is not state:
            return
        fresh = PartitionState(state.tp, Segment(state.tp.topic, state.tp.partition))
        fresh.recovery_delay_s = RESTART_DELAY_S
        self.partitions[state.tp] = fresh
        self._close_producer(state)  # its transaction may be unusable; recovery starts anew
        state.paused = True
        with contextlib.suppress(IllegalStateError):
            self.consumer.pause(state.tp)

    async def _write_segment(
        self,
        state: PartitionState,
        segment: Segment,
        dead_letters: list[DeadLetter],
        *,
        reason: str,
        replay: Intent | None,
    ) -> None:
        started = time.perf_counter()
        tp = state.tp
        if segment.start is None or segment.end is None:
            return  # an empty segment is never sealed
        plan = segment.plan(self.settings.lake_prefix)
        if replay is not None:
            intent = replay
            if [p.key for p in plan] != intent.keys() or segment.end != intent.end:
                self.metrics.error("replay_mismatch")
                self.log.error(
                    "replay_mismatch",
                    partition=str(tp),
                    planned=[p.key for p in plan],
                    recorded=intent.keys(),
                    end=segment.end,
                    recorded_end=intent.end,
                )
        else:
            intent = Intent(tp.topic, tp.partition, segment.start, segment.end, tuple(plan))
            if plan:
                await self.journal.write(intent)
                await self._step("intent_written", tp)
        encoder = self.encoders[tp.topic]
        by_hour = {b.hour: b for b in segment.hours.values()}
        await asyncio.gather(*(self._upload(encoder, tp, by_hour[p.hour], p, intent) for p in plan))
        await self._step("uploaded", tp)
        if state.failed or self.partitions.get(tp) is not state:
            return  # revoked meanwhile: the next owner replays the intent
        if not await self._commit(state, segment.end + 1, dead_letters):
            # Fenced: another member took the partition (the rebalance will tell us), or the
            # broker aborted our transaction (its timeout, during a long outage). Either way
            # recover from the committed offset with a new producer; the intent stays.
            self._restart_partition(state)
            return
        await self._step("committed", tp)
        if plan:
            await self.journal.delete(intent)
        self.metrics.batch_duration.labels(self.name).observe(time.perf_counter() - started)
        newest = segment.max_event_time()
        self.metrics.record_success(
            stream=tp.topic,
            count=segment.records,
            last_event_time=newest.timestamp() if newest else None,
        )
        self.log.info(
            "segment_written",
            partition=str(tp),
            reason=reason,
            start=segment.start,
            end=segment.end,
            records=segment.records,
            invalid=segment.invalid,
            objects=len(plan),
            replayed=replay is not None,
            duration_s=round(time.perf_counter() - started, 3),
        )

    async def _step(self, step: Step, tp: TopicPartition) -> None:
        if self.on_step is not None:
            await self.on_step(step, tp)

    async def _upload(
        self,
        encoder: ParquetEncoder,
        tp: TopicPartition,
        buffer: HourBuffer,
        planned: PlannedObject,
        intent: Intent,
    ) -> None:
        async with self._upload_slots:
            body = await asyncio.to_thread(encoder.encode, buffer.batches, tp.partition)
            metadata = {
                "first-offset": str(planned.first_offset),
                "last-offset": str(planned.last_offset),
                "records": str(planned.records),
                "segment": f"{intent.start}-{intent.end}",
            }
            await self.lake.upload(planned, body, metadata)
        self.objects_written.labels(self.name, tp.topic).inc()

    async def _commit(
        self, state: PartitionState, offset: int, dead_letters: list[DeadLetter]
    ) -> bool:
        """One Kafka transaction: the segment's dead letters and its next offset.

        Either both are visible (to read_committed consumers) or neither: a crash before
        the commit leaves an open transaction that the next owner's producer aborts, and
        the replay sends the same dead letters again in its own transaction.
        """
        tp, producer = state.tp, state.producer
        if producer is None:  # revoked meanwhile (its producer closed): the next owner replays
            return False
        writer = DeadLetterWriter(producer, topic=self.settings.dead_letter_topic)
        source = f"{tp.topic}[{tp.partition}]"
        try:
            async with producer.transaction():
                for dead in dead_letters:
                    await writer.send(
                        dead.value,
                        reason=dead.reason,
                        error=dead.detail,
                        source=source,
                        offset=dead.offset,
                        key=dead.key,
                    )
                await producer.send_offsets_to_transaction({tp: offset}, self.settings.group_id)
                await producer.flush()
                await self._step("before_commit", tp)
        except ProducerFenced as exc:
            self.log.warning("commit_fenced", partition=str(tp), error=str(exc))
            self.metrics.error("commit_failed")
            return False
        for dead in dead_letters:  # counted once committed, so a replay never counts twice
            self.metrics.dead_lettered.labels(self.name, dead.reason).inc()
        return True
