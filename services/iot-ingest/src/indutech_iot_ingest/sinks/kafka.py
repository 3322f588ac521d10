"""The transactional sink: records, dead letters and file checkpoints commit together.

A transaction holds the records of a batch, their dead letters, and one
checkpoint per file that moved (key = fingerprint, value = JSON state) on the
compacted checkpoint topic. A read_committed reader sees all of it or none;
after a crash, the checkpoints read back are exactly the lines whose records
are visible, so nothing is skipped and nothing repeated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from indutech_common.kafka import DeadLetterWriter, create_consumer, create_producer, start_client
from indutech_common.metrics import WorkerMetrics
from indutech_common.settings import KafkaSettings
from indutech_common.tailing import FileState
from indutech_iot_ingest.sinks.exceptions import CheckpointTopicMissingError

_log = structlog.get_logger(__name__)
STOP_TIMEOUT_S = 2.0


async def stop_client(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    """Stop a client, but never hang: under uvloop, closing a TLS connection can wait forever
    for the peer's close_notify (uvloop#471), which would block start-up or a drain."""
    try:
        await asyncio.wait_for(client.stop(), timeout=STOP_TIMEOUT_S)
    except TimeoutError:
        _log.warning("kafka_client_stop_timed_out", timeout_s=STOP_TIMEOUT_S)


async def load_checkpoints(
    settings: KafkaSettings, topic: str, producer: AIOKafkaProducer, *, timeout_s: float = 60.0
) -> list[FileState]:
    """Read the compacted checkpoint topic to its end (read_committed): the last state per file."""
    consumer = create_consumer(settings, group_id=None)
    await start_client(consumer, settings)
    latest: dict[bytes, bytes | None] = {}
    try:
        if topic not in await consumer.topics():
            raise CheckpointTopicMissingError(
                f"checkpoint topic {topic!r} does not exist: create it compacted "
                "(cleanup.policy=compact) before starting iot-ingest"
            )
        partitions = await producer.partitions_for(topic)
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


class TransactionalSink:
    """A transactional producer with a stable id: starting it fences any older instance."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        transactional_id: str,
        checkpoint_topic: str,
        dead_letter_topic: str,
        metrics: WorkerMetrics,
    ) -> None:
        self._settings = settings
        self.transactional_id = transactional_id
        self.checkpoint_topic = checkpoint_topic
        self.dead_letter_topic = dead_letter_topic
        self._metrics = metrics
        self.producer: AIOKafkaProducer | None = None
        self.dead_letters: DeadLetterWriter | None = None
        self._pending: list[asyncio.Future[object]] = []
        self.in_transaction = False

    async def start(self) -> None:
        """Start the producer and settle the transactional id (aborting a zombie's open work)."""
        producer = create_producer(
            self._settings,
            transactional_id=self.transactional_id,
            linger_ms=5,
            max_batch_size=256 * 1024,
            max_request_size=1 << 20,
        )
        await start_client(producer, self._settings)
        self.producer = producer
        self.dead_letters = DeadLetterWriter(
            producer, metrics=self._metrics, topic=self.dead_letter_topic
        )
        # InitProducerId bumps the epoch: the old instance is fenced and its open
        # transaction aborted before we read the checkpoints.
        await producer.begin_transaction()
        await producer.commit_transaction()

    def _require(self) -> AIOKafkaProducer:
        if self.producer is None:
            raise RuntimeError("TransactionalSink.start() was not called")
        return self.producer

    async def begin(self) -> None:
        await self._require().begin_transaction()
        self.in_transaction = True

    async def send(self, topic: str, value: bytes, key: bytes | None) -> None:
        """Queue a record in the open transaction (awaits when the buffer is full: backpressure)."""
        self._pending.append(await self._require().send(topic, value=value, key=key))

    async def dead_letter(
        self, value: bytes, *, reason: str, error: str, path: str, offset: int, fingerprint: str
    ) -> None:
        writer = self.dead_letters
        if writer is None:
            raise RuntimeError("TransactionalSink.start() was not called")
        await writer.send(
            value,
            reason=reason,
            error=error,
            source=path,
            offset=offset,
            extra_headers=(("file", path.encode()), ("fingerprint", fingerprint.encode())),
        )

    async def commit(self, states: Iterable[FileState]) -> None:
        """Add the checkpoints and commit everything; raises when the transaction failed."""
        producer = self._require()
        for state in states:
            self._pending.append(
                await producer.send(
                    self.checkpoint_topic,
                    value=state.to_json_bytes(),
                    key=state.fingerprint.encode(),
                )
            )
        pending, self._pending = self._pending, []
        await asyncio.gather(*pending)
        await producer.commit_transaction()
        self.in_transaction = False

    async def abort(self) -> None:
        """Abort the open transaction; on failure, start a fresh producer (same id)."""
        self._pending = []
        if not self.in_transaction:
            return
        self.in_transaction = False
        try:
            await self._require().abort_transaction()
        except Exception:
            _log.warning("abort_failed_restarting_producer", exc_info=True)
            await self.stop()
            await self.start()

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await stop_client(producer)
