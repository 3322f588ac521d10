"""iot-aggregator: the rebuild rate from the lake (issue 14), against plain pyarrow.

Set-up (not measured): client tickets produced to the bench's topics with kcat; the real
iot-to-s3 (``python -m indutech_iot_to_s3``) writes them to the lake under the bench's own
prefix and commits its offsets; the real stream (``python -m indutech_iot_aggregator``)
aggregates them into the bench's schema, so the stream's positions cover every record.

Measured, in turn and each pinned to the same core with ``taskset``:

- ours: ``python -m indutech_iot_aggregator rebuild --from … --to …`` over every window of the
  data, beside the (idle) stream, as the runbook runs it: list and read the range's Parquet
  objects from S3 (MinIO over TLS) chunk by chunk (an hour of event time each, the
  default), check iot-to-s3's committed offsets (Kafka), aggregate with pyarrow
  ``group_by`` into the stream's partial aggregates, and replace each chunk's rows with the
  stream's upsert in one PostgreSQL transaction per chunk (binary COPY + upsert, under the
  lock of the stream's offsets);
- peer (``bench.lake_groupby``): the same objects read from S3 by the same client, the same
  range filter, then ``pa.Table.group_by(window, customer, region).aggregate`` (count, revenue
  sum, latency sum/count/min/max); nothing written anywhere.

Both rates are records of the range / seconds from the start of the work (after the
interpreter's imports) to its end; the commands' whole wall and CPU time are in the notes.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from asyncpg import Record

from bench.harness import Result
from bench.iot_aggregator import (
    CORE,
    CUSTOMERS,
    HISTORIC,
    PARTITIONS,
    START,
    WINDOW_S,
    _done,
    _produce,
    _spread,
    _stack_env,
    _write_records,
    running_worker,
)
from bench.iot_to_s3 import _answers, _free_port
from bench.kafka_throughput import _kcat_config
from indutech_common.schemas import Topics
from indutech_common.warehouse import connect_warehouse
from indutech_iot_aggregator.rebuild import lake_positions
from tests.support.kafka import create_topics, delete_topics
from tests.support.s3 import delete_prefix
from tests.support.stack import REPO_ROOT, StackSettings, load_stack

RECORDS = int(os.environ.get("BENCH_REBUILD_RECORDS", "1200000"))
STEP = timedelta(milliseconds=20)  # 1,200,000 tickets span 400 one-minute windows
REPEATS = int(os.environ.get("BENCH_REBUILD_REPEATS", "3"))


def _range(records: int) -> tuple[datetime, datetime]:
    """Every whole window holding the data: [START, first window boundary after the last)."""
    last = START + STEP * (records - 1)
    windows = int((last - START).total_seconds()) // WINDOW_S + 1
    return START, START + timedelta(seconds=windows * WINDOW_S)


def _fill_lake(
    topics: dict[str, str], prefix: str, group: str, log: Path, stack: StackSettings
) -> None:
    """The real iot-to-s3 writes the topics to the lake; returns once its committed offsets
    cover every record (what ``rebuild`` checks before it writes)."""
    ticket, sensor, dlq = topics
    port = _free_port()
    env = {
        **{k: v for k, v in _stack_env().items() if not k.startswith("IOT_TO_S3_")},
        "IOT_TO_S3_GROUP_ID": group,
        "IOT_TO_S3_SENSOR_TOPIC": sensor,
        "IOT_TO_S3_TICKET_TOPIC": ticket,
        "IOT_TO_S3_DEAD_LETTER_TOPIC": dlq,
        "IOT_TO_S3_LAKE_PREFIX": prefix,
        "IOT_TO_S3_HEALTH__HOST": "127.0.0.1",
        "IOT_TO_S3_HEALTH__PORT": str(port),
        "IOT_TO_S3_ROTATION__IDLE_S": "1",
        "IOT_TO_S3_LOGGING__LEVEL": "WARNING",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "indutech_iot_to_s3"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    partitions = [(ticket, p) for p in range(PARTITIONS)]
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"iot-to-s3 exited: {log.read_text()[-2000:]}")
            if _answers(port):
                committed = asyncio.run(lake_positions(stack.kafka, group, partitions))
                if sum(n or 0 for n in committed.values()) >= RECORDS:
                    return
            time.sleep(2)
        raise RuntimeError(f"iot-to-s3 unfinished after 900 s: {log.read_text()[-2000:]}")
    finally:
        process.terminate()
        process.wait(60)


def _timed(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float, int]:
    """(wall s, CPU s, peak RSS bytes) of a child process run to its end."""
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(
            f"{command[3:6]} failed ({process.returncode}): {log.read_text()[-3000:]}"
        )
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def _events(log: Path) -> dict[str, dict[str, Any]]:
    """The JSON log lines of the run by event name (the last of each)."""
    found: dict[str, dict[str, Any]] = {}
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            found[str(entry.get("event"))] = entry
    return found


def _moment(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


def _run_ours(
    env: dict[str, str], start: datetime, end: datetime, log: Path
) -> tuple[float, float, float, int, dict[str, Any]]:
    """(work s, command wall s, CPU s, peak RSS bytes, rebuild_done) of one rebuild."""
    command = [
        "taskset", "-c", CORE, sys.executable, "-m", "indutech_iot_aggregator", "rebuild",
        "--from", start.isoformat(), "--to", end.isoformat(),
    ]  # fmt: skip
    wall, cpu, peak = _timed(command, env, log)
    events = _events(log)
    started, done = _moment(events["rebuild_started"]), events["rebuild_done"]
    # rebuild_done carries read_s, the lake reads of every chunk: the rest is the offsets
    # check, the aggregation and the upsert
    return _moment(done) - started, wall, cpu, peak, done


def _run_peer(
    env: dict[str, str], topic: str, prefix: str, span: tuple[datetime, datetime], log: Path
) -> tuple[float, float, float, int, dict[str, Any]]:
    """(work s, command wall s, CPU s, peak RSS bytes, its JSON report) of the pyarrow peer."""
    command = [
        "taskset", "-c", CORE, sys.executable, "-m", "bench.lake_groupby",
        topic, prefix, span[0].isoformat(), span[1].isoformat(), str(WINDOW_S),
    ]  # fmt: skip
    wall, cpu, peak = _timed(command, env, log)
    report = json.loads(log.read_text().strip().splitlines()[-1])
    return float(report["seconds"]), wall, cpu, peak, report


async def _totals(stack: StackSettings, schema: str, start: datetime, end: datetime) -> Record:
    connection = await connect_warehouse(stack.warehouse)
    try:
        row = await connection.fetchrow(
            f"SELECT count(*) AS groups, sum(ticket_count) AS tickets, "  # noqa: S608 - our schema name
            f"sum(revenue_sum) AS revenue, bool_and(final) AS final "
            f"FROM {schema}.ticket_aggregates WHERE window_start >= $1 AND window_start < $2",
            start,
            end,
        )
        assert row is not None  # an aggregate always returns a row
        return row
    finally:
        await connection.close()


def run() -> list[Result]:
    stack = load_stack()
    pid = os.getpid()
    base = f"bench.iot-aggregator-rebuild.{pid}"
    topics = {
        f"{base}.tickets": Topics.CLIENT_TICKETS,
        f"{base}.sensors": Topics.SENSOR_READINGS,
        f"{base}.dlq": Topics.DEAD_LETTER,
    }
    ticket_topic = f"{base}.tickets"
    prefix = f"bench/iot-aggregator-rebuild/{pid}/"
    lake_group = f"bench-rebuild-lake-{pid}"
    start, end = _range(RECORDS)
    ours: list[tuple[float, float, float, int, dict[str, Any]]] = []
    peer: list[tuple[float, float, float, int, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="indutech-bench-") as tmp:
        directory = Path(tmp)
        data = directory / "tickets.jsonl"
        _write_records(data, RECORDS, CUSTOMERS, STEP)
        size_mb = data.stat().st_size / 1e6
        config = _kcat_config(stack, directory)
        asyncio.run(create_topics(stack.kafka, topics))
        try:
            _produce(config, ticket_topic, data)
            data.unlink()
            stream = running_worker(
                stack,
                topics,
                f"{pid}_rebuild",
                directory / "stream.log",
                # the last windows close a second after the data stops: the stream is idle
                # (nothing left to write) while the rebuilds run beside it
                settings={**HISTORIC, "IOT_AGGREGATOR_IDLE_CLOSE_S": "1"},
            )
            with stream as (process, schema):
                _fill_lake(topics, prefix, lake_group, directory / "iot-to-s3.log", stack)
                asyncio.run(
                    _done(
                        stack, schema, process, directory / "stream.log", records=RECORDS, step=STEP
                    )
                )
                streamed = asyncio.run(_totals(stack, schema, start, end))
                env = {
                    **_stack_env(),
                    "IOT_AGGREGATOR_GROUP_ID": f"bench-agg-{pid}_rebuild",
                    "IOT_AGGREGATOR_TICKET_TOPIC": ticket_topic,
                    "IOT_AGGREGATOR_SENSOR_TOPIC": f"{base}.sensors",
                    "IOT_AGGREGATOR_DEAD_LETTER_TOPIC": f"{base}.dlq",
                    "IOT_AGGREGATOR_WAREHOUSE_SCHEMA": schema,
                    "IOT_AGGREGATOR_WINDOW_S": str(WINDOW_S),
                    "IOT_AGGREGATOR_LAKE_PREFIX": prefix,
                    "IOT_AGGREGATOR_LAKE_GROUP_ID": lake_group,
                    "IOT_AGGREGATOR_LOGGING__LEVEL": "INFO",
                    "IOT_AGGREGATOR_LOGGING__FORMAT": "json",
                }
                for repeat in range(REPEATS):
                    ours.append(_run_ours(env, start, end, directory / f"ours-{repeat}.log"))
                    peer.append(
                        _run_peer(
                            env,
                            ticket_topic,
                            prefix,
                            (start, end),
                            directory / f"peer-{repeat}.log",
                        )
                    )
                rebuilt = asyncio.run(_totals(stack, schema, start, end))
        finally:
            asyncio.run(delete_topics(stack.kafka, list(topics)))
            asyncio.run(delete_prefix(stack.s3, stack.s3.lake_bucket, prefix))
    # Like with like: both sides counted the same records into the same groups, and the
    # rebuilt rows equal what the stream wrote.
    check = (rebuilt["groups"], rebuilt["tickets"], rebuilt["revenue"], rebuilt["final"])
    if check != (streamed["groups"], RECORDS, streamed["revenue"], True):
        raise RuntimeError(
            f"rebuilt rows differ from the stream's: {dict(rebuilt)} vs {dict(streamed)}"
        )
    for _, _, _, _, done in ours:
        if done["records"] != RECORDS:
            raise RuntimeError(f"rebuild counted {done['records']} records, not {RECORDS}")
    for _, _, _, _, report in peer:
        if (report["records"], report["groups"], Decimal(report["revenue"])) != (
            RECORDS,
            rebuilt["groups"],
            rebuilt["revenue"],
        ):
            raise RuntimeError(f"the peer's aggregates differ: {report} vs {dict(rebuilt)}")
    our_rates = [RECORDS / work for work, *_ in ours]
    peer_rates = [RECORDS / work for work, *_ in peer]
    objects = peer[0][4]["objects"]
    return [
        Result(
            name="iot_aggregator_rebuild_rate",
            value=statistics.median(our_rates),
            unit="events/s",
            peer="pyarrow: S3 read + Table.group_by, no warehouse",
            peer_value=statistics.median(peer_rates),
            notes=f"iot-aggregator rebuild --from --to over {RECORDS:,} client tickets "
            f"({size_mb:.0f} MB JSON) in {objects} Parquet objects written by iot-to-s3 "
            f"(MinIO over TLS), {(end - start) // timedelta(minutes=1)} one-minute windows, "
            f"{int(rebuilt['groups']):,} (window, customer/region) rows, beside the idle stream; "
            f"ours: in {ours[0][4]['chunks']} chunk(s) of an hour of event time (the default), "
            f"read the chunk from S3, check iot-to-s3's committed offsets, pyarrow group_by "
            f"into the stream's partial aggregates, replace the chunk's rows by binary COPY + "
            f"upsert in one PostgreSQL transaction each (at most "
            f"{max(d['peak_records_held'] for *_, d in ours):,} lake records held at once); "
            f"from rebuild_started to rebuild_done: "
            f"{_spread(our_rates)} ev/s, of which the S3 read took "
            f"{statistics.median(d['read_s'] for *_, d in ours):.1f} s of "
            f"{statistics.median(w for w, *_ in ours):.1f} s (median); "
            f"whole command (imports included) "
            f"{statistics.median(w for _, w, _, _, _ in ours):.1f} s wall, "
            f"{statistics.median(c for _, _, c, _, _ in ours):.1f} CPU s, peak RSS "
            f"{statistics.median(p for *_, p, _ in ours) / 2**20:,.0f} MiB; peer "
            f"(bench.lake_groupby): the same objects by the same S3 client, the same range "
            f"filter, Arrow group_by count/sum/min/max, nothing written: {_spread(peer_rates)} "
            f"ev/s, peak RSS {statistics.median(p for *_, p, _ in peer) / 2**20:,.0f} MiB; "
            f"both give the same groups, counts and revenue; both pinned to one core "
            f"(taskset -c {CORE}), {REPEATS} runs each, alternating, value = median; the "
            f"machine is shared with other agents' work",
        )
    ]
