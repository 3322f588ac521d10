"""The key guarantee: SIGKILL the worker at random moments, change its rotation settings between
runs, and every committed record is still in the lake exactly once."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from indutech_common.kafka import create_producer, start_client
from tests.integration.iot_to_s3.conftest import (
    BASE_TIME,
    Lake,
    client_ticket,
    lake_keys,
    read_lake,
    sensor_reading,
    start_worker,
    worker_env,
)
from tests.support.stack import StackSettings
from tests.support.waits import wait_for_log

ROUNDS = 20
ROTATIONS = (
    {"MAX_RECORDS": "7", "IDLE_S": "0.2", "MAX_AGE_S": "0.5"},
    {"MAX_RECORDS": "50", "IDLE_S": "0.5", "MAX_AGE_S": "1"},
    {"MAX_RECORDS": "400", "MAX_BYTES": "20000", "IDLE_S": "1", "MAX_AGE_S": "3"},
)


async def produce_continuously(
    stack: StackSettings, lake: Lake, stop: asyncio.Event, rng: random.Random
) -> tuple[set[str], set[str]]:
    """Transactions of 1 to 60 records on both topics until stopped; one in eight is aborted."""
    committed: set[str] = set()
    aborted: set[str] = set()
    producer = create_producer(stack.kafka, transactional_id=f"{lake.group_id}-producer")
    await start_client(producer, stack.kafka)
    i = 0
    try:
        while not stop.is_set():
            abort = rng.random() < 1 / 8
            batch: set[str] = set()
            await producer.begin_transaction()
            for _ in range(rng.randint(1, 60)):
                i += 1
                # Event times jump around a three-hour window: late events are routine.
                when = BASE_TIME + timedelta(seconds=rng.randrange(3 * 3600))
                record = (
                    sensor_reading(i, when, "chaos") if i % 3 else client_ticket(i, when, "chaos")
                )
                topic = lake.sensor_topic if i % 3 else lake.ticket_topic
                await producer.send(topic, record.to_json_bytes(), key=record.key())
                batch.add(str(record.event_id))
            if abort:
                await producer.abort_transaction()
                aborted |= batch
            else:
                await producer.commit_transaction()
                committed |= batch
            await asyncio.sleep(rng.uniform(0.0, 0.1))
    finally:
        await producer.stop()
    return committed, aborted


def lake_event_ids(stack: StackSettings, lake: Lake) -> Counter[str]:
    ids: Counter[str] = Counter()
    for topic in (lake.sensor_topic, lake.ticket_topic):
        table = read_lake(stack, lake, topic)
        if table.num_rows:
            ids.update(table.column("event_id").to_pylist())
    return ids


async def wait_for_lake(
    stack: StackSettings, lake: Lake, expected: set[str], timeout_s: float = 60
) -> Counter[str]:
    """The lake's event ids once they include ``expected``, or as they are at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        ids = await asyncio.to_thread(lake_event_ids, stack, lake)
        if set(ids) >= expected or time.monotonic() >= deadline:
            return ids
        await asyncio.sleep(1)


class TestChaos:
    @pytest.mark.slow
    @pytest.mark.timeout(280)
    async def test_sigkill_at_random_moments_leaves_every_record_exactly_once(
        self, stack: StackSettings, lake: Lake, tmp_path: Path, rng: random.Random
    ) -> None:
        """20 SIGKILLs while producing, rotation changed between runs: no loss, no duplicate."""
        log = tmp_path / "worker.log"
        stop = asyncio.Event()
        producing = asyncio.create_task(produce_continuously(stack, lake, stop, rng))
        base = {"IOT_TO_S3_GROUP_INSTANCE_ID": f"{lake.group_id}-0"}
        rotation = ROTATIONS[0]
        kills_after_start: list[float] = []
        for round_ in range(ROUNDS):
            if round_ % 4 == 3:
                rotation = rng.choice(ROTATIONS)
            env = worker_env(
                lake, **base, **{f"IOT_TO_S3_ROTATION__{k}": v for k, v in rotation.items()}
            )
            seen = log.stat().st_size if log.exists() else 0
            process = start_worker(env, log)
            if round_ % 5 == 4:
                lifetime = rng.uniform(0.5, 4.0)  # a kill during start-up or recovery
            else:
                await wait_for_log(log, "partition_ready", process, since=seen)
                lifetime = rng.uniform(0.2, 3.0)  # a kill while replaying, consuming, flushing
            await asyncio.sleep(lifetime)
            assert process.poll() is None, log.read_text()[-3000:]
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait, 10)
            kills_after_start.append(round(lifetime, 2))
        stop.set()
        committed, aborted = await producing

        final = start_worker(worker_env(lake, **base, IOT_TO_S3_ROTATION__IDLE_S="0.3"), log)
        try:
            ids = await wait_for_lake(stack, lake, committed)
        finally:
            final.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(final.wait, 30)
        text = log.read_text()
        print(
            f"kills after {kills_after_start}s; {len(committed)} committed, {len(aborted)} "
            f"aborted; replays: {text.count('replaying_intent')}, segments: "
            f"{text.count('segment_written')}"
        )
        assert exit_code == 0
        duplicates = {event_id: n for event_id, n in ids.items() if n > 1}
        assert not duplicates, f"{len(duplicates)} duplicated, e.g. {list(duplicates)[:5]}"
        missing = committed - set(ids)
        assert not missing, f"{len(missing)} missing, e.g. {sorted(missing)[:5]}"
        assert not set(ids) & aborted, "aborted transactions must never reach the lake"
        assert set(ids) == committed
        assert text.count("replaying_intent") > 0, "no kill landed between an intent and its commit"
        # Kills are the only way a run may end early: no run failed on its own, and nothing
        # raised an exception that a log line had to carry as a traceback.
        failed = [line for line in text.splitlines() if '"event": "worker_failed"' in line]
        assert not failed, failed[:3]
        tracebacks = [line[:600] for line in text.splitlines() if "Traceback" in line]
        assert not tracebacks, tracebacks[:3]
        intents = await lake_keys(stack, f"{lake.prefix}_state/iot-to-s3/intents/")
        assert intents == [], "every intent is deleted once its segment is committed"
