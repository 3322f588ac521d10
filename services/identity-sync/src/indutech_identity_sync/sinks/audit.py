"""The audit trail: every applied change is logged, and optionally published to
``identity.changes.v1`` (key: the objectGUID written), after the cycle that made it.

Publication follows the directory write, so a crash between the two loses the
topic record of that write (the structured log line was already emitted); the
topic is an audit feed, not the sync's source of truth. The record is the contract
``indutech_common.schemas.ChangeRecord``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from indutech_common.kafka import create_producer, ping_producer, start_client, stop_client
from indutech_common.schemas import ChangeRecord
from indutech_common.settings import KafkaSettings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

__all__ = ["ChangeRecord", "KafkaAuditSink"]


class KafkaAuditSink:
    """A ``Sink`` of change records through the worker's idempotent producer."""

    name = "kafka"

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    @classmethod
    async def open(cls, settings: KafkaSettings, *, topic: str) -> KafkaAuditSink:
        producer = create_producer(settings)
        await start_client(producer, settings)
        return cls(producer, topic)

    async def write(self, batch: Sequence[ChangeRecord]) -> None:
        """Send every record and wait until each is acknowledged."""
        futures = [
            await self.producer.send(
                self.topic, value=record.model_dump_json().encode(), key=record.key()
            )
            for record in batch
        ]
        for future in futures:
            await future

    async def ping(self) -> None:
        await ping_producer(self.producer)

    async def close(self) -> None:
        await stop_client(self.producer)
