"""The iot-ingest worker: tail the SAN, validate, send records and checkpoints transactionally.

Each transaction lasts at most ``commit_interval_s`` (or ``max_batch_records``):
lines are read, parsed and sent (bad ones dead-lettered), then the checkpoints
of every file that moved are added and the whole commits. A failed
transaction is aborted and reading rewinds to the last committed checkpoints,
so what is sent again was never visible. Backpressure: reading waits for the
producer; nothing is ever dropped. SIGTERM: the open transaction commits, then
the worker stops. An over-long line is kept whole in the dead-letter store (S3)
before the transaction holding its dead letter commits.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

import prometheus_client
from aiokafka.errors import KafkaError, ProducerFenced
from botocore.exceptions import BotoCoreError, ClientError

from indutech_common.kafka import require_topics
from indutech_common.lifecycle import Worker
from indutech_common.s3 import S3Error, create_s3_client, ping_bucket
from indutech_common.schemas import Topics
from indutech_common.tailing import Line, LineKind, SkipReason, TailingError
from indutech_iot_ingest.config import IotIngestSettings
from indutech_iot_ingest.sinks import DeadLetterStore, TransactionalSink, load_checkpoints
from indutech_iot_ingest.sources import LineParser, RejectedLine, SanSource

TRANSACTION_WAIT_WARNING_S = 10.0
# a failed transaction is aborted, rewound and tried again after these
RETRIED = (KafkaError, OSError, BotoCoreError, ClientError, S3Error)


class IotIngestWorker(Worker[IotIngestSettings]):
    name = "iot-ingest"

    def __init__(self, settings: IotIngestSettings) -> None:
        super().__init__(settings)
        registry = self.metrics.registry
        self.files_skipped = prometheus_client.Counter(
            "indutech_files_skipped",
            "Files under the SAN dir that are not read (each path counted once per process): "
            "no route matches, or a symbolic link (refused when it leads outside)",
            ["worker", "reason"],
            registry=registry,
        )
        self.unterminated_lines = prometheus_client.Counter(
            "indutech_unterminated_lines",
            "Last lines without a newline, read once their file settled",
            ["worker"],
            registry=registry,
        )
        self.dead_letter_objects = prometheus_client.Counter(
            "indutech_dead_letter_objects",
            "Over-long lines kept whole in the dead-letter store (S3)",
            ["worker"],
            registry=registry,
        )
        self.store: DeadLetterStore | None = None
        # counted into the metrics when their transaction commits (an abort replays them)
        self._pending_counts: Counter[str] = Counter()
        self.checkpoint_reader_stop: asyncio.Task[None] | None = None

    def _stop_later(self, stopping: Coroutine[Any, Any, None]) -> None:
        """The checkpoint reader's stop, off the start path; awaited at shutdown."""
        task = asyncio.create_task(stopping, name="checkpoint-reader-stop")
        self.checkpoint_reader_stop = task
        self.add_closer("checkpoint-reader", lambda: task)

    def _skipped(self, _path: str, reason: SkipReason) -> None:
        # called from the tailer's thread: prometheus counters are thread-safe
        self.files_skipped.labels(self.name, str(reason)).inc()

    async def startup(self) -> None:
        settings = self.settings
        self.parsers = {
            route.name: LineParser(route, settings.topic_of(route)) for route in settings.routes
        }
        await self._open_store()
        # Adopted before it starts: closed (a transaction still open aborted) however far
        # the start got. Closed after the source, before the dead-letter store's client.
        self.sink = self.adopt(
            TransactionalSink(
                settings.kafka,
                transactional_id=settings.transactional_id,
                checkpoint_topic=settings.checkpoint_topic,
                dead_letter_topic=settings.dead_letter_topic,
                metrics=self.metrics,
                record_topics=[settings.topic_of(route) for route in settings.routes],
            )
        )
        self.source = self.adopt(SanSource(settings, on_skipped=self._skipped))
        self.tailer = self.source.tailer
        kinds = {"sensor_reading": Topics.SENSOR_READINGS, "client_ticket": Topics.CLIENT_TICKETS}
        topics = {settings.topic_of(r): kinds[r.record] for r in settings.routes}
        topics |= {settings.dead_letter_topic: Topics.DEAD_LETTER}
        topics |= {settings.checkpoint_topic: Topics.INGEST_CHECKPOINTS}
        await require_topics(settings.kafka, topics, worker=self.name)
        await self.sink.start()
        # after start(): the fenced zombie's open transaction is aborted, so what we read
        # here is exactly what is visible to every read_committed consumer
        producer = self.sink.producer
        assert producer is not None  # noqa: S101 - start() set it
        states = await load_checkpoints(
            settings.kafka, settings.checkpoint_topic, producer, stop_later=self._stop_later
        )
        self.tailer.restore(states)
        self.log.info(
            "ingest_ready",
            san_dir=str(settings.san_dir),
            routes=[route.name for route in settings.routes],
            transactional_id=settings.transactional_id,
            known_files=len(self.tailer.states),
        )

    async def _open_store(self) -> None:
        settings = self.settings
        if settings.s3 is None:
            self.log.warning(
                "dead_letter_store_disabled",
                keep_bytes=settings.dead_letter_keep_bytes,
                hint="no S3 settings: an over-long line keeps only its first keep_bytes in its "
                "dead letter; set INDUTECH_S3__* (or IOT_INGEST_S3__*) to keep it whole",
            )
            return
        s3 = settings.s3
        client = await self.enter("s3", create_s3_client(s3))
        self.store = DeadLetterStore(
            client,
            bucket=s3.lake_bucket,
            prefix=settings.dead_letter_prefix,
            max_object_bytes=settings.dead_letter_max_object_bytes,
        )
        self.health.register_ping("s3", lambda: ping_bucket(client, s3.lake_bucket))

    async def main_loop(self) -> None:
        while not self.should_exit.is_set():
            try:
                moved = await self._watched_transaction()
            except ProducerFenced:
                self.log.exception(
                    "producer_fenced", transactional_id=self.settings.transactional_id
                )
                raise
            except RETRIED as exc:
                self.metrics.error(type(exc).__name__)
                self.log.warning("transaction_failed", error=f"{type(exc).__name__}: {exc}")
                await self.sink.abort()
                self.tailer.rewind()
                self._pending_counts.clear()
                await self.sleep_or_exit(self.settings.retry_backoff_s)
                continue
            if not moved:
                await self.sleep_or_exit(self.settings.poll_interval_s)

    async def _watched_transaction(self) -> bool:
        """:meth:`_transaction`, with a warning every ``TRANSACTION_WAIT_WARNING_S`` it hangs.

        While Kafka is away the producer waits inside the open transaction (nothing is
        read meanwhile, nothing is lost); without this the worker would be silent.
        """
        started = time.monotonic()
        transaction = asyncio.ensure_future(self._transaction())
        try:
            while True:
                done, _ = await asyncio.wait({transaction}, timeout=TRANSACTION_WAIT_WARNING_S)
                if done:
                    return transaction.result()
                self.log.warning(
                    "transaction_waiting",
                    waited_s=round(time.monotonic() - started, 1),
                    hint="the producer is waiting for Kafka: check the brokers and "
                    "the kafka ping of /readyz; the transaction commits when they answer",
                )
        except asyncio.CancelledError:
            transaction.cancel()
            raise

    async def _transaction(self) -> bool:
        """One transaction of at most commit_interval_s; False when there was nothing to do."""
        settings = self.settings
        started = time.monotonic()
        read: Counter[str] = Counter()
        sent: Counter[str] = Counter()
        last_event: dict[str, datetime] = {}
        source = self.source
        lines = await source.read(settings.max_batch_records)
        if not lines and not self.tailer.dirty_states() and not source.forgotten:
            return False
        await self.sink.begin()
        count = 0
        while True:
            await self._send(lines, read, sent, last_event)
            count += len(lines)
            remaining = settings.max_batch_records - count
            deadline = started + settings.commit_interval_s
            if remaining <= 0 or self.should_exit.is_set() or time.monotonic() >= deadline:
                break
            await asyncio.sleep(
                min(settings.poll_interval_s, max(0.0, deadline - time.monotonic()))
            )
            lines = await source.read(remaining)
        states = self.tailer.dirty_states()
        forgotten = list(source.forgotten)
        await self.sink.commit(states, forgotten)
        self.tailer.mark_committed(states)
        counts, self._pending_counts = self._pending_counts, Counter()
        self.unterminated_lines.labels(self.name).inc(counts["unterminated"])
        self.dead_letter_objects.labels(self.name).inc(counts["stored"])
        if forgotten:
            self.log.info("checkpoints_deleted", files=len(forgotten))
            del source.forgotten[: len(forgotten)]
        self.metrics.batch_duration.labels(self.name).observe(time.monotonic() - started)
        for stream, number in read.items():
            self.metrics.records_in.labels(self.name, stream).inc(number)
        for stream, number in sent.items():
            self.metrics.record_success(
                stream=stream, count=number, last_event_time=_timestamp(last_event.get(stream))
            )
        if not sent:
            self.metrics.last_success.labels(self.name).set(time.time())
        return True

    async def _send(
        self,
        lines: list[Line],
        read: Counter[str],
        sent: Counter[str],
        last_event: dict[str, datetime],
    ) -> None:
        """Parse the lines and add their records to the open batches (no await per record)."""
        sink = self.sink
        parsers = self.parsers
        plain = LineKind.LINE
        for line in lines:
            kind = line.kind
            if kind is LineKind.HEADER:
                continue
            spec = line.spec
            read[spec] += 1
            try:
                if kind is not plain:
                    if kind is LineKind.UNTERMINATED:
                        self._pending_counts["unterminated"] += 1
                    rejected = LineParser.special(line)
                    if rejected is not None:
                        raise rejected
                record = parsers[spec].parse(line)
            except RejectedLine as exc:
                extra = await self._keep_whole(line) if kind is LineKind.TOO_LONG else []
                await sink.dead_letter(
                    line.data,
                    reason=exc.reason,
                    error=exc.error,
                    path=line.state.path,
                    offset=line.offset,
                    fingerprint=line.state.fingerprint,
                    extra_headers=extra,
                )
                continue
            if record is None:
                continue
            sink.append(record.topic, record.value, record.key)
            sent[spec] += 1
            last_event[spec] = record.event_time
        await sink.ship()

    async def _keep_whole(self, line: Line) -> list[tuple[str, bytes]]:
        """Headers pointing at the whole over-long line in the dead-letter store (none
        without a store, or when its file was truncated before it could be read again)."""
        store = self.store
        if store is None:
            return []
        try:
            with self.tailer.line_reader(line, chunk_bytes=store.part_bytes) as chunks:
                stored = await store.keep(
                    chunks, fingerprint=line.state.fingerprint, offset=line.offset
                )
        except TailingError as exc:  # truncated or rewritten since: those bytes are gone
            self.metrics.error("dead_letter_line_gone")
            self.log.warning(
                "dead_letter_line_gone", path=line.state.path, offset=line.offset, error=str(exc)
            )
            return [("object_error", str(exc).encode()[:1024])]
        self._pending_counts["stored"] += 1
        return stored.headers()


def _timestamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()
