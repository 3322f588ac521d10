"""``sql.backup-completed.v1`` through a read_committed consumer group.

An announcement only says *which table* has a new complete run: the loader then applies
every pending night of that table from the backup itself (the manifests are the record),
so a lost, repeated or out-of-order announcement changes nothing. Offsets are committed
after the table's nights are applied (or found blocked, which is logged and counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from indutech_common.kafka import create_consumer, start_client, stop_client
from indutech_common.kafka.exceptions import KafkaUnavailableError
from indutech_common.schemas.sql_backup import BackupCompleted
from indutech_common.settings import KafkaSettings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

POLL_TIMEOUT_MS = 500


@dataclass(frozen=True)
class Announcements:
    """One poll: the announcements read, the ones that did not parse, and where to commit."""

    completed: list[BackupCompleted]
    invalid: list[str]
    offsets: dict[TopicPartition, int]

    def __bool__(self) -> bool:
        return bool(self.offsets)


class AnnouncementSource:
    """A ``Source`` of ``Announcements``; ``commit`` after their tables are loaded."""

    name = "kafka"

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    @classmethod
    async def open(
        cls, settings: KafkaSettings, topic: str, *, group_id: str, session_timeout_ms: int
    ) -> AnnouncementSource:
        consumer = create_consumer(
            settings,
            topic,
            group_id=group_id,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(1000, session_timeout_ms // 4),
            # a night can take long to apply: the poll interval must outlast it
            max_poll_interval_ms=6 * 60 * 60 * 1000,
        )
        await start_client(consumer, settings)
        return cls(consumer)

    async def read(self) -> Announcements:
        batches = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
        completed: list[BackupCompleted] = []
        invalid: list[str] = []
        offsets: dict[TopicPartition, int] = {}
        for tp, records in batches.items():
            for record in records:
                try:
                    completed.append(BackupCompleted.model_validate_json(record.value or b""))
                except ValidationError as exc:
                    invalid.append(f"{tp.topic}[{tp.partition}]@{record.offset}: {exc}")
                offsets[tp] = record.offset + 1
        return Announcements(completed, invalid, offsets)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self._consumer.commit(offsets)

    async def ping(self) -> None:
        try:
            await self._consumer.topics()
        except KafkaError as exc:
            raise KafkaUnavailableError(f"Kafka metadata refresh failed: {exc}") from exc

    async def close(self) -> None:
        await stop_client(self._consumer)
