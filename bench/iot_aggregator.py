"""iot-aggregator: events per CPU-second of the worker (``python -m indutech_iot_aggregator``
as a subprocess pinned to one core with ``taskset``), from its health port's first answer
to every record's window final in the warehouse (PostgreSQL, over TLS); against Quix
Streams (``bench.quix_tickets``, the same pinning, its own consumer group, same topic and
data) computing the same tumbling-window aggregates and emitting each window once final,
with no sink. Both close the last windows on the same per-partition sentinel records."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from asyncpg.exceptions import InvalidSchemaNameError, UndefinedTableError
from dotenv import dotenv_values

from bench.harness import Result, run_quiet
from bench.iot_to_s3 import _answers, _cpu_seconds, _free_port, _peak_rss
from bench.kafka_throughput import _kcat_config
from indutech_common.kafka import create_producer, start_client
from indutech_common.schemas import ClientTicket, Topics, contract_spec
from indutech_common.warehouse import connect_warehouse
from tests.support.kafka import create_topics, delete_topics
from tests.support.stack import REPO_ROOT, StackSettings, load_stack, stack_env_file

RECORDS = 200_000
CUSTOMERS = 500
REGIONS = ("emea", "amer", "apac", "latam")
WINDOW_S = 60
GRACE_S = 5
STEP = timedelta(milliseconds=20)  # 200,000 records span ~67 one-minute windows
START = datetime(2026, 1, 1, tzinfo=UTC)
REPEATS = int(os.environ.get("BENCH_AGG_REPEATS", "3"))
CORE = str((os.cpu_count() or 1) - 1)  # the same core for both sides
PARTITIONS = contract_spec(Topics.CLIENT_TICKETS).partitions
QUIX_VERSION = "3.28.1"
# Quix Streams runs in its own throw-away environment (uv, same CPython minor): it pins
# pydantic < 2.14, below the workspace's, so it stays out of uv.lock.
QUIX_PYTHON = (
    "uv", "run", "--no-project", "--isolated", "--quiet",
    "--python", f"{sys.version_info.major}.{sys.version_info.minor}",
    "--with", f"quixstreams=={QUIX_VERSION}", "python",
)  # fmt: skip


def _ticket(i: int, event_time: datetime, customer: str, region: str) -> ClientTicket:
    return ClientTicket(
        ticket_id=f"t-{i}",
        customer_id=customer,
        region=region,
        revenue=Decimal(i % 10_000) / 100,
        latency_ms=i % 997,
        status="open",
        event_time=event_time,
        event_id=str(uuid.UUID(int=i)),
    )


def _write_records(
    path: Path, records: int = RECORDS, customers: int = CUSTOMERS, step: timedelta = STEP
) -> int:
    """The records, keyed by customer (the contract's key); a customer's region is fixed, so
    Quix's per-key windows are our (customer, region) groups. Returns the number of
    (window, customer) pairs, the final windows Quix must emit."""
    windows: set[tuple[int, int]] = set()
    with path.open("wb") as out:
        for i in range(records):
            c = (i * 7919) % customers
            event_time = START + step * i
            ticket = _ticket(i, event_time, f"customer-{c:04d}", REGIONS[c % len(REGIONS)])
            windows.add((int(event_time.timestamp()) // WINDOW_S, c))
            out.write(ticket.key() + b"\t" + ticket.to_json_bytes() + b"\n")
    return len(windows)


def _sentinels(directory: Path, records: int = RECORDS, step: timedelta = STEP) -> list[Path]:
    """One record per partition far enough ahead to close every window of the data (the
    per-partition watermark of both sides), outside the measured range."""
    at = START + step * records + timedelta(seconds=WINDOW_S + GRACE_S + WINDOW_S)
    paths = []
    for partition in range(PARTITIONS):
        ticket = _ticket(records + partition, at, f"sentinel-{partition}", "none")
        path = directory / f"sentinel-{records}-{partition}.jsonl"
        path.write_bytes(ticket.key() + b"\t" + ticket.to_json_bytes() + b"\n")
        paths.append(path)
    return paths


def _produce(config: Path, topic: str, data: Path, partition: int | None = None) -> None:
    where = ["-p", str(partition)] if partition is not None else []
    run_quiet(
        "kcat", "-F", str(config), "-P", "-t", topic, *where, "-K", "\t", "-l", str(data),
        "-X", "linger.ms=20", "-X", "acks=all",
    )  # fmt: skip


def _stack_env() -> dict[str, str]:
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("IOT_AGGREGATOR_", "INDUTECH_"))
        },
        **{k: v for k, v in dotenv_values(stack_env_file()).items() if v is not None},
        "PYTHONUNBUFFERED": "1",
    }


def _tail(log: Path) -> str:
    return log.read_text()[-2000:]


def _warehouse_ports(pid: int, port: int) -> set[int]:
    """The local ports of the process's TCP connections to the warehouse's port."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == port:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def _done(
    stack: StackSettings,
    schema: str,
    process: subprocess.Popen[bytes],
    log: Path,
    *,
    records: int = RECORDS,
    step: timedelta = STEP,
) -> float:
    """Wait until the view holds every record, in final windows only; then the CPU seconds
    (since their start) of the PostgreSQL backends serving the worker, the other half of
    its work."""
    end = START + step * records + timedelta(seconds=WINDOW_S)
    connection = await connect_warehouse(stack.warehouse)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"iot-aggregator exited: {_tail(log)}")
            try:
                row = await connection.fetchrow(
                    f"SELECT coalesce(sum(ticket_count), 0) AS n, bool_and(final) AS final "  # noqa: S608 - our schema name
                    f"FROM {schema}.ticket_aggregates WHERE window_start < $1",
                    end,
                )
            except (UndefinedTableError, InvalidSchemaNameError):  # the worker creates them
                row = None
            if row is not None and row["n"] == records and row["final"]:
                ports = _warehouse_ports(process.pid, stack.warehouse.port)
                backends = await connection.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])",
                    list(ports),
                )
                return sum(_cpu_seconds(b["pid"]) for b in backends)
            await asyncio.sleep(0.05)
        raise RuntimeError(f"iot-aggregator unfinished after 300 s: {_tail(log)}")
    finally:
        await connection.close()


