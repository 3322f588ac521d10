"""metrics-shipper (issue 16): series and log events shipped per core, PutMetricData calls per
cycle, PutLogEvents bytes per call, and the shipper's own cost at 10,000 series.

The target is ``bench.prom_target`` (a separate process on the other core): 10,000 series
(4,000 counters, 4,000 gauges, 2,000 histograms of 11 buckets) that all move every scrape.
CloudWatch is the stack's moto server over HTTPS, in a region of its own (``REGION``) so the
bench's datums stay out of the tests' ListMetrics; moto keeps every datum it was sent (no
delete in the API), so the bench keeps its cycles few.

- ``cycle``: ``python -m indutech_metrics_shipper`` (the worker as deployed) pinned to one
  core with ``taskset``, ``interval_s`` 10 s; after the first cycle (counters and histograms
  baselined), CPU seconds over ``CYCLES`` cycles from /proc: series per CPU-second, CPU
  seconds per cycle (÷ 60 s: the CPU share at the production interval) and RSS. Peer:
  prometheus-client's parser alone over the same text (the parsing ceiling: no conversion,
  no shipping), in this process pinned to the same core.
- ``calls``: the worker's own scrape source, converter and CloudWatch sink in this process;
  botocore's event hooks count the PutMetricData calls of each cycle and their body bytes
  (as serialized, what the 1 MB limit is checked against, and as sent, gzip).
- ``logs``: the shipper's log path (``LogShipper``: tail, parse the timestamps, batch,
  in-flight record, put, checkpoint) over JSON log files, in this process pinned to one core;
  peer: a plain aiobotocore loop sending the very batches ours sent (captured by an event
  hook) to another group, CPU of the loop only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import Result
from bench.iot_to_s3 import _answers, _cpu_seconds, _free_port, _peak_rss
from bench.prom_target import SERIES
from indutech_common.cloudwatch import create_cloudwatch_client, create_logs_client
from indutech_common.settings import CloudWatchSettings
from indutech_metrics_shipper.batching import MAX_CALL_BYTES, RequestSizer
from indutech_metrics_shipper.convert import Converter
from indutech_metrics_shipper.logs import (
    EVENT_OVERHEAD,
    MAX_BATCH_BYTES,
    LogCheckpoints,
    LogShipper,
)
from indutech_metrics_shipper.sinks import CloudWatchMetricsSink, DatumBuffer
from indutech_metrics_shipper.sources import ScrapeSource
from tests.support.stack import REPO_ROOT, load_stack, stack_env_file

REGION = "eu-west-3"  # moto keeps a backend per region: the bench's datums stay apart
CORE = str((os.cpu_count() or 1) - 1)  # the shipper's core
TARGET_CORE = "0"  # the generated target's core
REPEATS = int(os.environ.get("BENCH_SHIPPER_REPEATS", "3"))
CYCLES = int(os.environ.get("BENCH_SHIPPER_CYCLES", "3"))
INTERVAL_S = 10
PRODUCTION_INTERVAL_S = 60
LOG_FILES = 4
LOG_LINES = int(os.environ.get("BENCH_SHIPPER_LOG_LINES", "50000"))  # per file
_SAMPLE = re.compile(r"^(indutech_[a-z_]+)\{[^}]*\} ([0-9.e+]+)$", re.M)


def _cloudwatch() -> CloudWatchSettings:
    return load_stack().cloudwatch.model_copy(update={"region": REGION})


@contextmanager
def _target() -> Iterator[str]:
    """``bench.prom_target`` on a free port, pinned to ``TARGET_CORE``; yields its URL."""
    port = _free_port()
    process = subprocess.Popen(
        ["taskset", "-c", TARGET_CORE, sys.executable, "-m", "bench.prom_target", str(port)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError("bench.prom_target did not start")
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        process.terminate()
        process.wait(30)


def _own_metrics(port: int) -> dict[str, float]:
    """The shipper's own counters (summed over labels)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    values: dict[str, float] = {}
    for name, value in _SAMPLE.findall(text):
        values[name] = values.get(name, 0.0) + float(value)
    return values


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# -- (a) and (d): the worker as deployed -----------------------------------------------------


