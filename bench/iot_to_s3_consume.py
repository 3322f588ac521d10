"""Consume-only clients for the iot-to-s3 benchmark's client lever (issue 18): read
``count`` records of a topic ``read_committed`` in a fresh consumer group and exit, so
the parent times the process as it times kcat's.

    python -m bench.iot_to_s3_consume {aiokafka,confluent}[+decode|+model] TOPIC COUNT GROUP

``aiokafka``: ``getmany`` as the worker polls (same fetch sizes and max records);
``confluent``: confluent-kafka's ``consume(num_messages)`` (librdkafka). Both take each
record's value and offset into Python lists, as the worker needs them. ``+decode`` also
decodes every poll into Arrow with the worker's ``RecordCodec`` (the batch path, then the
model for what it leaves), ``+model`` with the model record by record (the path before
issue 18); no Parquet, no S3.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench.harness import run_workers
from indutech_common.kafka import create_consumer, start_client, stop_client
from indutech_iot_to_s3.sources import RecordCodec
from tests.support.stack import StackSettings, load_stack

POLL_RECORDS = 5_000  # the worker's default poll_max_records
FETCH_MAX_BYTES = 16 * 1024 * 1024  # the worker's fetch_max_bytes at its default memory cap
PARTITION_FETCH_BYTES = 1024 * 1024


Decode = Callable[[str, list[int], list[bytes | None]], object]


def _decoder(mode: str, topic: str) -> Decode | None:
    codec = RecordCodec(sensor_topic=topic, ticket_topic=f"{topic}.tickets")
    if mode.endswith("+decode"):
        return codec.decode_batch
    if mode.endswith("+model"):
        return codec.decode_records
    return None


async def _aiokafka(
    stack: StackSettings, topic: str, count: int, group: str, *, decode: Decode | None
) -> int:
    consumer = create_consumer(
        stack.kafka,
        topic,
        group_id=group,
        fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
    )
    await start_client(consumer, stack.kafka)
    seen = 0
    try:
        while seen < count:
            batches = await consumer.getmany(timeout_ms=200, max_records=POLL_RECORDS)
            for tp, records in batches.items():
                offsets = [r.offset for r in records]
                values = [r.value for r in records]
                if decode is not None:
                    decode(tp.topic, offsets, values)
                seen += len(values)
    finally:
        await stop_client(consumer)
    return seen


def _confluent(
    stack: StackSettings, topic: str, count: int, group: str, *, decode: Decode | None
) -> int:
    from confluent_kafka import Consumer  # noqa: PLC0415 - only this mode needs it

    kafka = stack.kafka
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "security.protocol": kafka.security_protocol,
            "sasl.mechanisms": kafka.sasl_mechanism,
            "sasl.username": kafka.username or "",
            "sasl.password": kafka.password.get_secret_value() if kafka.password else "",
            "ssl.ca.location": str(kafka.tls.ca_file),
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": FETCH_MAX_BYTES,
            "max.partition.fetch.bytes": PARTITION_FETCH_BYTES,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    try:
        while seen < count:
            messages = consumer.consume(num_messages=POLL_RECORDS, timeout=0.2)
            by_partition: dict[int, tuple[list[int], list[bytes | None]]] = {}
            for message in messages:
                partition, offset = message.partition(), message.offset()
                if message.error() is not None or partition is None or offset is None:
                    continue  # partition EOF and the like: nothing to take
                offsets, values = by_partition.setdefault(partition, ([], []))
                offsets.append(offset)
                values.append(message.value())
            for offsets, values in by_partition.values():
                if decode is not None:
                    decode(topic, offsets, values)
                seen += len(values)
    finally:
        consumer.close()
    return seen


def main() -> None:
    mode, topic, count, group = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    stack = load_stack()
    decode = _decoder(mode, topic)
    if mode.startswith("aiokafka"):
        seen = run_workers(_aiokafka(stack, topic, count, group, decode=decode))
    elif mode.startswith("confluent"):
        seen = _confluent(stack, topic, count, group, decode=decode)
    else:
        raise SystemExit(f"unknown mode {mode!r}: aiokafka or confluent, optionally +decode")
    if seen < count:
        raise SystemExit(f"read {seen} of {count} records")


if __name__ == "__main__":
    main()
