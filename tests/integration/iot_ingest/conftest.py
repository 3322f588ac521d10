"""Fixtures of the iot-ingest integration tests: unique topics, settings, a committed reader."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from indutech_common.kafka import create_consumer, start_client
from indutech_common.schemas import Topics
from indutech_iot_ingest.config import IotIngestSettings
from indutech_iot_ingest.worker import IotIngestWorker
from tests.support.kafka import temporary_topics
from tests.support.s3 import delete_prefix
from tests.support.stack import StackSettings


def run_prefix(unique: str) -> str:
    """The test's own prefix in the lake bucket (production's is empty)."""
    return f"tests/iot-ingest/{unique}/"


def dead_letter_prefix(unique: str) -> str:
    """The dead-letter store's production prefix moved under the test's own, so the IAM
    policy's path (dead-letter/iot-ingest/*) maps onto it."""
    production = IotIngestSettings.model_fields["dead_letter_prefix"].default
    return f"{run_prefix(unique)}{production}"


@pytest.fixture(autouse=True)
async def _dead_letter_objects(stack: StackSettings, unique: str) -> AsyncIterator[None]:
    """Objects a test's worker kept in the dead-letter store are deleted after it."""
    yield
    await delete_prefix(stack.s3, stack.s3.lake_bucket, dead_letter_prefix(unique))


@dataclass(frozen=True)
class IngestTopics:
    sensor: str
    ticket: str
    dead_letter: str
    checkpoint: str

    @property
    def records(self) -> tuple[str, str]:
        return (self.sensor, self.ticket)

    def contract(self) -> dict[str, str]:
        """Each topic's entry in the topic contract (what it is created and checked as)."""
        return {
            self.sensor: Topics.SENSOR_READINGS,
            self.ticket: Topics.CLIENT_TICKETS,
            self.dead_letter: Topics.DEAD_LETTER,
            self.checkpoint: Topics.INGEST_CHECKPOINTS,
        }

    def env(self) -> dict[str, str]:
        return {
            "IOT_INGEST_SENSOR_TOPIC": self.sensor,
            "IOT_INGEST_TICKET_TOPIC": self.ticket,
            "IOT_INGEST_DEAD_LETTER_TOPIC": self.dead_letter,
            "IOT_INGEST_CHECKPOINT_TOPIC": self.checkpoint,
        }


@pytest.fixture
async def topics(stack: StackSettings, unique: str) -> AsyncIterator[IngestTopics]:
    """Fresh record, dead-letter and (compacted) checkpoint topics, deleted afterwards."""
    names = IngestTopics(
        sensor=f"test.{unique}.sensors",
        ticket=f"test.{unique}.tickets",
        dead_letter=f"test.{unique}.dlq",
        checkpoint=f"test.{unique}.checkpoints",
    )
    async with temporary_topics(stack.kafka, names.contract()):
        yield names


@pytest.fixture
def san(tmp_path: Path) -> Path:
    directory = tmp_path / "san"
    (directory / "sensors").mkdir(parents=True)
    (directory / "tickets").mkdir()
    return directory


def ingest_settings(
    stack: StackSettings, topics: IngestTopics, san: Path, unique: str, **overrides: Any
) -> IotIngestSettings:
    values: dict[str, Any] = {
        "kafka": stack.kafka,
        "san_dir": san,
        "sensor_topic": topics.sensor,
        "ticket_topic": topics.ticket,
        "dead_letter_topic": topics.dead_letter,
        "checkpoint_topic": topics.checkpoint,
        "transactional_id": f"iot-ingest-test-{unique}",
        "s3": stack.s3,
        "dead_letter_prefix": dead_letter_prefix(unique),
        "health": {"port": 0, "host": "127.0.0.1"},
        "gzip_settle_s": 0.2,
        "close_idle_s": 2.0,
        "shutdown_timeout_s": 10.0,
        **overrides,
    }
    return IotIngestSettings(**values)


@asynccontextmanager
async def running(settings: IotIngestSettings) -> AsyncIterator[IotIngestWorker]:
    """The worker serving in this event loop; drained (as on SIGTERM) on exit."""
    worker = IotIngestWorker(settings)
    task = asyncio.create_task(worker.serve(install_signal_handlers=False))
    try:
        deadline = time.monotonic() + 30
        while not worker.health.state.started:
            if task.done() or time.monotonic() > deadline:
                raise AssertionError(f"worker did not start (exit {task.result()})")
            await asyncio.sleep(0.02)
        yield worker
    finally:
        worker.request_exit()
        assert await asyncio.wait_for(task, 30) == 0


