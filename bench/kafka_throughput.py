"""Produce and consume throughput over SASL_SSL (SCRAM-SHA-512, TLS 1.3) on the local
broker: kcat (librdkafka, C) is the ceiling; aiokafka, the client every worker uses, is
measured against it on the same records in the same rounds (alternating order, min /
median / max kept). Both sides are timed from before their connection to after their
close; kcat's process start is inside its time (a C binary: ``kcat -V`` is measured and
stated), the Python interpreter's is not."""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.harness import Result, run_quiet
from bench.stats import spread
from indutech_common.kafka import connection_kwargs, create_consumer, create_producer, start_client
from tests.support.stack import StackSettings, load_stack

RECORDS = 200_000
REPEATS = int(os.environ.get("BENCH_KAFKA_REPEATS", "3"))


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
    """Seconds from before the producer's connection (TLS, SCRAM, metadata) to every record
    acknowledged and the producer stopped: kcat's run counts the same."""
    producer = create_producer(stack.kafka, linger_ms=20, max_batch_size=256 * 1024)
    started = time.perf_counter()
    await start_client(producer, stack.kafka)
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
    """Seconds from before the consumer's connection to ``count`` records read and the
    consumer stopped, as kcat's run counts them."""
    consumer = create_consumer(stack.kafka, topic, group_id=None, max_partition_fetch_bytes=4 << 20)
    seen = 0
    started = time.perf_counter()
    await start_client(consumer, stack.kafka)
    try:
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            seen += sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()
    return time.perf_counter() - started


def _kcat(*args: str) -> float:
    started = time.perf_counter()
    run_quiet("kcat", *args)
    return time.perf_counter() - started


def _kcat_produce(config: Path, topic: str, data: Path) -> float:
    return _kcat(
        "-F", str(config), "-P", "-t", topic, "-l", str(data),
        "-X", "linger.ms=20", "-X", "acks=all", "-X", "enable.idempotence=true",
    )  # fmt: skip


def _kcat_consume(config: Path, topic: str) -> float:
    return _kcat(
        "-F", str(config), "-C", "-t", topic, "-o", "beginning", "-e", "-q",
        "-c", str(RECORDS), "-f", "%s\n",
    )  # fmt: skip


@dataclass
class _Runs:
    kcat_produce: list[float] = field(default_factory=list)
    kcat_consume: list[float] = field(default_factory=list)
    aio_produce: list[float] = field(default_factory=list)
    aio_consume: list[float] = field(default_factory=list)
    kcat_start: list[float] = field(default_factory=list)


def _round(stack: StackSettings, config: Path, data: Path, r: int, runs: _Runs) -> None:
    """One round on fresh topics: produce then consume, kcat first in even rounds and
    aiokafka first in odd ones, so both sides meet the same noise."""
    kcat_topic, aio_topic = f"bench.kcat.{os.getpid()}.{r}", f"bench.aiokafka.{os.getpid()}.{r}"
    asyncio.run(_topic(stack, kcat_topic))
    asyncio.run(_topic(stack, aio_topic))
    lines = data.read_bytes().splitlines()

    def kcat_produce() -> None:
        runs.kcat_produce.append(_kcat_produce(config, kcat_topic, data))

    def aio_produce() -> None:
        runs.aio_produce.append(asyncio.run(_aiokafka_produce(stack, aio_topic, lines)))

    def kcat_consume() -> None:
        runs.kcat_consume.append(_kcat_consume(config, kcat_topic))

    def aio_consume() -> None:
        runs.aio_consume.append(asyncio.run(_aiokafka_consume(stack, aio_topic, RECORDS)))

    steps = [kcat_produce, aio_produce, kcat_consume, aio_consume]
    if r % 2:  # odd rounds: aiokafka first
        steps = [aio_produce, kcat_produce, aio_consume, kcat_consume]
    try:
        for step in steps:
            step()
        runs.kcat_start.append(_kcat("-V"))
    finally:
        asyncio.run(_delete_topics(stack, [kcat_topic, aio_topic]))


def run() -> list[Result]:
    stack = load_stack()
    runs = _Runs()
    with tempfile.TemporaryDirectory(prefix="indutech-bench-") as tmp:
        directory = Path(tmp)
        data = directory / "records.jsonl"
        size_mb = _records(data, RECORDS) / 1e6
        config = _kcat_config(stack, directory)
        for r in range(REPEATS):
            _round(stack, config, data, r, runs)
    rates = {
        name: [size_mb / s for s in getattr(runs, name)]
        for name in ("kcat_produce", "kcat_consume", "aio_produce", "aio_consume")
    }
    note = (
        f"{RECORDS:,} JSON sensor readings, {size_mb:.1f} MB, SASL_SSL SCRAM-SHA-512 TLS 1.3; "
        f"{REPEATS} rounds on fresh topics, kcat and aiokafka in alternating order, value = "
        f"median; both sides include the client's connection (TLS, SCRAM, metadata) and its "
        f"close; kcat's process start is included too (`kcat -V`: "
        f"{spread([s * 1000 for s in runs.kcat_start], 1)} ms), the Python interpreter's start "
        f"is not"
    )
    return [
        Result(
            name="kafka_produce_kcat",
            value=statistics.median(rates["kcat_produce"]),
            unit="MB/s",
            notes=f"the ceiling; acks=all, idempotent: {spread(rates['kcat_produce'], 1)} "
            f"MB/s; {note}",
        ),
        Result(
            name="kafka_consume_kcat",
            value=statistics.median(rates["kcat_consume"]),
            unit="MB/s",
            notes=f"the ceiling: {spread(rates['kcat_consume'], 1)} MB/s; {note}",
        ),
        Result(
            name="kafka_produce_aiokafka",
            value=statistics.median(rates["aio_produce"]),
            unit="MB/s",
            peer="kcat",
            peer_value=statistics.median(rates["kcat_produce"]),
            notes=f"acks=all, idempotent, one asyncio task: ours "
            f"{spread(rates['aio_produce'], 1)}, kcat {spread(rates['kcat_produce'], 1)} MB/s; "
            f"{note}",
        ),
        Result(
            name="kafka_consume_aiokafka",
            value=statistics.median(rates["aio_consume"]),
            unit="MB/s",
            peer="kcat",
            peer_value=statistics.median(rates["kcat_consume"]),
            notes=f"read_committed, getmany: ours {spread(rates['aio_consume'], 1)}, kcat "
            f"{spread(rates['kcat_consume'], 1)} MB/s; {note}",
        ),
    ]
