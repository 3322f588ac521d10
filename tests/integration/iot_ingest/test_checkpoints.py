"""The compacted checkpoint topic does not grow forever: a deleted file's checkpoint is
deleted (a tombstone) once no scan has found the file for ``forget_after_s``."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from structlog.testing import capture_logs

from indutech_common.kafka import create_consumer, create_producer, start_client
from indutech_iot_ingest.sinks import load_checkpoints
from tests.integration.iot_ingest.conftest import (
    IngestTopics,
    ingest_settings,
    read_committed,
    running,
)
from tests.support.stack import StackSettings


async def checkpoint_values(stack: StackSettings, topic: str) -> dict[bytes, bytes | None]:
    """The latest committed value per key of the checkpoint topic (None: a tombstone)."""
    consumer = create_consumer(stack.kafka, group_id=None)
    await start_client(consumer, stack.kafka)
    latest: dict[bytes, bytes | None] = {}
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        async with asyncio.timeout(20):
            while await consumer.position(tp) < end:
                for message in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                    latest[message.key] = message.value
    finally:
        await consumer.stop()
    return latest


def _reading(i: int) -> str:
    return json.dumps(
        {
            "event_id": f"forget-{i}",
            "sensor_id": "s-1",
            "site": "lyon",
            "metric": "temperature",
            "value": 20.0 + i,
            "unit": "C",
            "event_time": "2026-03-01T10:00:00Z",
        }
    )


class TestCheckpointTombstones:
    async def test_deleted_file_gets_a_tombstone_and_the_kept_one_its_checkpoint(
        self, stack: StackSettings, topics: IngestTopics, san: Path, unique: str
    ) -> None:
        """Delete one of two ingested files: its checkpoint key ends in a tombstone."""
        doomed = san / "sensors" / "doomed.jsonl"
        kept = san / "sensors" / "kept.jsonl"
        doomed.write_text("".join(_reading(i) + "\n" for i in range(3)))
        kept.write_text("".join(_reading(i) + "\n" for i in range(3, 6)))
        settings = ingest_settings(stack, topics, san, unique, forget_after_s=1.0, close_idle_s=0.5)
        async with running(settings) as worker:
            found = await read_committed(stack, topics, expected=6, settle_s=0.2)
            assert sum(found.ids.values()) == 6
            fingerprints = {Path(s.path).name: s.fingerprint for s in worker.tailer.states.values()}
            doomed.unlink()
            deadline = time.monotonic() + 20
            values = await checkpoint_values(stack, topics.checkpoint)
            while values.get(fingerprints["doomed.jsonl"].encode(), b"") is not None:
                assert time.monotonic() < deadline, "no tombstone within 20 s"
                await asyncio.sleep(0.5)
                values = await checkpoint_values(stack, topics.checkpoint)
            assert [s.path for s in worker.tailer.states.values()] == [str(kept)]
        kept_value = values[fingerprints["kept.jsonl"].encode()]
        assert kept_value is not None
        assert json.loads(kept_value)["offset"] == kept.stat().st_size


class TestCheckpointReaderStop:
    async def test_the_reader_s_stop_is_handed_over_not_awaited(
        self, stack: StackSettings, topics: IngestTopics
    ) -> None:
        """With ``stop_later``, the checkpoints come back while the reader's stop is still to
        run (it took 0.5 s, or its 2 s limit under uvloop's TLS close, of every start)."""
        producer = create_producer(stack.kafka)
        await start_client(producer, stack.kafka)
        handed: list[Coroutine[Any, Any, None]] = []
        try:
            states = await load_checkpoints(
                stack.kafka, topics.checkpoint, producer, stop_later=handed.append
            )
            assert states == []
            assert len(handed) == 1
            assert inspect.getcoroutinestate(handed[0]) == inspect.CORO_CREATED
            await handed[0]
        finally:
            await producer.stop()

    async def test_the_worker_runs_the_stop_beside_the_ingest_and_awaits_it(
        self, stack: StackSettings, topics: IngestTopics, san: Path, unique: str
    ) -> None:
        """The worker's start hands the stop to a task of its own, awaited by the shutdown
        at the latest: nothing left pending when the worker has stopped."""
        with capture_logs() as logs:
            async with running(ingest_settings(stack, topics, san, unique)) as worker:
                stopping = worker.checkpoint_reader_stop
                assert stopping is not None
        assert stopping.done()
        assert stopping.exception() is None
        assert not [
            e for e in logs if e["event"] in ("cleanup_failed", "cleanup_deadline_exceeded")
        ]
