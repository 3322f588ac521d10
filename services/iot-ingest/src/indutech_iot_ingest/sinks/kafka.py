"""The transactional sink: records, dead letters and file checkpoints commit together.

A transaction holds the records of a batch, their dead letters, and one
checkpoint per file that moved (key = fingerprint, value = JSON state) on the
compacted checkpoint topic. A read_committed reader sees all of it or none;
after a crash, the checkpoints read back are exactly the lines whose records
are visible, so nothing is skipped and nothing repeated.

Records are not sent one by one (a future, a partitioner call and an await per
record cost more than parsing them): :meth:`TransactionalSink.append` adds a
record to an open record batch of its partition (chosen as the Java client and
aiokafka's default partitioner do: murmur2 of the key, cached per key), and
full batches are shipped with ``send_batch`` by :meth:`TransactionalSink.ship`
and at commit. The order of a partition's records is the order of appends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from indutech_common.kafka import (
    DeadLetterWriter,
    create_consumer,
    create_producer,
    ping_producer,
    start_client,
    stop_client,
)
from indutech_common.metrics import WorkerMetrics
from indutech_common.settings import KafkaSettings
from indutech_common.tailing import FileState
from indutech_iot_ingest.errors import CheckpointTopicMissingError

if TYPE_CHECKING:
    from aiokafka.producer.message_accumulator import BatchBuilder

_log = structlog.get_logger(__name__)
KEY_HASH_CACHE = 65_536  # distinct keys remembered (sensor and customer ids: a few thousand)


async def load_checkpoints(
    settings: KafkaSettings,
    topic: str,
    producer: AIOKafkaProducer,
    *,
    timeout_s: float = 60.0,
    stop_later: Callable[[Coroutine[Any, Any, None]], None] | None = None,
) -> list[FileState]:
    """Read the compacted checkpoint topic to its end (read_committed): the last state per file.

    ``stop_later`` takes the reader's stop instead of awaiting it: a consumer's stop took
    0.5 s, or its 2 s limit when uvloop waited on the TLS close, of every start (and so of
    the ingest latency after each restart); the worker runs it beside the ingest and awaits
    it at shutdown."""
    # a fetch at the end of the topic waits fetch_max_wait_ms, and a stop waits for it
    consumer = create_consumer(settings, group_id=None, fetch_max_wait_ms=50)
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
        if stop_later is None:
            await stop_client(consumer)
        else:
            stop_later(stop_client(consumer))
    states = [FileState.from_json_bytes(value) for value in latest.values() if value is not None]
    _log.info("checkpoints_loaded", topic=topic, files=len(states))
    return states


class TransactionalSink:
    """A transactional producer with a stable id: starting it fences any older instance.

    A ``Resource``: the worker adopts it (``ping`` on ``/readyz``, ``close`` at stop).
    """

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
    ) -> None:
        self._settings = settings
        self.transactional_id = transactional_id
        self.checkpoint_topic = checkpoint_topic
        self.dead_letter_topic = dead_letter_topic
        self.record_topics = tuple(dict.fromkeys(record_topics))
        self._metrics = metrics
        self.producer: AIOKafkaProducer | None = None
        self.dead_letters: DeadLetterWriter | None = None
        self._pending: list[asyncio.Future[object]] = []
        self.in_transaction = False
        self._partitions: dict[str, list[int]] = {}
        self._key_hashes: dict[bytes, int] = {}
        self._open: dict[tuple[str, int], BatchBuilder] = {}
        self._full: list[tuple[str, int, BatchBuilder]] = []

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
        producer = self._require()
        for topic in self.record_topics:  # from the metadata cache; refreshed by the client
            self._partitions[topic] = sorted(await producer.partitions_for(topic))
        await producer.begin_transaction()
        self.in_transaction = True

    def append(self, topic: str, value: bytes, key: bytes) -> None:
        """Add a record of one of ``record_topics`` to its partition's batch (no I/O, no await).

        Call :meth:`ship` now and then to send the batches that filled up.
        """
        partitions = self._partitions[topic]
        hashed = self._key_hashes.get(key)
        if hashed is None:
            if len(self._key_hashes) >= KEY_HASH_CACHE:
                self._key_hashes.clear()
            hashed = self._key_hashes[key] = murmur2(key) & 0x7FFFFFFF
        slot = (topic, partitions[hashed % len(partitions)])
        builder = self._open.get(slot)
        if builder is None:
            builder = self._open[slot] = self._require().create_batch()
        if builder.append(timestamp=None, key=key, value=value) is None:
            self._full.append((*slot, builder))
            builder = self._open[slot] = self._require().create_batch()
            builder.append(timestamp=None, key=key, value=value)  # a first record always fits

    @property
    def batches_waiting(self) -> int:
        return len(self._full)

    async def ship(self, *, everything: bool = False) -> None:
        """Send the full batches (and the open ones too when ``everything``).

        ``send_batch`` waits while an earlier batch of the same partition is
        still queued: that is the backpressure on reading.
        """
        if everything:
            self._full += [(topic, part, builder) for (topic, part), builder in self._open.items()]
            self._open = {}
        producer = self._require()
        full, self._full = self._full, []
        for topic, partition, builder in full:
            self._pending.append(await producer.send_batch(builder, topic, partition=partition))

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
        writer = self.dead_letters
        if writer is None:
            raise RuntimeError("TransactionalSink.start() was not called")
        await writer.send(
            value,
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

    async def commit(self, states: Iterable[FileState], forgotten: Iterable[str] = ()) -> None:
        """Add the checkpoints (and tombstones of the ``forgotten`` fingerprints) and commit
        everything; raises when the transaction failed."""
        producer = self._require()
        await self.ship(everything=True)
        for fingerprint in forgotten:
            self._pending.append(
                await producer.send(self.checkpoint_topic, value=None, key=fingerprint.encode())
            )
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
        self._open = {}
        self._full = []
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

    async def ping(self) -> None:
        """Readiness: the started producer reaches the cluster."""
        await ping_producer(self._require())

    async def close(self) -> None:
        """At stop: a transaction still open is aborted (never half-visible), then the producer
        stops."""
        if self.in_transaction:
            await self.abort()
        await self.stop()
