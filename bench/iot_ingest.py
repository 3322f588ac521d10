"""iot-ingest: events/s from one large file on one core, against kcat producing the same file
to the same broker in the same run (ROUNDS rounds in alternating order, min/median/max,
both timed with and without their start and TLS/SCRAM handshake); and file-append →
read_committed latency at the nominal rate (~15 KB/s, DESIGN.md).

``python -m bench.iot_ingest --variants ... --rounds N`` prints the rounds without saving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from bench.harness import Result, run_quiet, run_workers
from bench.kafka_throughput import _kcat_config
from indutech_common.kafka import create_consumer, start_client
from indutech_common.logging import configure_logging
from indutech_common.schemas import SensorReading, Topics
from indutech_devtools.iot import GenerateOptions, generate
from indutech_iot_ingest.config import IotIngestSettings, Route
from indutech_iot_ingest.worker import IotIngestWorker
from tests.support.kafka import create_topics, delete_topics
from tests.support.stack import StackSettings, load_stack

RECORDS = 200_000
NOMINAL_BYTES_PER_S = 15_000
LATENCY_SECONDS = 20
CORE = 0
ROUNDS = 3


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


class _Timing(NamedTuple):
    from_start_s: float  # from the worker's construction: client start, TLS/SCRAM included
    from_ready_s: float  # from ingest_ready: the file alone


async def _ingest_file(
    make: Callable[[IotIngestSettings], IotIngestWorker],
    settings: IotIngestSettings,
    size: int,
) -> _Timing:
    """Until every line of the file (``size`` bytes) is committed."""
    began = time.perf_counter()
    worker = make(settings)
    task = asyncio.create_task(worker.serve(install_signal_handlers=False))
    try:
        while not worker.health.state.started:
            if task.done():
                raise RuntimeError(f"worker exited {task.result()}")
            await asyncio.sleep(0.005)
        ready = time.perf_counter()
        while sum(s.committed_offset for s in worker.tailer.states.values()) < size:
            if task.done():
                raise RuntimeError(f"worker exited {task.result()}")
            await asyncio.sleep(0.005)
        done = time.perf_counter()
        return _Timing(done - began, done - ready)
    finally:
        worker.request_exit()
        await task


# The levers of issue 18 were measured as variants of the worker here (commit c18dcbd:
# aiokafka's batch path, librdkafka, a batch validation per read, forwarding canonical
# lines); the narrative has their table. The kept path is the worker itself.
VARIANTS: dict[str, Callable[[IotIngestSettings], IotIngestWorker]] = {
    "iot-ingest": IotIngestWorker,
}


def _kcat(stack: StackSettings, directory: Path, topic: str, data: Path) -> float:
    """Seconds of one kcat run: process start, TLS/SCRAM handshake and every delivery."""
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
        topic,
        "-l",
        str(data),
        "-X",
        "acks=all",
        "-X",
        "enable.idempotence=true",
        "-X",
        "linger.ms=5",
    )
    return time.perf_counter() - started


def _file(directory: Path) -> Path:
    options = GenerateOptions(
        directory=directory / "gen",
        rate=0,
        count=RECORDS,
        seed=1,
        formats=("jsonl",),
        ticket_ratio=0.0,
    )
    generate(options)
    san = directory / "san"
    san.mkdir()
    data = san / "readings.jsonl"
    (directory / "gen" / "sensors" / "readings.jsonl").rename(data)
    return data


class Runs(NamedTuple):
    """events/s of each side over the rounds: kcat, and ours from start and from ready."""

    kcat: dict[str, list[float]]
    from_start: dict[str, list[float]]
    from_ready: dict[str, list[float]]
    kcat_one_line_s: list[float]
    # kcat's rate without its start and handshake: its time less that of a one-line run
    kcat_after_start: dict[str, list[float]]


def _throughput(
    stack: StackSettings, directory: Path, variants: Sequence[str], rounds: int
) -> tuple[Runs, float]:
    """``rounds`` rounds; in each, kcat and every variant in turn, the order reversed every
    other round (so both sides see the same noise); each run gets its own topics."""
    files = {"": _file(directory)}
    if any(v.endswith(CANONICAL) for v in variants):
        files[CANONICAL] = _canonical(files[""], directory / "san-canonical")
    one_line = directory / "one.jsonl"
    one_line.write_bytes(files[""].read_bytes().split(b"\n", 1)[0] + b"\n")
    runs = Runs({}, {}, {}, [], {})
    previous = os.sched_getaffinity(0)
    for number in range(rounds):
        order = [f"kcat{suffix}" for suffix in files] + list(variants)
        if number % 2:
            order.reverse()
        for side in order:
            name, _, suffix = side.partition("@")
            data = files[f"@{suffix}" if suffix else ""]
            safe = side.replace("@", "-at-").replace("+", "-and-")
            prefix = f"bench.iot-ingest.{os.getpid()}.{number}.{safe}"
            topics = _topics(prefix)
            _create(stack, topics, f"{prefix}.kcat", f"{prefix}.kcat1")
            try:
                if name == "kcat":
                    fixed = _kcat(stack, directory, f"{prefix}.kcat1", one_line)
                    runs.kcat_one_line_s.append(fixed)
                    whole = _kcat(stack, directory, f"{prefix}.kcat", data)
                    runs.kcat.setdefault(side, []).append(RECORDS / whole)
                    runs.kcat_after_start.setdefault(side, []).append(RECORDS / (whole - fixed))
                    continue
                os.sched_setaffinity(0, {CORE})  # librdkafka's threads inherit it
                try:
                    timing = run_workers(
                        _ingest_file(
                            VARIANTS[name],
                            _settings(stack, data.parent, topics),
                            data.stat().st_size,
                        )
                    )
                finally:
                    os.sched_setaffinity(0, previous)
                runs.from_start.setdefault(side, []).append(RECORDS / timing.from_start_s)
                runs.from_ready.setdefault(side, []).append(RECORDS / timing.from_ready_s)
            finally:
                names = [*topics.values(), f"{prefix}.kcat", f"{prefix}.kcat1"]
                asyncio.run(delete_topics(stack.kafka, names))
            print(f"   round {number + 1} {side} done", flush=True)
    return runs, files[""].stat().st_size / 1e6


CANONICAL = "@canonical"


def _canonical(data: Path, san: Path) -> Path:
    """The same readings, each line written in its canonical JSON (as the topic has it)."""
    san.mkdir()
    validator = SensorReading.__pydantic_validator__
    serializer = SensorReading.__pydantic_serializer__
    out = san / data.name
    with data.open("rb") as lines, out.open("wb") as target:
        for line in lines:
            target.write(serializer.to_json(validator.validate_json(line)) + b"\n")
    return out


def _spread(values: Sequence[float]) -> str:
    return (
        f"min {min(values) / 1000:,.1f}k / median {statistics.median(values) / 1000:,.1f}k / "
        f"max {max(values) / 1000:,.1f}k"
    )


def report(runs: Runs) -> str:
    """A plain-text table of the rounds (what the narrative's decision table is made of)."""
    lines = [f"{side}: {_spread(values)} events/s" for side, values in runs.kcat.items()]
    lines.append(
        "kcat with one line (its start, TLS/SCRAM handshake, one delivery): "
        f"median {statistics.median(runs.kcat_one_line_s) * 1000:.0f} ms"
    )
    lines += [
        f"{side} after its start: {_spread(values)} events/s"
        for side, values in runs.kcat_after_start.items()
    ]
    for side, values in runs.from_start.items():
        peer_side = "kcat" + ("@" + side.partition("@")[2] if "@" in side else "")
        ratio = statistics.median(values) / statistics.median(runs.kcat[peer_side])
        ready = runs.from_ready[side]
        ratio_ready = statistics.median(ready) / statistics.median(runs.kcat_after_start[peer_side])
        lines.append(
            f"{side}: with start {_spread(values)}, ratio {ratio:.3f}; "
            f"after start {_spread(ready)}, ratio {ratio_ready:.3f}"
        )
    return "\n".join(lines)


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
        runs, size_mb = _throughput(stack, directory, ["iot-ingest"], ROUNDS)
        print(report(runs), flush=True)
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
    ours, kcat = runs.from_ready["iot-ingest"], runs.kcat_after_start["kcat"]
    with_start, kcat_whole = runs.from_start["iot-ingest"], runs.kcat["kcat"]
    common = (
        f"{RECORDS:,} JSON sensor readings ({size_mb:.1f} MB) from one file, both pinned to "
        f"CPU {CORE}, {ROUNDS} rounds in alternating order; ours: parse + schema validation + "
        "transactional commits with checkpoints (aiokafka, 5,000 records/transaction); "
        "kcat: -P -l, acks=all, idempotent, no transactions, no validation; SASL_SSL "
        "SCRAM-SHA-512"
    )
    return [
        Result(
            name="iot_ingest_file_to_kafka",
            value=statistics.median(ours),
            unit="events/s",
            peer="kcat",
            peer_value=statistics.median(kcat),
            notes=(
                f"{common}; medians, both without process start and TLS/SCRAM handshake "
                "(ours from ingest_ready; kcat's time less a one-line kcat run's, median "
                f"{statistics.median(runs.kcat_one_line_s) * 1000:.0f} ms); ours {_spread(ours)}, "
                f"kcat {_spread(kcat)}"
            ),
        ),
        Result(
            name="iot_ingest_file_to_kafka_with_start",
            value=statistics.median(with_start),
            unit="events/s",
            peer="kcat",
            peer_value=statistics.median(kcat_whole),
            notes=(
                f"{common}; medians, both with the client start and TLS/SCRAM handshake (ours "
                "from the worker's construction: topic checks, InitProducerId, checkpoint read; "
                "not the interpreter's start and imports; kcat: the whole process); ours "
                f"{_spread(with_start)}, kcat {_spread(kcat_whole)}"
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


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.iot_ingest --variants a,b --rounds N``: the levers side by side with
    kcat, printed (nothing saved); ``python -m bench iot-ingest`` records the kept path."""
    global RECORDS  # noqa: PLW0603 - the file size of this command-line run

    parser = argparse.ArgumentParser(prog="python -m bench.iot_ingest")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--records", type=int, default=RECORDS, help="a smaller file to try")
    args = parser.parse_args(argv)
    RECORDS = args.records
    configure_logging(level="WARNING", fmt="console")
    with tempfile.TemporaryDirectory(prefix="indutech-bench-") as tmp:
        runs, _ = _throughput(load_stack(), Path(tmp), args.variants.split(","), args.rounds)
    print(json.dumps(runs._asdict()))
    print(report(runs))


if __name__ == "__main__":
    main()