def _run_worker(url: str, namespace: str, log: Path) -> dict[str, float]:
    """One shipper process: CPU s over ``CYCLES`` cycles after the baseline cycle, datums they
    sent, the mean cycle wall time, RSS after them and the peak."""
    port = _free_port()
    stack_env = {k: v for k, v in dotenv_values(stack_env_file()).items() if v is not None}
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("METRICS_SHIPPER_", "INDUTECH_"))
        },
        # only CloudWatch from the stack: no broker lag nor warehouse queue source
        **{k: v for k, v in stack_env.items() if k.startswith("INDUTECH_CLOUDWATCH__")},
        "INDUTECH_CLOUDWATCH__REGION": REGION,
        "METRICS_SHIPPER_TARGETS": url,
        "METRICS_SHIPPER_NAMESPACE": namespace,
        "METRICS_SHIPPER_INTERVAL_S": str(INTERVAL_S),
        "METRICS_SHIPPER_HEALTH__HOST": "127.0.0.1",
        "METRICS_SHIPPER_HEALTH__PORT": str(port),
        "METRICS_SHIPPER_LOGGING__LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["taskset", "-c", CORE, sys.executable, "-m", "indutech_metrics_shipper"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_cycles(count: int) -> dict[str, float]:
        deadline = time.monotonic() + INTERVAL_S * (count + 3) + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"metrics-shipper exited: {log.read_text()[-2000:]}")
            values = _own_metrics(port)
            if values.get("indutech_batch_duration_seconds_count", 0) >= count:
                return values
            time.sleep(0.5)  # its /metrics answered on its core: poll rarely
        raise RuntimeError(f"metrics-shipper: no cycle {count}: {log.read_text()[-2000:]}")

    try:
        deadline = time.monotonic() + 60
        while not _answers(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        first = wait_cycles(1)
        cpu_first = _cpu_seconds(process.pid)
        last = wait_cycles(1 + CYCLES)
        cpu = _cpu_seconds(process.pid) - cpu_first
        return {
            "cpu_s": cpu,
            "datums": last["indutech_shipper_datums_sent_total"]
            - first["indutech_shipper_datums_sent_total"],
            "cycle_wall_s": (
                last["indutech_batch_duration_seconds_sum"]
                - first["indutech_batch_duration_seconds_sum"]
            )
            / CYCLES,
            "rss": _rss(process.pid),
            "peak": _peak_rss(process.pid),
            "dropped": last.get("indutech_shipper_series_dropped_total", 0.0),
            "api_errors": last.get("indutech_shipper_api_errors_total", 0.0),
        }
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


@contextmanager
def _pinned() -> Iterator[None]:
    """This process on the shipper's core for a measure of its own CPU time."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(CORE)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _parser_alone(url: str) -> float:
    """CPU s of prometheus-client's parser over one scrape's text (the parsing ceiling)."""
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - our http URL
        text = response.read().decode()
    with _pinned():
        began = time.process_time()
        families = list(text_string_to_metric_families(text))
        cpu = time.process_time() - began
    if sum(len(f.samples) for f in families) < SERIES:
        raise RuntimeError("the target's text holds fewer samples than series")
    return cpu


# -- (b): calls and bytes per cycle ------------------------------------------------------------


async def _calls(url: str, namespace: str, cycles: int) -> list[dict[str, Any]]:
    """The worker's scrape source, converter and sink, one cycle after another; per measured
    cycle: datums, calls, serialized bytes per call, bytes sent per call."""
    sizer = RequestSizer(namespace)
    calls: list[dict[str, Any]] = []

    def params(params: dict[str, Any], **_: Any) -> None:
        calls.append(
            {"datums": len(params["MetricData"]), "body": sizer.body_bytes(params["MetricData"])}
        )

    def sent(request: Any, **_: Any) -> None:
        body = request.body
        calls[-1]["sent"] = len(body) if isinstance(body, bytes) else len(str(body).encode())
        calls[-1]["encoding"] = request.headers.get("Content-Encoding", b"")

    source = ScrapeSource((url,), timeout_s=30)
    converter = Converter(state_epoch=time.time())
    out: list[dict[str, Any]] = []
    async with create_cloudwatch_client(_cloudwatch()) as client:
        client.meta.events.register("provide-client-params.cloudwatch.PutMetricData", params)
        client.meta.events.register("before-send.cloudwatch.PutMetricData", sent)
        sink = CloudWatchMetricsSink(client, namespace=namespace, buffer=DatumBuffer(200_000))
        try:
            for cycle in range(cycles + 1):
                (scrape,) = await source.read()
                assert scrape.text is not None, scrape.error
                report = converter.convert(scrape.target.id, scrape.text, scrape.scraped_at)
                calls.clear()
                await sink.write(report.datums)
                if len(sink.buffer):
                    raise RuntimeError(f"moto did not take every datum: {len(sink.buffer)} left")
                if cycle:  # the first cycle baselines counters and histograms
                    out.append({"datums": len(report.datums), "calls": list(calls)})
        finally:
            await source.close()
    return out


# -- (c): logs ---------------------------------------------------------------------------------


def _write_logs(directory: Path) -> tuple[int, int]:
    """JSON lines as the workers write them (structlog), dated the last minutes; (lines, bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC) - timedelta(minutes=30)
    total = size = 0
    for f in range(LOG_FILES):
        with (directory / f"worker-{f}.log").open("w") as out:
            for i in range(LOG_LINES):
                moment = now + timedelta(milliseconds=10 * i)
                line = json.dumps(
                    {
                        "event": "batch_written",
                        "level": "info",
                        "timestamp": moment.isoformat().replace("+00:00", "Z"),
                        "service": ("iot-ingest", "iot-to-s3", "iot-aggregator", "sql-backup")[f],
                        "topic": "iot.sensor-readings.v1",
                        "partition": i % 3,
                        "offset": 1_000_000 + i,
                        "records": 500 + i % 100,
                        "duration_s": round(0.05 + (i % 50) / 1000, 3),
                        "trace_id": f"{i:032x}",
                    }
                )
                out.write(line + "\n")
                total += 1
                size += len(line) + 1
    return total, size


async def _logs_ours(
    root: Path, state: Path, group: str
) -> tuple[float, float, list[tuple[str, list[dict[str, Any]]]], list[int]]:
    """(CPU s, wall s, the batches sent, bytes sent per call) of the shipper's log path."""
    batches: list[tuple[str, list[dict[str, Any]]]] = []
    sent: list[int] = []

    def params(params: dict[str, Any], **_: Any) -> None:
        batches.append((params["logStreamName"], params["logEvents"]))

    def on_send(request: Any, **_: Any) -> None:
        body = request.body
        sent.append(len(body) if isinstance(body, bytes) else len(str(body).encode()))

    expected = LOG_FILES * LOG_LINES
    async with create_logs_client(_cloudwatch()) as client:
        client.meta.events.register("provide-client-params.logs.PutLogEvents", params)
        client.meta.events.register("before-send.logs.PutLogEvents", on_send)
        shipper = LogShipper(
            client,
            root=root,
            patterns=("**/*.log",),
            group=group,
            checkpoints=LogCheckpoints(state),
        )
        await shipper.start()
        try:
            with _pinned():
                began_wall, began = time.perf_counter(), time.process_time()
                while shipper.events_sent < expected:
                    if not await shipper.ship():
                        raise RuntimeError(
                            f"log shipper stopped at {shipper.events_sent} of {expected} events "
                            f"({shipper.events_dropped} dropped)"
                        )
                cpu, wall = time.process_time() - began, time.perf_counter() - began_wall
        finally:
            shipper.close()
    return cpu, wall, batches, sent


async def _logs_peer(
    group: str, batches: list[tuple[str, list[dict[str, Any]]]]
) -> tuple[float, float]:
    """(CPU s, wall s) of a plain put_log_events loop over the same batches."""
    async with create_logs_client(_cloudwatch()) as client:
        await client.create_log_group(logGroupName=group)
        for stream in sorted({s for s, _ in batches}):
            await client.create_log_stream(logGroupName=group, logStreamName=stream)
        with _pinned():
            began_wall, began = time.perf_counter(), time.process_time()
            for stream, events in batches:
                response = await client.put_log_events(
                    logGroupName=group,
                    logStreamName=stream,
                    logEvents=events,  # type: ignore[arg-type]  # captured as sent
                )
                if response.get("rejectedLogEventsInfo"):
                    raise RuntimeError(f"peer batch rejected: {response['rejectedLogEventsInfo']}")
            return time.process_time() - began, time.perf_counter() - began_wall


async def _delete_groups(groups: list[str]) -> None:
    """moto frees a group's events with it."""
    async with create_logs_client(_cloudwatch()) as client:
        for group in groups:
            with suppress(client.exceptions.ResourceNotFoundException):
                await client.delete_log_group(logGroupName=group)


def _spread(values: list[float], digits: int = 0) -> str:
    return (
        f"min {min(values):,.{digits}f} / median {statistics.median(values):,.{digits}f} / "
        f"max {max(values):,.{digits}f}"
    )


def run() -> list[Result]:
    pid = os.getpid()
    workers: list[dict[str, float]] = []
    parser_cpu: list[float] = []
    cycles: list[dict[str, Any]] = []
    logs_ours: list[tuple[float, float]] = []
    logs_peer: list[tuple[float, float]] = []
    call_bytes: list[int] = []
    call_sent: list[int] = []
    call_events: list[int] = []
    with tempfile.TemporaryDirectory(prefix="indutech-bench-") as tmp:
        directory = Path(tmp)
        with _target() as url:
            for repeat in range(REPEATS):
                workers.append(
                    _run_worker(url, f"Bench/{pid}/worker-{repeat}", directory / f"w{repeat}.log")
                )
                parser_cpu.append(_parser_alone(url))
            cycles = asyncio.run(_calls(url, f"Bench/{pid}/calls", REPEATS))
        lines, log_bytes = _write_logs(directory / "logs")
        for repeat in range(REPEATS):
            ours_group, peer_group = f"/bench/{pid}/ours-{repeat}", f"/bench/{pid}/peer-{repeat}"
            state = directory / f"log-state-{repeat}"
            try:
                cpu, wall, batches, sent = asyncio.run(
                    _logs_ours(directory / "logs", state, ours_group)
                )
                logs_ours.append((cpu, wall))
                logs_peer.append(asyncio.run(_logs_peer(peer_group, batches)))
            finally:
                asyncio.run(_delete_groups([ours_group, peer_group]))
                shutil.rmtree(state, ignore_errors=True)
            call_events = [len(events) for _, events in batches]
            call_bytes = [
                sum(len(e["message"].encode()) + EVENT_OVERHEAD for e in events)
                for _, events in batches
            ]
            call_sent = sent
    for worker in workers:
        if worker["datums"] != SERIES * CYCLES or worker["dropped"] or worker["api_errors"]:
            raise RuntimeError(f"the shipper did not send {SERIES:,} datums a cycle: {worker}")
    per_core = [w["datums"] / w["cpu_s"] for w in workers]
    parser_rates = [SERIES / c for c in parser_cpu]
    cpu_per_cycle = [w["cpu_s"] / CYCLES for w in workers]
    shares = [100 * c / PRODUCTION_INTERVAL_S for c in cpu_per_cycle]
    rss = [w["rss"] / 2**20 for w in workers]
    peaks = [w["peak"] / 2**20 for w in workers]
    call_counts = [len(c["calls"]) for c in cycles]
    bodies = [call["body"] for c in cycles for call in c["calls"]]
    wire = [call["sent"] for c in cycles for call in c["calls"]]
    encodings = sorted({str(call.get("encoding")) for c in cycles for call in c["calls"]})
    log_rates = [lines / cpu for cpu, _ in logs_ours]
    peer_log_rates = [lines / cpu for cpu, _ in logs_peer]
    shared = (
        f"{REPEATS} runs, value = median; the machine (2 cores) is shared with other agents' "
        f"work, so CPU seconds, not wall time, are the measure"
    )
    text_note = (
        f"target: bench.prom_target (taskset -c {TARGET_CORE}), {SERIES:,} series (4,000 "
        f"counters, 4,000 gauges, 2,000 histograms of 11 buckets; 200 label sets a family, 36,100 "
        f"lines, 4.4 MB), all moving every scrape; CloudWatch: the stack's moto over HTTPS "
        f"(region {REGION})"
    )
    return [
        Result(
            name="metrics_shipper_series_per_core",
            value=statistics.median(per_core),
            unit="series/s per core",
            peer="prometheus-client parser alone (no conversion, no shipping)",
            peer_value=statistics.median(parser_rates),
            notes=f"python -m indutech_metrics_shipper pinned to one core (taskset -c {CORE}), "
            f"interval 10 s; per run, {CYCLES} cycles after the first (which baselines counters "
            f"and histograms), each: scrape over HTTP, parse, convert (counter increases, "
            f"histograms as Values/Counts), pack, PutMetricData; datums sent / CPU s of the "
            f"process: {_spread(per_core)}; every cycle sent {SERIES:,} datums, none dropped; "
            f"mean cycle wall {statistics.median(w['cycle_wall_s'] for w in workers):.2f} s; "
            f"peer: text_string_to_metric_families over the same text in the bench process on "
            f"the same core, {_spread(parser_rates)} series/s; {text_note}; {shared}",
        ),
        Result(
            name="metrics_shipper_put_metric_data_calls",
            value=statistics.median(call_counts),
            unit="calls per 10,000 series",
            notes=f"goal: the minimum, 10 (1,000 datums a call); {len(cycles)} cycles: "
            f"{_spread([float(c) for c in call_counts])} calls; serialized body "
            f"{_spread([float(b) for b in bodies])} bytes a call "
            f"({max(bodies) / MAX_CALL_BYTES:.0%} of the 1,000,000-byte limit at most), as sent "
            f"({', '.join(encodings) or 'no'} Content-Encoding) "
            f"{_spread([float(w) for w in wire])} bytes; the worker's "
            f"ScrapeSource, Converter and CloudWatchMetricsSink in the bench process, calls "
            f"counted by botocore's event hooks; {text_note}",
        ),
        Result(
            name="metrics_shipper_log_events_per_core",
            value=statistics.median(log_rates),
            unit="events/s per core",
            peer="aiobotocore put_log_events loop, same batches",
            peer_value=statistics.median(peer_log_rates),
            notes=f"{lines:,} JSON log lines ({log_bytes / 1e6:.0f} MB, ~{log_bytes // lines} B "
            f"each) in {LOG_FILES} files; ours: the shipper's LogShipper (tail, the line's own "
            f"timestamp parsed, batches within 10,000 events / 1,048,576 bytes, in-flight record "
            f"and offsets written with fsync, PutLogEvents) in the bench process pinned to one "
            f"core (taskset-like sched_setaffinity {CORE}): {_spread(log_rates)} ev/s, wall "
            f"{_spread([lines / w for _, w in logs_ours])} ev/s; peer: the very batches ours "
            f"sent (captured by an event hook) put by a plain loop to another group, streams "
            f"made beforehand: {_spread(peer_log_rates)} ev/s, wall "
            f"{_spread([lines / w for _, w in logs_peer])} ev/s; CloudWatch Logs: the stack's "
            f"moto over HTTPS (its time is in the wall rates only); {shared}",
        ),
        Result(
            name="metrics_shipper_log_bytes_per_call",
            value=statistics.fmean(call_bytes),
            unit="bytes per PutLogEvents call (mean)",
            notes=f"counted as the limit counts them (UTF-8 message + {EVENT_OVERHEAD} bytes an "
            f"event) against {MAX_BATCH_BYTES:,}: mean {statistics.fmean(call_bytes):,.0f} "
            f"({statistics.fmean(call_bytes) / MAX_BATCH_BYTES:.0%} of the limit), "
            f"{_spread([float(b) for b in call_bytes])} bytes; the shipper reads 10,000 lines "
            f"at a time and batches each file's share of a read alone, so each read ends in "
            f"part-filled calls; "
            f"{len(call_bytes)} calls for {lines:,} events "
            f"({_spread([float(e) for e in call_events])} events a call); request body as sent "
            f"{_spread([float(s) for s in call_sent])} bytes; "
            f"the last run of metrics_shipper_log_events_per_core",
        ),
        Result(
            name="metrics_shipper_cpu_share_at_60s",
            value=statistics.median(shares),
            unit="% of one core",
            notes=f"CPU seconds per cycle of 10,000 series "
            f"({_spread(cpu_per_cycle, 2)} s, measured at a 10 s interval over {CYCLES} cycles, "
            f"idle time between cycles included) / 60 s, the production interval; "
            f"{_spread(shares, 2)} %; same runs as metrics_shipper_series_per_core; {shared}",
        ),
        Result(
            name="metrics_shipper_rss",
            value=statistics.median(rss),
            unit="MiB",
            notes=f"VmRSS of the shipper after {1 + CYCLES} cycles of 10,000 series: "
            f"{_spread(rss)} MiB; peak (VmHWM) {_spread(peaks)} MiB; same runs as "
            f"metrics_shipper_series_per_core",
        ),
    ]
