"""Fixtures of the iot-aggregator tests: unique topics, consumer group and warehouse schema;
a producer; the reference aggregation of what was produced; the views read back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values

from indutech_common.kafka import create_producer, start_client
from indutech_common.schemas import ClientTicket, SensorReading, Topics, contract_spec
from indutech_common.warehouse import connect_warehouse
from indutech_iot_aggregator.config import IotAggregatorSettings
from indutech_iot_aggregator.worker import IotAggregatorWorker
from tests.support.kafka import temporary_topics
from tests.support.stack import REPO_ROOT, StackSettings, stack_env_file

# the contract's partition count of both IoT topics
PARTITIONS = contract_spec(Topics.CLIENT_TICKETS).partitions
WINDOW_S = 60
BASE_TIME = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Names:
    """Where one test's worker reads and writes."""

    sensor_topic: str
    ticket_topic: str
    dead_letter_topic: str
    group_id: str
    schema: str


@pytest.fixture
async def names(stack: StackSettings, unique: str) -> AsyncIterator[Names]:
    """Fresh topics (as the contract makes them), group and warehouse schema; all removed
    after."""
    made = Names(
        sensor_topic=f"test.{unique}.sensor-readings",
        ticket_topic=f"test.{unique}.client-tickets",
        dead_letter_topic=f"test.{unique}.dead-letter",
        group_id=f"test-iot-aggregator-{unique}",
        schema=f"test_agg_{unique}",
    )
    topics = {
        made.sensor_topic: Topics.SENSOR_READINGS,
        made.ticket_topic: Topics.CLIENT_TICKETS,
        made.dead_letter_topic: Topics.DEAD_LETTER,
    }
    try:
        async with temporary_topics(stack.kafka, topics):
            yield made
    finally:
        connection = await connect_warehouse(stack.warehouse)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {made.schema} CASCADE")
        finally:
            await connection.close()


def settings_for(stack: StackSettings, names: Names, **overrides: Any) -> IotAggregatorSettings:
    values: dict[str, Any] = {
        "kafka": stack.kafka,
        "warehouse": stack.warehouse,
        "group_id": names.group_id,
        "sensor_topic": names.sensor_topic,
        "ticket_topic": names.ticket_topic,
        "dead_letter_topic": names.dead_letter_topic,
        "warehouse_schema": names.schema,
        "health": {"host": "127.0.0.1", "port": 0},
        "session_timeout_ms": 6000,
        "window_s": WINDOW_S,
        "grace_s": 5,
        "emit_interval_s": 0.5,
        "idle_close_s": 2,
        **overrides,
    }
    return IotAggregatorSettings(**values)


@asynccontextmanager
async def running_worker(
    stack: StackSettings, names: Names, **overrides: Any
) -> AsyncIterator[IotAggregatorWorker]:
    """The worker in this process, drained (as on SIGTERM) when the block ends."""
    worker = IotAggregatorWorker(settings_for(stack, names, **overrides))
    task = asyncio.create_task(worker.serve(install_signal_handlers=False))
    try:
        yield worker
    finally:
        worker.request_exit()
        assert await asyncio.wait_for(task, timeout=60) == 0


def worker_env(names: Names, **settings: str) -> dict[str, str]:
    """The environment of a worker subprocess: the stack's INDUTECH_* plus its own settings."""
    stack_env = {k: v for k, v in dotenv_values(stack_env_file()).items() if v is not None}
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("IOT_AGGREGATOR_", "INDUTECH_"))
        },
        **stack_env,
        "IOT_AGGREGATOR_GROUP_ID": names.group_id,
        "IOT_AGGREGATOR_SENSOR_TOPIC": names.sensor_topic,
        "IOT_AGGREGATOR_TICKET_TOPIC": names.ticket_topic,
        "IOT_AGGREGATOR_DEAD_LETTER_TOPIC": names.dead_letter_topic,
        "IOT_AGGREGATOR_WAREHOUSE_SCHEMA": names.schema,
        "IOT_AGGREGATOR_HEALTH__HOST": "127.0.0.1",
        "IOT_AGGREGATOR_HEALTH__PORT": "0",
        "IOT_AGGREGATOR_SESSION_TIMEOUT_MS": "6000",
        "IOT_AGGREGATOR_LOGGING__LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",  # a SIGKILLed worker leaves its whole log
    }
    env.update(settings)
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "indutech_iot_aggregator"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def client_ticket(i: int, event_time: datetime, run: str = "t") -> ClientTicket:
    return ClientTicket(
        ticket_id=f"t-{i}",
        customer_id=f"customer-{i % 5}",
        region=("emea", "apac", "amer")[i % 3],
        event_time=event_time,
        revenue=Decimal(f"{i % 997}.{i % 100:02d}"),
        latency_ms=(i * 37) % 5000,
        status="open",
        event_id=f"{run}-t-{i}",
    )


