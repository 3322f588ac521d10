"""Fixtures of the iot-to-s3 tests: unique topics and lake prefix, a producer, a lake reader."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from dotenv import dotenv_values

from indutech_common.kafka import (
    connection_kwargs,
    create_consumer,
    create_producer,
    start_client,
)
from indutech_common.s3 import create_s3_client
from indutech_common.schemas import ClientTicket, SensorReading, Topics, contract_spec
from indutech_iot_to_s3.config import IotToS3Settings
from tests.support.kafka import temporary_topics
from tests.support.s3 import delete_prefix
from tests.support.stack import REPO_ROOT, StackSettings, stack_env_file


@dataclass(frozen=True)
class Lake:
    """Where one test's worker reads and writes."""

    sensor_topic: str
    ticket_topic: str
    dead_letter_topic: str
    prefix: str
    group_id: str


@pytest.fixture
async def lake(stack: StackSettings, unique: str) -> AsyncIterator[Lake]:
    """Fresh topics (the contract's settings), a fresh group and lake prefix; all removed after."""
    names = Lake(
        sensor_topic=f"test.{unique}.sensor-readings",
        ticket_topic=f"test.{unique}.client-tickets",
        dead_letter_topic=f"test.{unique}.dead-letter",
        prefix=f"tests/iot-to-s3/{unique}/",
        group_id=f"test-iot-to-s3-{unique}",
    )
    topics = {
        names.sensor_topic: Topics.SENSOR_READINGS,
        names.ticket_topic: Topics.CLIENT_TICKETS,
        names.dead_letter_topic: Topics.DEAD_LETTER,
    }
    async with temporary_topics(stack.kafka, topics):
        yield names
    await delete_prefix(stack.s3, stack.s3.lake_bucket, names.prefix)


def settings_for(stack: StackSettings, lake: Lake, **overrides: Any) -> IotToS3Settings:
    values: dict[str, Any] = {
        "kafka": stack.kafka,
        "s3": stack.s3,
        "group_id": lake.group_id,
        "sensor_topic": lake.sensor_topic,
        "ticket_topic": lake.ticket_topic,
        "dead_letter_topic": lake.dead_letter_topic,
        "lake_prefix": lake.prefix,
        "health": {"host": "127.0.0.1", "port": 0},
        "session_timeout_ms": 6000,
        **overrides,
    }
    return IotToS3Settings(**values)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def worker_env(lake: Lake, **settings: str) -> dict[str, str]:
    """The environment of a worker subprocess: the stack's INDUTECH_* plus its own settings."""
    stack_env = {k: v for k, v in dotenv_values(stack_env_file()).items() if v is not None}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("IOT_TO_S3_", "INDUTECH_"))},
        **stack_env,
        "IOT_TO_S3_GROUP_ID": lake.group_id,
        "IOT_TO_S3_SENSOR_TOPIC": lake.sensor_topic,
        "IOT_TO_S3_TICKET_TOPIC": lake.ticket_topic,
        "IOT_TO_S3_DEAD_LETTER_TOPIC": lake.dead_letter_topic,
        "IOT_TO_S3_LAKE_PREFIX": lake.prefix,
        "IOT_TO_S3_HEALTH__HOST": "127.0.0.1",
        # An ephemeral port, never the default 8080 that other workers here may hold.
        "IOT_TO_S3_HEALTH__PORT": "0",
        "IOT_TO_S3_SESSION_TIMEOUT_MS": "6000",
        "IOT_TO_S3_LOGGING__LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",  # a SIGKILLed worker leaves its whole log
    }
    env.update(settings)
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "indutech_iot_to_s3"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def sensor_reading(i: int, event_time: datetime, run: str) -> SensorReading:
    return SensorReading(
        sensor_id=f"sensor-{i % 7}",
        site="lyon",
        metric="temperature",
        value=20.0 + i / 100,
        unit="C",
        event_time=event_time,
        event_id=f"{run}-s-{i}",
    )


def client_ticket(i: int, event_time: datetime, run: str) -> ClientTicket:
    return ClientTicket(
        ticket_id=f"t-{i}",
        customer_id=f"customer-{i % 5}",
        region="emea",
        event_time=event_time,
        revenue=Decimal(f"{i}.{i % 100:02d}"),
        latency_ms=i,
        status="open",
        event_id=f"{run}-t-{i}",
    )


