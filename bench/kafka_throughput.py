"""Produce and consume throughput over SASL_SSL (SCRAM-SHA-512, TLS 1.3) on the local
broker: kcat (librdkafka, C) is the ceiling; aiokafka, the client every worker uses, is
measured against it on the same records in the same run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.harness import Result, run_quiet
from indutech_common.kafka import connection_kwargs, create_consumer, create_producer, start_client
from tests.support.stack import StackSettings, load_stack

RECORDS = 200_000


def _records(path: Path, count: int) -> int:
    rng = random.Random(1)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with path.open("w") as out:
        for i in range(count):
            reading = {
                "sensor_id": f"sensor-{rng.randrange(5000):05d}",
                "site": rng.choice(["lyon", "porto", "gdansk", "monterrey"]),
                "metric": "temperature",
                "value": round(rng.gauss(60, 5), 3),
                "unit": "C",
                "event_time": (start + timedelta(milliseconds=i)).isoformat(),
                "quality": "good",
                "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            }
            out.write(json.dumps(reading) + "\n")
    return path.stat().st_size


def _kcat_config(stack: StackSettings, directory: Path) -> Path:
    config = directory / "kcat.conf"
    password = stack.kafka.password.get_secret_value() if stack.kafka.password else ""
    config.write_text(
        "\n".join(
            [
                f"bootstrap.servers={stack.kafka.bootstrap_servers}",
                "security.protocol=SASL_SSL",
                f"sasl.mechanisms={stack.kafka.sasl_mechanism}",
                f"sasl.username={stack.kafka.username}",
                f"sasl.password={password}",
                f"ssl.ca.location={stack.kafka.tls.ca_file}",
                "",
            ]
        )
    )
    config.chmod(0o600)
    return config


async def _topic(stack: StackSettings, name: str) -> None:
    admin = AIOKafkaAdminClient(**connection_kwargs(stack.kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()


async def _delete_topics(stack: StackSettings, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(**connection_kwargs(stack.kafka))
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


async def _aiokafka_produce(stack: StackSettings, topic: str, lines: list[bytes]) -> float:
    producer = create_producer(stack.kafka, linger_ms=20, max_batch_size=256 * 1024)
    await start_client(producer, stack.kafka)
    started = time.perf_counter()
    try:
        pending = []
        for line in lines:
            pending.append(await producer.send(topic, line))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def _aiokafka_consume(stack: StackSettings, topic: str, count: int) -> float:
    consumer = create_consumer(stack.kafka, topic, group_id=None, max_partition_fetch_bytes=4 << 20)
    await start_client(consumer, stack.kafka)
    seen = 0
    started = time.perf_counter()
    try:
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            seen += sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()
    return time.perf_counter() - started


def run() -> list[Result]:
    stack = load_stack()
    with tempfile.TemporaryDirectory(prefix="indutech-bench-") as tmp:
        directory = Path(tmp)
        data = directory / "records.jsonl"
        size_mb = _records(data, RECORDS) / 1e6
        config = _kcat_config(stack, directory)
        kcat_topic, aio_topic = f"bench.kcat.{os.getpid()}", f"bench.aiokafka.{os.getpid()}"
        asyncio.run(_topic(stack, kcat_topic))
        asyncio.run(_topic(stack, aio_topic))
        try:
            started = time.perf_counter()
            run_quiet(
                "kcat",
                "-F",
                str(config),
                "-P",
                "-t",
                kcat_topic,
                "-l",
                str(data),
                "-X",
                "linger.ms=20",
                "-X",
                "acks=all",
                "-X",
                "enable.idempotence=true",
            )
            kcat_produce = time.perf_counter() - started
            started = time.perf_counter()
            run_quiet(
                "kcat",
                "-F",
                str(config),
                "-C",
                "-t",
                kcat_topic,
                "-o",
                "beginning",
                "-e",
                "-q",
                "-c",
                str(RECORDS),
                "-f",
                "%s\n",
            )
            kcat_consume = time.perf_counter() - started
            aio_produce = asyncio.run(
                _aiokafka_produce(stack, aio_topic, data.read_bytes().splitlines())
            )
            aio_consume = asyncio.run(_aiokafka_consume(stack, aio_topic, RECORDS))
        finally:
            asyncio.run(_delete_topics(stack, [kcat_topic, aio_topic]))
    note = f"{RECORDS:,} JSON sensor readings, {size_mb:.1f} MB, SASL_SSL SCRAM-SHA-512 TLS 1.3"
    return [
        Result(
            name="kafka_produce_kcat",
            value=size_mb / kcat_produce,
            unit="MB/s",
            notes=f"the ceiling; acks=all, idempotent; {note}",
        ),
        Result(
            name="kafka_consume_kcat",
            value=size_mb / kcat_consume,
            unit="MB/s",
            notes=f"the ceiling; {note}",
        ),
        Result(
            name="kafka_produce_aiokafka",
            value=size_mb / aio_produce,
            unit="MB/s",
            peer="kcat",
            peer_value=size_mb / kcat_produce,
            notes=f"acks=all, idempotent, one asyncio task; {note}",
        ),
        Result(
            name="kafka_consume_aiokafka",
            value=size_mb / aio_consume,
            unit="MB/s",
            peer="kcat",
            peer_value=size_mb / kcat_consume,
            notes=f"read_committed, getmany; {note}",
        ),
    ]
