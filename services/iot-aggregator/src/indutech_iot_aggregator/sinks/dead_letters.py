"""Refused records to the dead-letter topic, with their reason (at least once).

They are flushed before the warehouse transaction that moves their offsets, so
none is lost; a crash between the two may send one twice (operators replay by
``event_id``, so a duplicate dead letter is harmless).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from indutech_common.kafka import (
    DeadLetterWriter,
    create_producer,
    ping_producer,
    start_client,
    stop_client,
)
from indutech_common.metrics import WorkerMetrics
from indutech_common.settings import KafkaSettings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer


@dataclass(frozen=True)
class DeadLetter:
    value: bytes
    key: bytes | None
    reason: str
    error: str
    topic: str
    partition: int
    offset: int


class DeadLetterSink:
    """A ``Sink`` of dead letters through an idempotent producer."""

    name = "dead-letters"

    def __init__(self, producer: AIOKafkaProducer, writer: DeadLetterWriter) -> None:
        self._producer = producer
        self._writer = writer

    @classmethod
    async def open(
        cls, settings: KafkaSettings, *, topic: str, metrics: WorkerMetrics
    ) -> DeadLetterSink:
        producer = create_producer(settings)
        await start_client(producer, settings)
        return cls(producer, DeadLetterWriter(producer, metrics=metrics, topic=topic))

    async def write(self, batch: Sequence[DeadLetter]) -> None:
        for letter in batch:
            await self._writer.send(
                letter.value,
                reason=letter.reason,
                error=letter.error,
                source=f"{letter.topic}[{letter.partition}]",
                offset=letter.offset,
                key=letter.key,
            )
        await self._producer.flush()

    async def ping(self) -> None:
        await ping_producer(self._producer)

    async def close(self) -> None:
        await stop_client(self._producer)
