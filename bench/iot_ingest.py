"""iot-ingest: events/s from one large file on one core, against kcat producing the same file
to the same broker in the same run; and file-append → read_committed latency at the nominal
rate (~15 KB/s, DESIGN.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness import Result, run_quiet, run_workers
from bench.kafka_throughput import _kcat_config
from indutech_common.kafka import create_consumer, start_client
from indutech_common.schemas import Topics
from indutech_devtools.iot import GenerateOptions, generate
from indutech_iot_ingest.config import IotIngestSettings, Route
from indutech_iot_ingest.worker import IotIngestWorker
from tests.support.kafka import create_topics, delete_topics
from tests.support.stack import StackSettings, load_stack

RECORDS = 200_000
NOMINAL_BYTES_PER_S = 15_000
LATENCY_SECONDS = 20
CORE = 0


def _topics(prefix: str) -> dict[str, str]:
    return {
        "sensor_topic": f"{prefix}.sensors",
        "ticket_topic": f"{prefix}.tickets",
        "dead_letter_topic": f"{prefix}.dlq",
        "checkpoint_topic": f"{prefix}.checkpoints",
    }


CONTRACT = {
    "sensor_topic": Topics.SENSOR_READINGS,
    "ticket_topic": Topics.CLIENT_TICKETS,
    "dead_letter_topic": Topics.DEAD_LETTER,
    "checkpoint_topic": Topics.INGEST_CHECKPOINTS,
}


def _create(stack: StackSettings, topics: dict[str, str], *extra: str) -> None:
    """The worker's topics, and ``extra`` ones (kcat's) shaped as sensor readings."""
    contract = {name: CONTRACT[key] for key, name in topics.items()}
    contract |= dict.fromkeys(extra, Topics.SENSOR_READINGS)
    asyncio.run(create_topics(stack.kafka, contract))


def _settings(stack: StackSettings, san: Path, topics: dict[str, str]) -> IotIngestSettings:
    route = Route(name="bench", patterns=("*.jsonl",), record="sensor_reading", format="jsonl")
    return IotIngestSettings(
        kafka=stack.kafka,
        san_dir=san,
        routes=(route,),
        transactional_id=f"bench-iot-ingest-{uuid.uuid4().hex[:8]}",
        health={"port": 0, "host": "127.0.0.1"},
        logging={"level": "WARNING"},
        sensor_topic=topics["sensor_topic"],
        ticket_topic=topics["ticket_topic"],
        dead_letter_topic=topics["dead_letter_topic"],
        checkpoint_topic=topics["checkpoint_topic"],
    )


async def _ingest_file(stack: StackSettings, san: Path, topics: dict[str, str], size: int) -> float:
    """Seconds from start of reading until every line of the file (``size`` bytes) is committed."""
    worker = IotIngestWorker(_settings(stack, san, topics))
    task = asyncio.create_task(worker.serve(install_signal_handlers=False))
    try:
        while not worker.health.state.started:
            if task.done():
                raise RuntimeError(f"worker exited {task.result()}")
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        while sum(s.committed_offset for s in worker.tailer.states.values()) < size:
            if task.done():
                raise RuntimeError(f"worker exited {task.result()}")
            await asyncio.sleep(0.005)
        return time.perf_counter() - started
    finally:
        worker.request_exit()
        await task


def _throughput(stack: StackSettings, directory: Path) -> tuple[float, float, float]:
    san = directory / "san"
    san.mkdir()
    options = GenerateOptions(
        directory=directory / "gen",
        rate=0,
        count=RECORDS,
        seed=1,
        formats=("jsonl",),
        ticket_ratio=0.0,
    )
    generate(options)
    data = san / "readings.jsonl"
    (directory / "gen" / "sensors" / "readings.jsonl").rename(data)
    size_mb = data.stat().st_size / 1e6
    prefix = f"bench.iot-ingest.{os.getpid()}"
    topics = _topics(prefix)
    kcat_topic = f"{prefix}.kcat"
    _create(stack, topics, kcat_topic)
    try:
        config = _kcat_config(stack, directory)
        started = time.perf_counter()
        run_quiet(
            "taskset",
            "-c",
            str(CORE),
            "kcat",
            "-F",
            str(config),
            "-P",
            "-t",
            kcat_topic,
            "-l",
            str(data),
            "-X",
            "acks=all",
            "-X",
            "enable.idempotence=true",
            "-X",
            "linger.ms=5",
        )
        kcat_s = time.perf_counter() - started
        previous = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {CORE})
        try:
            ours_s = run_workers(_ingest_file(stack, san, topics, data.stat().st_size))
        finally:
            os.sched_setaffinity(0, previous)
    finally:
        asyncio.run(delete_topics(stack.kafka, [*topics.values(), kcat_topic]))
    return RECORDS / ours_s, RECORDS / kcat_s, size_mb


def _line(event_id: str, i: int) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "sensor_id": f"sensor-{i % 500:04d}",
            "site": "lyon",
            "metric": "temperature",
            "value": 60.0 + (i % 100) / 10,
            "unit": "C",
            "event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "quality": "good",
        },
        separators=(",", ":"),
    )


async def _latency(stack: StackSettings, san: Path, topics: dict[str, str]) -> list[float]:
    worker = IotIngestWorker(_settings(stack, san, topics))
    task = asyncio.create_task(worker.serve(install_signal_handlers=False))
    consumer = create_consumer(stack.kafka, topics["sensor_topic"], group_id=None)
    await start_client(consumer, stack.kafka)
    written: dict[str, float] = {}
    seen: dict[str, float] = {}

    async def consume() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for messages in batches.values():
                for message in messages:
                    seen.setdefault(json.loads(message.value)["event_id"], now)

    reader = asyncio.create_task(consume())
    try:
        while not worker.health.state.started:  # noqa: ASYNC110 - a flag of the worker's
            await asyncio.sleep(0.01)
        sample = _line(str(uuid.uuid4()), 0)
        per_second = max(1, NOMINAL_BYTES_PER_S // (len(sample) + 1))
        interval = 1 / per_second
        path = san / "live.jsonl"
        with path.open("a") as out:
            for i in range(per_second * LATENCY_SECONDS):
                event_id = str(uuid.uuid4())
                out.write(_line(event_id, i) + "\n")
                out.flush()
                written[event_id] = time.monotonic()
                await asyncio.sleep(interval)
        deadline = time.monotonic() + 10
        while len(seen) < len(written) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await consumer.stop()
        worker.request_exit()
        await task
    return [seen[i] - written[i] for i in written if i in seen]


def run() -> list[Result]:
    stack = load_stack()
    with tempfile.TemporaryDirectory(prefix="indutech-bench-") as tmp:
        directory = Path(tmp)
        ours, kcat, size_mb = _throughput(stack, directory)
        san = directory / "live"
        san.mkdir()
        topics = _topics(f"bench.iot-ingest-latency.{os.getpid()}")
        _create(stack, topics)
        try:
            latencies = run_workers(_latency(stack, san, topics))
        finally:
            asyncio.run(delete_topics(stack.kafka, list(topics.values())))
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    note: dict[str, Any] = {"records": RECORDS, "mb": round(size_mb, 1)}
    return [
        Result(
            name="iot_ingest_file_to_kafka",
            value=ours,
            unit="events/s",
            peer="kcat",
            peer_value=kcat,
            notes=(
                f"{note['records']:,} JSON sensor readings ({note['mb']} MB) from one file, "
                f"both pinned to CPU {CORE}; ours: parse + schema validation + transactional "
                "commits with checkpoints (5,000 records/transaction); kcat: -P -l, acks=all, "
                "idempotent, no transactions, no validation; SASL_SSL SCRAM-SHA-512"
            ),
        ),
        Result(
            name="iot_ingest_append_to_committed_p50",
            value=p50,
            unit="ms",
            notes=(
                f"{len(latencies)} lines appended at ~{NOMINAL_BYTES_PER_S // 1000} KB/s for "
                f"{LATENCY_SECONDS} s; append → seen by a read_committed consumer; poll 50 ms, "
                "commit every 100 ms"
            ),
        ),
        Result(
            name="iot_ingest_append_to_committed_p99",
            value=p99,
            unit="ms",
            notes="same run as the p50; target < 1000 ms (DESIGN.md flow 1)",
        ),
    ]


if __name__ == "__main__":
    from indutech_common.logging import configure_logging

    configure_logging(level="WARNING", fmt="console")
    for result in run():
        print(result)
