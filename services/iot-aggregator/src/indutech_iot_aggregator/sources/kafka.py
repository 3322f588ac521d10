"""The iot.* topics through a read_committed consumer group whose offsets live in the warehouse.

Kafka's committed offsets of the group are only advisory (they let the usual
tools show the group's lag): at assignment the worker seeks every partition to
the offset the warehouse holds, written in the same transaction as the
aggregates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from indutech_common.kafka import create_consumer, start_client, stop_client
from indutech_common.kafka.exceptions import KafkaUnavailableError
from indutech_common.settings import KafkaSettings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import ConsumerRecord

POLL_TIMEOUT_MS = 200


class TopicSource:
    """A ``Source`` of ``{partition: records}`` polls; pause, resume and seek per partition."""

    name = "kafka"

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    @classmethod
    async def open(
        cls,
        settings: KafkaSettings,
        topics: tuple[str, ...],
        *,
        group_id: str,
        group_instance_id: str | None,
        session_timeout_ms: int,
        max_records: int,
        listener: ConsumerRebalanceListener,
    ) -> TopicSource:
        consumer = create_consumer(
            settings,
            group_id=group_id,
            group_instance_id=group_instance_id,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(1000, session_timeout_ms // 4),
            max_poll_records=max_records,
        )
        await start_client(consumer, settings)
        source = cls(consumer)
        consumer.subscribe(list(topics), listener=listener)
        return source

    async def read(self) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        batches: dict[
            TopicPartition, list[ConsumerRecord[Any, Any]]
        ] = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
        return batches

    def pause(self, *partitions: TopicPartition) -> None:
        assigned = self._consumer.assignment()
        self._consumer.pause(*(tp for tp in partitions if tp in assigned))

    def resume(self, *partitions: TopicPartition) -> None:
        assigned = self._consumer.assignment()
        self._consumer.resume(*(tp for tp in partitions if tp in assigned))

    async def seek(self, partition: TopicPartition, offset: int | None) -> bool:
        """To the warehouse's offset; to the beginning when the warehouse has none.

        False when the partition is no longer assigned (a rebalance came in between)."""
        try:
            if offset is None:
                await self._consumer.seek_to_beginning(partition)
            else:
                self._consumer.seek(partition, offset)
        except (IllegalStateError, AssertionError):
            # aiokafka refuses a seek on a partition it no longer holds
            return False
        return True

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's end as of the last fetch; None when unknown or not assigned."""
        if partition not in self._consumer.assignment():
            return None
        value: int | None = self._consumer.highwater(partition)
        return value

    async def commit_advisory(self, offsets: dict[TopicPartition, int]) -> None:
        """Tell Kafka the group's position too, for lag tooling only; failures do not matter."""
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError):
            return

    async def ping(self) -> None:
        try:
            await self._consumer.topics()
        except KafkaError as exc:
            raise KafkaUnavailableError(f"Kafka metadata refresh failed: {exc}") from exc

    async def close(self) -> None:
        await stop_client(self._consumer)
