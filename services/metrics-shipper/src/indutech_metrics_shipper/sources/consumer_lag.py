"""Broker lag per consumer group and topic, in messages and in seconds (the seed's first alarm).

Our local broker has no Prometheus endpoint, and a worker cannot report its own
lag while it is stuck, so the shipper asks the broker: the group's committed
offsets (admin API) against the partitions' ends as a ``read_committed``
consumer sees them (the last stable offset: aborted and open transactions are
not lag). Lag in seconds is the age of the oldest record not consumed yet: the
record at the committed offset, read once per lagging partition. A partition
the group never committed counts from its beginning.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from indutech_common.kafka import create_consumer, start_client, stop_client
from indutech_common.kafka.topics import admin_client
from indutech_common.settings import KafkaSettings
from indutech_metrics_shipper.convert import Datum

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

_log = structlog.get_logger(__name__)
LAG_MESSAGES = "indutech_kafka_consumer_lag_messages"
LAG_SECONDS = "indutech_kafka_consumer_lag_seconds"


class ConsumerLagSource:
    """Reads every configured group's lag; ``read`` returns datums (sum and max per topic)."""

    name = "kafka-consumer-lag"

    def __init__(self, kafka: KafkaSettings, *, groups: tuple[str, ...] = ()) -> None:
        self._kafka = kafka
        self._groups = groups
        self._consumer: AIOKafkaConsumer | None = None

    async def _reader(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = create_consumer(self._kafka, group_id=None, max_poll_records=1)
            await start_client(consumer, self._kafka)
            self._consumer = consumer
        return self._consumer

    async def read(self) -> list[Datum]:
        now = time.time()
        async with admin_client(self._kafka) as admin:
            groups = list(self._groups)
            if not groups:
                listed = await admin.list_consumer_groups()
                groups = sorted(str(g[0]) for g in listed)
            committed: dict[str, dict[TopicPartition, int]] = {}
            for group in groups:
                offsets = await admin.list_consumer_group_offsets(group)
                committed[group] = {tp: meta.offset for tp, meta in offsets.items()}
        reader = await self._reader()
        partitions = {tp for offsets in committed.values() for tp in offsets}
        if not partitions:
            return []
        ends = await reader.end_offsets(list(partitions))
        starts = await reader.beginning_offsets(list(partitions))
        datums: list[Datum] = []
        for group, offsets in committed.items():
            messages: dict[str, int] = defaultdict(int)
            seconds: dict[str, float] = defaultdict(float)
            for tp, offset in offsets.items():
                position = offset if offset >= 0 else starts[tp]
                behind = max(0, ends[tp] - position)
                messages[tp.topic] += behind
                if behind:
                    age = await self._age_at(reader, tp, position, now)
                    seconds[tp.topic] = max(seconds[tp.topic], age)
                else:
                    seconds[tp.topic] = max(seconds[tp.topic], 0.0)
            for topic in sorted(messages):
                dims = (("consumer_group", group), ("topic", topic))
                datums.append(Datum(LAG_MESSAGES, dims, now, "Count", value=float(messages[topic])))
                datums.append(Datum(LAG_SECONDS, dims, now, "Seconds", value=seconds[topic]))
        return datums

    async def _age_at(
        self, reader: AIOKafkaConsumer, tp: TopicPartition, offset: int, now: float
    ) -> float:
        """Seconds since the record at ``offset`` was written (its broker or create time)."""
        reader.assign([tp])
        reader.seek(tp, offset)
        try:
            batch = await reader.getmany(tp, timeout_ms=2000, max_records=1)
        except KafkaError as exc:
            _log.warning("lag_record_unreadable", partition=str(tp), error=str(exc))
            return 0.0
        records = batch.get(tp, [])
        if not records:  # only transaction markers or aborted records ahead: nothing to age
            return 0.0
        written_ms: int = records[0].timestamp
        return max(0.0, now - written_ms / 1000)

    async def ping(self) -> None:
        async with admin_client(self._kafka) as admin:
            await admin.list_consumer_groups()

    async def close(self) -> None:
        if self._consumer is not None:
            await stop_client(self._consumer)
            self._consumer = None