@dataclass
class Committed:
    """What a read_committed consumer found: ids per topic and dead letters."""

    ids: Counter[str] = field(default_factory=Counter)
    by_topic: Counter[str] = field(default_factory=Counter)
    values: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[tuple[bytes, dict[str, bytes]]] = field(default_factory=list)

    @property
    def duplicates(self) -> dict[str, int]:
        return {event_id: n for event_id, n in self.ids.items() if n > 1}


async def read_committed(
    stack: StackSettings,
    topics: IngestTopics,
    *,
    expected: int,
    expected_dead: int = 0,
    timeout_s: float = 30.0,
    settle_s: float = 1.0,
) -> Committed:
    """Every committed record (read_committed) until the expected counts, then ``settle_s`` more."""
    consumer = create_consumer(stack.kafka, *topics.records, topics.dead_letter, group_id=None)
    await start_client(consumer, stack.kafka)
    found = Committed()
    try:
        deadline = time.monotonic() + timeout_s
        settled_at: float | None = None
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                for message in messages:
                    if tp.topic == topics.dead_letter:
                        found.dead_letters.append((message.value, dict(message.headers)))
                        continue
                    record = json.loads(message.value)
                    found.ids[record["event_id"]] += 1
                    found.by_topic[tp.topic] += 1
                    found.values.append(record)
            done = sum(found.ids.values()) >= expected and len(found.dead_letters) >= expected_dead
            if done and settled_at is None:
                settled_at = time.monotonic()
            if settled_at is not None and time.monotonic() - settled_at >= settle_s:
                break
    finally:
        await consumer.stop()
    return found


def worker_env(
    stack: StackSettings, topics: IngestTopics, san: Path, unique: str, **extra: str
) -> dict[str, str]:
    """Environment for the worker as a subprocess (the stack's INDUTECH_* plus ours)."""
    kafka = stack.kafka
    password = kafka.password.get_secret_value() if kafka.password else ""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOT_INGEST_", "INDUTECH_"))}
    s3 = stack.s3
    s3_values = {
        "ENDPOINT_URL": s3.endpoint_url,
        "REGION": s3.region,
        "ACCESS_KEY_ID": s3.access_key_id.get_secret_value() if s3.access_key_id else None,
        "SECRET_ACCESS_KEY": (
            s3.secret_access_key.get_secret_value() if s3.secret_access_key else None
        ),
        "SSE": s3.sse,
        "KMS_KEY_ID": s3.kms_key_id,
        "CA_FILE": str(s3.ca_file) if s3.ca_file else None,
        "LAKE_BUCKET": s3.lake_bucket,
    }
    env.update({f"IOT_INGEST_S3__{k}": v for k, v in s3_values.items() if v is not None})
    env.update(
        {
            "IOT_INGEST_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "IOT_INGEST_KAFKA__SECURITY_PROTOCOL": kafka.security_protocol,
            "IOT_INGEST_KAFKA__SASL_MECHANISM": kafka.sasl_mechanism,
            "IOT_INGEST_KAFKA__USERNAME": kafka.username or "",
            "IOT_INGEST_KAFKA__PASSWORD": password,
            "IOT_INGEST_KAFKA__TLS__CA_FILE": str(kafka.tls.ca_file),
            "IOT_INGEST_SAN_DIR": str(san),
            "IOT_INGEST_TRANSACTIONAL_ID": f"iot-ingest-test-{unique}",
            "IOT_INGEST_DEAD_LETTER_PREFIX": dead_letter_prefix(unique),
            "IOT_INGEST_HEALTH__PORT": "0",
            "IOT_INGEST_HEALTH__HOST": "127.0.0.1",
            "IOT_INGEST_GZIP_SETTLE_S": "0.2",
            "PYTHONUNBUFFERED": "1",
            "IOT_INGEST_CLOSE_IDLE_S": "2",
            **topics.env(),
            **extra,
        }
    )
    return env


def generated_ids(records: Iterator[tuple[str, dict[str, Any]]]) -> Counter[str]:
    return Counter(str(record["event_id"]) for _, record in records)