async def _drop(stack: StackSettings, schema: str) -> None:
    connection = await connect_warehouse(stack.warehouse)
    try:
        await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await connection.close()


@contextmanager
def running_worker(
    stack: StackSettings,
    topics: dict[str, str],
    run: str,
    log: Path,
    *,
    window_s: int = WINDOW_S,
    grace_s: int = GRACE_S,
    settings: dict[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m indutech_iot_aggregator`` pinned to ``CORE`` on the bench's topics (tickets,
    readings, dead letters, in that order), with its own group and schema, from its health
    port's first answer; yields (process, schema), then SIGTERMs it and drops the schema."""
    port = _free_port()
    schema = f"bench_agg_{run}"
    ticket, sensor, dlq = topics
    env = {
        **_stack_env(),
        "IOT_AGGREGATOR_GROUP_ID": f"bench-agg-{run}",
        "IOT_AGGREGATOR_TICKET_TOPIC": ticket,
        "IOT_AGGREGATOR_SENSOR_TOPIC": sensor,
        "IOT_AGGREGATOR_DEAD_LETTER_TOPIC": dlq,
        "IOT_AGGREGATOR_WAREHOUSE_SCHEMA": schema,
        "IOT_AGGREGATOR_WINDOW_S": str(window_s),
        "IOT_AGGREGATOR_GRACE_S": str(grace_s),
        "IOT_AGGREGATOR_HEALTH__HOST": "127.0.0.1",
        "IOT_AGGREGATOR_HEALTH__PORT": str(port),
        "IOT_AGGREGATOR_LOGGING__LEVEL": "WARNING",
        **(settings or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["taskset", "-c", CORE, sys.executable, "-m", "indutech_iot_aggregator"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _answers(port) and time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"iot-aggregator exited: {_tail(log)}")
            time.sleep(0.02)
        yield process, schema
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        asyncio.run(_drop(stack, schema))


# Historic data: no window is provisional for long, so 10 s is the default's cost.
HISTORIC = {"IOT_AGGREGATOR_MAX_FUTURE_S": str(10 * 365 * 86400)}


def _run_ours(
    stack: StackSettings,
    topics: dict[str, str],
    run: str,
    log: Path,
    *,
    records: int = RECORDS,
    step: timedelta = STEP,
    **settings: str,
) -> tuple[float, float, int, float]:
    """(wall s, CPU s, peak RSS bytes) of the worker from its first health answer to every
    record's window final in the warehouse, and the CPU s of its PostgreSQL backends."""
    worker = running_worker(stack, topics, run, log, settings={**HISTORIC, **settings})
    with worker as (process, schema):
        started, cpu_started = time.perf_counter(), _cpu_seconds(process.pid)
        warehouse_cpu = asyncio.run(_done(stack, schema, process, log, records=records, step=step))
        wall = time.perf_counter() - started
        cpu = _cpu_seconds(process.pid) - cpu_started
        peak = _peak_rss(process.pid)
    return wall, cpu, peak, warehouse_cpu


def _run_quix(topic: str, run: str, windows: int, directory: Path) -> tuple[float, float]:
    state = directory / f"quix-state-{run}"
    log = directory / f"quix-{run}.log"
    with log.open("wb") as err:
        completed = subprocess.run(
            ["taskset", "-c", CORE, *QUIX_PYTHON, str(REPO_ROOT / "bench" / "quix_tickets.py"),
             topic, f"bench-quix-{run}", str(state), str(windows), str(WINDOW_S), str(GRACE_S)],
            env=_stack_env(), stdout=subprocess.PIPE, stderr=err, timeout=180, check=False,
        )  # fmt: skip
    lines = completed.stdout.decode().strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise RuntimeError(
            f"quix failed ({completed.returncode}): {lines[-1:]}\n{log.read_text()[-3000:]}"
        )
    result = json.loads(lines[-1])
    return float(result["wall_s"]), float(result["cpu_s"])


KEYS = 100_000
KEYS_STEP = timedelta(microseconds=500)  # 100,000 distinct customers within one minute
LIVE_WINDOW_S = 10
LIVE_GRACE_S = 1
LIVE_SECONDS = 65
LIVE_KEYS = 40
LIVE_INTERVAL_S = 0.1  # each key sends every 0.1 s: 400 events/s


async def _live(stack: StackSettings, topic: str, schema: str) -> list[float]:
    """Send tickets dated now for LIVE_SECONDS while polling the view every 50 ms; the
    seconds from each (window, group)'s end + grace to its final row first seen, for the
    windows wholly inside the stream (the first, partial one and those closed by idling
    after the stream stops are left out)."""
    producer = create_producer(stack.kafka)
    await start_client(producer, stack.kafka)
    connection = await connect_warehouse(stack.warehouse)
    seen: dict[tuple[datetime, str], float] = {}
    first = datetime.now(UTC)
    stop = first + timedelta(seconds=LIVE_SECONDS)

    async def produce() -> None:
        i = 0
        while datetime.now(UTC) < stop:
            for k in range(LIVE_KEYS):
                ticket = _ticket(i, datetime.now(UTC), f"live-{k:03d}", REGIONS[k % len(REGIONS)])
                await producer.send(topic, ticket.to_json_bytes(), key=ticket.key())
                i += 1
            await asyncio.sleep(LIVE_INTERVAL_S)
        await producer.flush()

    async def poll() -> None:
        while datetime.now(UTC) < stop + timedelta(seconds=LIVE_WINDOW_S):
            try:
                rows = await connection.fetch(
                    f"SELECT window_end, customer_id FROM {schema}.ticket_aggregates "  # noqa: S608 - our schema name
                    "WHERE final"
                )
            except (UndefinedTableError, InvalidSchemaNameError):
                rows = []
            now = time.time()
            for row in rows:
                seen.setdefault((row["window_end"], row["customer_id"]), now)
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(produce(), poll())
    finally:
        await producer.stop()
        await connection.close()
    grace = timedelta(seconds=LIVE_GRACE_S)
    return [
        at - (end + grace).timestamp()
        for (end, _), at in seen.items()
        if end - timedelta(seconds=LIVE_WINDOW_S) > first and end + grace < stop
    ]


def _run_latency(
    stack: StackSettings, topics: dict[str, str], log: Path, repeat: int
) -> list[float]:
    run = f"{os.getpid()}_live{repeat}"
    worker = running_worker(stack, topics, run, log, window_s=LIVE_WINDOW_S, grace_s=LIVE_GRACE_S)
    with worker as (_, schema):
        return asyncio.run(_live(stack, next(iter(topics)), schema))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _spread(values: list[float]) -> str:
    return (
        f"min {min(values):,.0f} / median {statistics.median(values):,.0f} / max {max(values):,.0f}"
    )


def _spread_s(values: list[float]) -> str:
    return f"min {min(values):.3f} / median {statistics.median(values):.3f} / max {max(values):.3f}"


def run() -> list[Result]:
    stack = load_stack()
    base = f"bench.iot-aggregator.{os.getpid()}"
    contract = {
        f"{base}.tickets": Topics.CLIENT_TICKETS,
        f"{base}.sensors": Topics.SENSOR_READINGS,
        f"{base}.dlq": Topics.DEAD_LETTER,
    }
    ours: list[tuple[float, float, int, float]] = []
    latencies: list[list[float]] = []
    keys_runs: list[tuple[float, float, int, float]] = []
    quix: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="indutech-bench-") as tmp:
        directory = Path(tmp)
        data = directory / "tickets.jsonl"
        windows = _write_records(data)
        config = _kcat_config(stack, directory)
        asyncio.run(create_topics(stack.kafka, contract))
        try:
            ticket_topic = f"{base}.tickets"
            _produce(config, ticket_topic, data)
            for partition, path in enumerate(_sentinels(directory)):
                _produce(config, ticket_topic, path, partition)
            for repeat in range(REPEATS):
                run_id = f"{os.getpid()}_{repeat}"
                ours.append(_run_ours(stack, contract, run_id, directory / f"ours-{repeat}.log"))
                quix.append(_run_quix(ticket_topic, run_id, windows, directory))
            keys = {f"{base}.keys": Topics.CLIENT_TICKETS}
            asyncio.run(create_topics(stack.kafka, keys))
            contract |= keys
            keys_data = directory / "keys.jsonl"
            _write_records(keys_data, KEYS, KEYS, KEYS_STEP)
            _produce(config, f"{base}.keys", keys_data)
            for partition, path in enumerate(_sentinels(directory, KEYS, KEYS_STEP)):
                _produce(config, f"{base}.keys", path, partition)
            for repeat in range(REPEATS):
                keys_runs.append(
                    _run_ours(
                        stack,
                        {**keys, **dict(list(contract.items())[1:3])},
                        f"{os.getpid()}_keys{repeat}",
                        directory / f"keys-{repeat}.log",
                        records=KEYS,
                        step=KEYS_STEP,
                        # every key open at once: no forced write before the last one
                        IOT_AGGREGATOR_MAX_OPEN_KEYS=str(KEYS + 1000),
                        IOT_AGGREGATOR_EMIT_INTERVAL_S="60",
                    )
                )
            for repeat in range(REPEATS):  # each run on its own topic: nothing left over
                live = {f"{base}.live{repeat}": Topics.CLIENT_TICKETS}
                asyncio.run(create_topics(stack.kafka, live))
                contract |= live
                latencies.append(
                    _run_latency(
                        stack,
                        {**live, **dict(list(contract.items())[1:3])},
                        directory / f"live-{repeat}.log",
                        repeat,
                    )
                )
        finally:
            asyncio.run(delete_topics(stack.kafka, list(contract)))
    our_rates = [RECORDS / cpu for _, cpu, _, _ in ours]
    with_db = [RECORDS / (cpu + db) for _, cpu, _, db in ours]
    quix_rates = [RECORDS / cpu for _, cpu in quix]
    our_walls = [RECORDS / wall for wall, _, _, _ in ours]
    quix_walls = [RECORDS / wall for wall, _ in quix]
    p50s = [_percentile(run, 0.5) for run in latencies]
    p99s = [_percentile(run, 0.99) for run in latencies]
    peaks = [peak / 2**20 for _, _, peak, _ in ours]
    note = (
        f"{RECORDS:,} client tickets, {CUSTOMERS} customer/region groups, {windows:,} "
        f"(window, group) results, 60 s tumbling windows + {GRACE_S} s grace, {PARTITIONS} "
        f"partitions, SASL_SSL SCRAM-SHA-512; both pinned to one core (taskset -c {CORE}), "
        f"{REPEATS} runs, value = median"
    )
    return [
        Result(
            name="iot_aggregator_events_per_core",
            value=statistics.median(our_rates),
            unit="events/s per core",
            peer=f"Quix Streams {QUIX_VERSION} (no sink)",
            peer_value=statistics.median(quix_rates),
            notes=f"python -m indutech_iot_aggregator subprocess: aiokafka read_committed, "
            f"validate, aggregate, binary COPY + upsert + offsets in one PostgreSQL "
            f"transaction per batch; from first health answer to every window final in the "
            f"view; ours {_spread(our_rates)}, Quix {_spread(quix_rates)} (bench.quix_tickets: "
            f"librdkafka, RocksDB state without changelog, reduce + final(), no output); wall "
            f"ours {statistics.median(our_walls):,.0f} ev/s, Quix "
            f"{statistics.median(quix_walls):,.0f} ev/s; {note}",
        ),
        Result(
            name="iot_aggregator_events_per_core_with_warehouse",
            value=statistics.median(with_db),
            unit="events/s per core",
            peer=f"Quix Streams {QUIX_VERSION} (no sink)",
            peer_value=statistics.median(quix_rates),
            notes=f"the same runs, counting also the CPU of the PostgreSQL backends serving the "
            f"worker (COPY, upsert, views; not WAL writer nor checkpointer): "
            f"{_spread(with_db)}; {note}",
        ),
        Result(
            name="iot_aggregator_final_latency_p50",
            value=statistics.median(p50s),
            unit="s",
            notes=f"window end + grace to the final row visible in the view (polled every 50 ms); "
            f"{REPEATS} runs, value = median of the runs' p50: {_spread_s(p50s)} s; "
            f"{min(len(run) for run in latencies)} to {max(len(run) for run in latencies)} "
            f"(window, group) rows a run; live stream of {LIVE_KEYS} groups x "
            f"{1 / LIVE_INTERVAL_S:.0f}/s dated now, {LIVE_WINDOW_S} s windows, {LIVE_GRACE_S} s "
            f"grace, {LIVE_SECONDS} s, one worker pinned to one core",
        ),
        Result(
            name="iot_aggregator_final_latency_p99",
            value=statistics.median(p99s),
            unit="s",
            notes=f"as p50 (goal < 5 s), the same runs: {_spread_s(p99s)} s; max "
            f"{max(max(run) for run in latencies):.2f} s",
        ),
        Result(
            name="iot_aggregator_peak_rss",
            value=statistics.median(peaks),
            unit="MiB",
            notes=f"VmHWM of the worker over the same runs ({CUSTOMERS} groups open per window): "
            f"{_spread(peaks)} MiB; {note}",
        ),
        Result(
            name="iot_aggregator_peak_rss_100k_keys",
            value=statistics.median(peak for _, _, peak, _ in keys_runs) / 2**20,
            unit="MiB",
            notes=f"VmHWM of the worker reading {KEYS:,} tickets of {KEYS:,} distinct "
            f"customer/region groups in one 60 s window (max_open_keys {KEYS + 1000:,}, no "
            f"provisional write: all {KEYS:,} keys open at once), until every group's final row "
            f"is in the view; {_spread([p / 2**20 for _, _, p, _ in keys_runs])} MiB over "
            f"{REPEATS} runs; {KEYS / statistics.median(c for _, c, _, _ in keys_runs):,.0f} "
            f"events/s per core in these runs",
        ),
    ]