def sensor_reading(i: int, event_time: datetime, run: str = "s") -> SensorReading:
    return SensorReading(
        sensor_id=f"sensor-{i % 7}",
        site=("lyon", "lille")[i % 2],
        metric=("temperature", "pressure")[i % 2],
        # quarters are exact in binary: float sums are then exact whatever the order
        value=(i % 400) / 4 - 20,
        unit="C",
        event_time=event_time,
        event_id=f"{run}-s-{i}",
    )


async def produce(
    stack: StackSettings,
    topic: str,
    items: Iterable[SensorReading | ClientTicket | bytes],
    *,
    partition: int | None = None,
) -> None:
    """Send records (models or raw bytes) and wait for all of them."""
    producer = create_producer(stack.kafka)
    await start_client(producer, stack.kafka)
    try:
        futures = []
        for item in items:
            value = item if isinstance(item, bytes) else item.to_json_bytes()
            key = b"raw" if isinstance(item, bytes) else item.key()
            futures.append(await producer.send(topic, value, key=key, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def window_of(moment: datetime) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    seconds = int((moment - epoch).total_seconds())
    return epoch + timedelta(seconds=seconds - seconds % WINDOW_S)


def expected_tickets(tickets: Iterable[ClientTicket]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """(window_start, customer, region) → count, revenue, latency sum, count, min, max."""
    groups: dict[tuple[Any, ...], list[ClientTicket]] = {}
    for ticket in tickets:
        key = (window_of(ticket.event_time), ticket.customer_id, ticket.region)
        groups.setdefault(key, []).append(ticket)
    return {
        key: (
            len(items),
            sum((t.revenue for t in items), Decimal("0.00")),
            sum(t.latency_ms for t in items),
            len(items),
            min(t.latency_ms for t in items),
            max(t.latency_ms for t in items),
        )
        for key, items in groups.items()
    }


def expected_readings(
    readings: Iterable[SensorReading],
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """(window_start, sensor, site, metric) → count, sum, min, max."""
    groups: dict[tuple[Any, ...], list[float]] = {}
    for reading in readings:
        key = (window_of(reading.event_time), reading.sensor_id, reading.site, reading.metric)
        groups.setdefault(key, []).append(reading.value)
    return {
        key: (len(values), sum(values), min(values), max(values)) for key, values in groups.items()
    }


async def view_tickets(stack: StackSettings, schema: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = await fetch(
        stack,
        schema,
        "SELECT window_start, customer_id, region, ticket_count, revenue_sum, latency_sum_ms, "
        "latency_count, latency_min_ms, latency_max_ms FROM ticket_aggregates",
    )
    return {tuple(r[:3]): tuple(r[3:]) for r in rows}


async def view_readings(
    stack: StackSettings, schema: str
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = await fetch(
        stack,
        schema,
        "SELECT window_start, sensor_id, site, metric, reading_count, value_sum, value_min, "
        "value_max FROM reading_aggregates",
    )
    return {tuple(r[:4]): tuple(r[4:]) for r in rows}


async def fetch(stack: StackSettings, schema: str, sql: str, *args: Any) -> list[Any]:
    """Rows of ``sql`` run with the test's schema as search path (names unqualified)."""
    connection = await connect_warehouse(stack.warehouse)
    try:
        await connection.execute("SELECT set_config('search_path', $1, false)", schema)
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


async def wait_for(
    probe: Callable[[], Any], done: Callable[[Any], bool], *, timeout_s: float = 60
) -> Any:
    """``await probe()`` until ``done(value)``; the last value at the deadline otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = await probe()
        except Exception:  # the schema may not exist yet
            value = None
        if (value is not None and done(value)) or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(0.3)
