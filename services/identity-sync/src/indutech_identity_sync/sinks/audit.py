"""The audit trail: every applied change is logged, and optionally published to
``identity.changes.v1`` (key: the objectGUID written), after the cycle that made it.

Publication follows the directory write, so a crash between the two loses the
topic record of that write (the structured log line was already emitted); the
topic is an audit feed, not the sync's source of truth.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

_NAMESPACE = uuid.UUID("6c5b7f0e-3d1a-4c57-9a53-0d6f1c1e2a60")


class ChangeRecord(BaseModel):
    """One applied change, or one object quarantined (schema_version 1).

    For op ``quarantine`` the object could not be applied to ``side``: ``dn`` and
    ``object_guid`` name it on its own side, ``reason`` says why (the DNs concerned and what
    the DC answered; never attribute values).
    """

    schema_version: int = 1
    event_id: str = ""
    event_time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    side: Literal["onprem", "aws"]
    op: Literal["add", "modify", "move", "delete", "members", "quarantine"]
    dn: str
    object_guid: str = ""
    attributes: list[str] = Field(default_factory=list)  # names only, never values
    dry_run: bool = False
    reason: str = ""  # op quarantine: why the object could not be applied

    def model_post_init(self, _context: object) -> None:
        if not self.event_id:
            key = (
                f"{self.side}|{self.op}|{self.dn}|{self.object_guid}|{self.event_time.isoformat()}"
            )
            self.event_id = str(uuid.uuid5(_NAMESPACE, key))


class KafkaAuditSink:
    """Publishes change records with the worker's idempotent producer."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def publish(self, records: list[ChangeRecord]) -> None:
        futures = [
            await self.producer.send(
                self.topic,
                value=record.model_dump_json().encode(),
                key=(record.object_guid or record.dn).encode(),
            )
            for record in records
        ]
        for future in futures:
            await future
