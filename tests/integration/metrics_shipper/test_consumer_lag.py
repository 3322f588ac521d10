"""Broker lag per consumer group and topic, read from the real broker (SASL_SSL)."""

from __future__ import annotations

import time

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from indutech_common.kafka import create_consumer, create_producer, start_client, stop_client
from indutech_common.schemas import Topics
from indutech_metrics_shipper.sources import ConsumerLagSource
from tests.support.kafka import temporary_topics
from tests.support.stack import StackSettings

RECORDS = 10
CONSUMED = 4
AGE_S = 600  # the records' own timestamps: ten minutes old


class TestConsumerLag:
    async def test_lag_in_messages_and_in_seconds_per_group_and_topic(
        self, stack: StackSettings, unique: str
    ) -> None:
        topic = f"test.{unique}.sensor-readings"
        group = f"test-lag-{unique}"
        async with temporary_topics(stack.kafka, {topic: Topics.SENSOR_READINGS}):
            producer = create_producer(stack.kafka)
            await start_client(producer, stack.kafka)
            written_ms = int((time.time() - AGE_S) * 1000)
            try:
                for i in range(RECORDS):
                    await producer.send_and_wait(
                        topic, f"r{i}".encode(), partition=0, timestamp_ms=written_ms + i
                    )
            finally:
                await stop_client(producer)
            consumer = create_consumer(stack.kafka, group_id=group)
            await start_client(consumer, stack.kafka)
            try:  # the group has done the first CONSUMED records of partition 0
                tp = TopicPartition(topic, 0)
                consumer.assign([tp])
                await consumer.commit({tp: OffsetAndMetadata(CONSUMED, "")})
            finally:
                await stop_client(consumer)

            source = ConsumerLagSource(stack.kafka, groups=(group,))
            try:
                datums = await source.read()
            finally:
                await source.close()
        by_name = {d.name: d for d in datums}
        messages = by_name["indutech_kafka_consumer_lag_messages"]
        seconds = by_name["indutech_kafka_consumer_lag_seconds"]
        assert messages.dimensions == (("consumer_group", group), ("topic", topic))
        assert messages.value == RECORDS - CONSUMED
        # the oldest record not consumed is ten minutes old (give or take the test's own run)
        assert seconds.value is not None
        assert AGE_S - 5 < seconds.value < AGE_S + 120
