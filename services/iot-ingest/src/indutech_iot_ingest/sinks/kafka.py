"""The transactional sink: records, dead letters and file checkpoints commit together.

A transaction holds the records of a batch, their dead letters, and one
checkpoint per file that moved (key = fingerprint, value = JSON state) on the
compacted checkpoint topic. A read_committed reader sees all of it or none;
after a crash, the checkpoints read back are exactly the lines whose records
are visible, so nothing is skipped and nothing repeated.

The producer is librdkafka's (confluent-kafka, ``indutech_common.kafka.librdkafka``):
measured against aiokafka's batch path it ran 15 % faster per core (docs/benchmarks.md,
issue 18). A record is one ``produce`` call into librdkafka's queue (no future, no
await per record); librdkafka batches per partition (murmur2 of the key, as the Java
client and aiokafka choose), sends and retries in its own threads. Delivery is awaited
once per transaction: ``commit_transaction`` flushes and fails when any record of the
transaction failed; the worker then aborts and rewinds. The checkpoints are read back
with aiokafka's consumer, as every other consumer of ours.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Sequence

import structlog
from aiokafka import TopicPartition
from confluent_kafka import KafkaError, KafkaException

from indutech_common.kafka import create_consumer, start_client, stop_client
from indutech_common.kafka.deadletter import dead_letter_headers, dead_lettered
from indutech_common.kafka.librdkafka import TransactionalProducer
from indutech_common.metrics import WorkerMetrics
from indutech_common.settings import KafkaSettings
from indutech_common.tailing import FileState
from indutech_iot_ingest.errors import (
    CheckpointTopicMissingError,
    ProducerFencedError,
    TransactionFailedError,
)

_log = structlog.get_logger(__name__)
# librdkafka's advice: commit with the transaction's remaining time (-1), other timeouts risk
# desynchronising its state when a request fails; the worker warns every 10 s meanwhile
COMMIT_WAIT_S = -1.0


async def load_checkpoints(
    settings: KafkaSettings, topic: str, partitions: Iterable[int], *, timeout_s: float = 60.0
) -> list[FileState]:
    """Read the compacted checkpoint topic (its ``partitions``, from the sink's
    ``partitions_for``) to its end (read_committed): the last state per file."""
    consumer = create_consumer(settings, group_id=None)
    await start_client(consumer, settings)
    latest: dict[bytes, bytes | None] = {}
    try:
        if topic not in await consumer.topics():
            raise CheckpointTopicMissingError(
                f"checkpoint topic {topic!r} does not exist: create it compacted "
                "(cleanup.policy=compact) before starting iot-ingest"
            )
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        async with asyncio.timeout(timeout_s):
            for tp in tps:
                while await consumer.position(tp) < ends[tp]:
                    batches = await consumer.getmany(tp, timeout_ms=500)
                    for message in batches.get(tp, []):
                        if message.key is not None:
                            latest[message.key] = message.value
    finally:
        await stop_client(consumer)
    states = [FileState.from_json_bytes(value) for value in latest.values() if value is not None]
    _log.info("checkpoints_loaded", topic=topic, files=len(states))
    return states


def _failure(exc: KafkaException, doing: str) -> Exception:
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    fenced = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED)
    if error is not None and error.fatal() and error.code() in fenced:
        return ProducerFencedError(
            f"{doing}: another instance started with the same transactional id and fenced "
            f"this one ({error.str()}); give every instance its own IOT_INGEST_TRANSACTIONAL_ID"
        )
    return TransactionFailedError(f"{doing}: {error.str() if error is not None else exc}")


class TransactionalSink:
    """A librdkafka transactional producer with a stable id: starting it fences any older
    instance. A ``Resource``: the worker adopts it (``ping`` on ``/readyz``, ``close`` at
    stop)."""

    name = "kafka"

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        transactional_id: str,
        checkpoint_topic: str,
        dead_letter_topic: str,
        metrics: WorkerMetrics,
        record_topics: Sequence[str] = (),
        start_timeout_s: float = 60.0,
    ) -> None:
        self._settings = settings
        self.transactional_id = transactional_id
        self.checkpoint_topic = checkpoint_topic
        self.dead_letter_topic = dead_letter_topic
        self.record_topics = tuple(dict.fromkeys(record_topics))
        self._metrics = metrics
        self._start_timeout_s = start_timeout_s
        self.producer: TransactionalProducer | None = None
        self.in_transaction = False
        # records appended since the last ship()
        self._waiting: list[tuple[str, bytes, bytes]] = []

    async def start(self) -> None:
        """Start the producer and settle the transactional id (aborting a zombie's open work)."""
        producer = TransactionalProducer(self._settings, transactional_id=self.transactional_id)
        try:
            # InitProducerId bumps the epoch: the old instance is fenced and its open
            # transaction aborted before the checkpoints are read.
            await producer.init_transactions(self._start_timeout_s)
        except BaseException:
            await producer.close()
            raise
        self.producer = producer

    def _require(self) -> TransactionalProducer:
        if self.producer is None:
            raise RuntimeError("TransactionalSink.start() was not called")
        return self.producer

    async def partitions_for(self, topic: str) -> list[int]:
        return await self._require().partitions_for(topic)

    async def begin(self) -> None:
        try:
            await self._require().begin_transaction()
        except KafkaException as exc:
            raise _failure(exc, "begin_transaction failed") from None
        self.in_transaction = True

    def append(self, topic: str, value: bytes, key: bytes) -> None:
        """Add a record (no I/O, no await); :meth:`ship` hands them to librdkafka.

        Records are kept here and handed over in one burst per read: a ``produce`` per
        parsed line wakes librdkafka's broker thread over and over, and on one core each
        wake-up is a context switch away from parsing.
        """
        self._waiting.append((topic, value, key))

    @property
    def batches_waiting(self) -> int:
        return len(self._waiting)

    async def ship(self, *, everything: bool = False) -> None:  # noqa: ARG002 - same interface
        """Hand the records to librdkafka, waiting (off the loop) when its queue is full:
        that is the backpressure on reading. librdkafka batches and sends them."""
        producer = self._require()
        produce = producer.client.produce
        waiting = self._waiting
        done = 0
        try:
            while done < len(waiting):
                try:
                    for topic, value, key in itertools.islice(waiting, done, None):
                        produce(topic, value, key)
                        done += 1
                except BufferError:
                    await producer.wait_for_room()
                except KafkaException as exc:
                    raise _failure(exc, "produce failed") from None
        finally:
            del waiting[:done]

    async def dead_letter(
        self,
        value: bytes,
        *,
        reason: str,
        error: str,
        path: str,
        offset: int,
        fingerprint: str,
        extra_headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        headers = dead_letter_headers(
            reason=reason,
            error=error,
            source=path,
            offset=offset,
            extra_headers=(
                ("file", path.encode()),
                ("fingerprint", fingerprint.encode()),
                *extra_headers,
            ),
        )
        await self._produce(self.dead_letter_topic, value, path.encode(), headers)
        dead_lettered(self._metrics, reason=reason, error=error, source=path, offset=offset)

    async def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        await self.ship()  # keeps the order of appends
        producer = self._require()
        while True:
            try:
                producer.produce(topic, value, key, headers)
            except BufferError:
                await producer.wait_for_room()
                continue
            except KafkaException as exc:
                raise _failure(exc, "produce failed") from None
            return

    async def commit(self, states: Iterable[FileState], forgotten: Iterable[str] = ()) -> None:
        """Add the checkpoints (and tombstones of the ``forgotten`` fingerprints) and commit
        everything; raises when the transaction failed."""
        producer = self._require()
        await self.ship()
        for fingerprint in forgotten:
            await self._produce(self.checkpoint_topic, None, fingerprint.encode())
        for state in states:
            await self._produce(
                self.checkpoint_topic, state.to_json_bytes(), state.fingerprint.encode()
            )
        while True:
            try:
                await producer.commit_transaction(COMMIT_WAIT_S)
                break
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if (
                    isinstance(error, KafkaError)
                    and error.retriable()
                    and not error.txn_requires_abort()
                    and not error.fatal()
                ):
                    continue  # librdkafka: a retriable failure of the commit may be called again
                raise _failure(exc, "commit_transaction failed") from None
        self.in_transaction = False

    async def abort(self) -> None:
        """Abort the open transaction; on failure, start a fresh producer (same id)."""
        self._waiting = []
        if not self.in_transaction:
            return
        self.in_transaction = False
        try:
            await self._require().abort_transaction(self._start_timeout_s)
        except KafkaException:
            _log.warning("abort_failed_restarting_producer", exc_info=True)
            await self.stop()
            await self.start()

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.close()

    async def ping(self) -> None:
        """Readiness: a broker answers a metadata request through this producer."""
        await self._require().ping()

    async def close(self) -> None:
        """At stop: a transaction still open is aborted (never half-visible), then the producer
        stops."""
        if self.in_transaction:
            try:
                await self.abort()
            except (KafkaException, TransactionFailedError, ProducerFencedError):
                _log.warning("abort_at_close_failed", exc_info=True)
        await self.stop()