BASE_TIME = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def records(count: int, run: str | None = None, *, start: int = 0) -> list[SensorReading]:
    run = run or uuid.uuid4().hex[:6]
    return [sensor_reading(i, BASE_TIME + timedelta(seconds=i), run) for i in range(start, count)]


async def produce(
    stack: StackSettings,
    topic: str,
    items: list[SensorReading] | list[ClientTicket] | list[bytes],
    *,
    transactional_id: str | None = None,
    partition: int | None = None,
) -> None:
    """Send records (models or raw bytes) and wait for all of them."""
    producer = create_producer(stack.kafka, transactional_id=transactional_id)
    await start_client(producer, stack.kafka)
    try:
        if transactional_id:
            async with producer.transaction():
                await _send(producer, topic, items, partition)
        else:
            await _send(producer, topic, items, partition)
    finally:
        await producer.stop()


async def _send(producer: Any, topic: str, items: list[Any], partition: int | None) -> None:
    futures = []
    for item in items:
        value = item if isinstance(item, bytes) else item.to_json_bytes()
        key = b"raw" if isinstance(item, bytes) else item.key()
        futures.append(await producer.send(topic, value, key=key, partition=partition))
    await asyncio.gather(*futures)


def lake_filesystem(stack: StackSettings) -> pafs.S3FileSystem:
    s3 = stack.s3
    assert s3.endpoint_url
    assert s3.access_key_id
    assert s3.secret_access_key
    scheme, _, host = s3.endpoint_url.partition("://")
    return pafs.S3FileSystem(
        access_key=s3.access_key_id.get_secret_value(),
        secret_key=s3.secret_access_key.get_secret_value(),
        region=s3.region,
        scheme=scheme,
        endpoint_override=host,
        tls_ca_file_path=str(s3.ca_file),
    )


def read_lake(stack: StackSettings, lake: Lake, topic: str) -> pa.Table:
    """The topic's part of the lake, read as one hive-partitioned dataset straight from S3."""
    filesystem = lake_filesystem(stack)
    base = f"{stack.s3.lake_bucket}/{lake.prefix}iot/{topic}"
    try:
        dataset = ds.dataset(base, filesystem=filesystem, format="parquet", partitioning="hive")
    except (FileNotFoundError, OSError):
        return pa.table({})
    return dataset.to_table()


async def lake_keys(stack: StackSettings, prefix: str) -> list[str]:
    keys: list[str] = []
    async with create_s3_client(stack.s3) as s3:
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=stack.s3.lake_bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
    return sorted(keys)


async def wait_for_rows(
    stack: StackSettings, lake: Lake, topic: str, expected: int, timeout_s: float = 60
) -> pa.Table:
    deadline = time.monotonic() + timeout_s
    table = pa.table({})
    while time.monotonic() < deadline:
        table = await asyncio.to_thread(read_lake, stack, lake, topic)
        if table.num_rows >= expected:
            return table
        await asyncio.sleep(0.5)
    pytest.fail(f"the lake holds {table.num_rows} rows of {topic}, expected {expected}")


async def committed_offset(stack: StackSettings, lake: Lake, tp: TopicPartition) -> int | None:
    admin = AIOKafkaAdminClient(**connection_kwargs(stack.kafka))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(lake.group_id, partitions=[tp])
    finally:
        await admin.close()
    found = offsets.get(tp)
    return None if found is None or found.offset < 0 else found.offset


async def read_dead_letters(
    stack: StackSettings, topic: str, *, isolation_level: str = "read_committed"
) -> list[Any]:
    """Every record of the dead-letter topic as a consumer with this isolation level sees it."""
    consumer = create_consumer(stack.kafka, group_id=None, isolation_level=isolation_level)
    await start_client(consumer, stack.kafka)
    try:
        partitions = contract_spec(Topics.DEAD_LETTER).partitions  # as temporary_topics made it
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: list[Any] = []
        deadline = time.monotonic() + 20
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, "the dead-letter topic was not read to its end"
            batches = await consumer.getmany(timeout_ms=500)
            found += [m for ms in batches.values() for m in ms]
    finally:
        await consumer.stop()
    return found


@pytest.fixture
def rng() -> random.Random:
    seed = int(time.time())
    print(f"random seed {seed}")
    return random.Random(seed)
