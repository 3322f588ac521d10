"""iot-to-s3: input MB/s per core from a topic to Parquet on S3 (the worker as a subprocess,
from its first ready partition to the last record committed), against kcat consuming the same
topic over the same SASL_SSL listener in the same run (the read ceiling); and the worker's
peak RSS."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dotenv import dotenv_values

from bench.harness import Result, run_quiet
from bench.kafka_throughput import _kcat_config
from indutech_common.schemas import SensorReading, Topics
from tests.support.kafka import create_topics, delete_topics
from tests.support.s3 import delete_prefix
from tests.support.stack import REPO_ROOT, load_stack, stack_env_file

RECORDS = 200_000
PARTITIONS = 3
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_RECORDS_OUT = re.compile(r"^indutech_records_out_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def _write_records(path: Path, count: int) -> int:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with path.open("wb") as out:
        for i in range(count):
            reading = SensorReading(
                sensor_id=f"sensor-{i % 5000:05d}",
                site=("lyon", "porto", "gdansk", "monterrey")[i % 4],
                metric="temperature",
                value=round(60 + (i % 1000) / 100, 3),
                unit="C",
                event_time=start + timedelta(milliseconds=20 * i),
                event_id=str(uuid.UUID(int=i)),
            )
            out.write(reading.to_json_bytes() + b"\n")
    return path.stat().st_size


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _records_out(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return sum(float(v) for v in _RECORDS_OUT.findall(response.read().decode()))
    except OSError:
        return 0.0


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
            return True
    except OSError:
        return False


def _free_port() -> int:
    import socket  # noqa: PLC0415 - only here

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_worker(topic: str, prefix: str, log: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS bytes) from ready to every record committed."""
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("IOT_TO_S3_", "INDUTECH_"))},
        **{k: v for k, v in dotenv_values(stack_env_file()).items() if v is not None},
        "IOT_TO_S3_GROUP_ID": f"bench-{topic}",
        "IOT_TO_S3_SENSOR_TOPIC": topic,
        "IOT_TO_S3_TICKET_TOPIC": f"{topic}.tickets",
        "IOT_TO_S3_DEAD_LETTER_TOPIC": f"{topic}.dlq",
        "IOT_TO_S3_LAKE_PREFIX": prefix,
        "IOT_TO_S3_HEALTH__HOST": "127.0.0.1",
        "IOT_TO_S3_HEALTH__PORT": str(port),
        "IOT_TO_S3_ROTATION__IDLE_S": "1",
        "IOT_TO_S3_LOGGING__LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "indutech_iot_to_s3"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not _answers(port) and time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"iot-to-s3 exited: {log.read_text()[-2000:]}")
            time.sleep(0.02)
        # From the health port's first answer (imports done; clients, group join and
        # recovery still ahead, and counted) to the last record committed.
        started, cpu_started = time.perf_counter(), _cpu_seconds(process.pid)
        deadline = time.monotonic() + 600
        while _records_out(port) < RECORDS and time.monotonic() < deadline:
            time.sleep(0.05)
        wall = time.perf_counter() - started
        cpu = _cpu_seconds(process.pid) - cpu_started
        peak = _peak_rss(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return wall, cpu, peak


def topic_contract(topic: str) -> dict[str, str]:
    """The bench's own topics, with the contract's settings (the worker checks them)."""
    return {
        topic: Topics.SENSOR_READINGS,
        f"{topic}.tickets": Topics.CLIENT_TICKETS,
        f"{topic}.dlq": Topics.DEAD_LETTER,
    }


def run() -> list[Result]:
    stack = load_stack()
    topic = f"bench.iot-to-s3.{os.getpid()}"
    prefix = f"bench/iot-to-s3/{os.getpid()}/"
    with tempfile.TemporaryDirectory(prefix="indutech-bench-") as tmp:
        directory = Path(tmp)
        data = directory / "records.jsonl"
        size_mb = _write_records(data, RECORDS) / 1e6
        config = _kcat_config(stack, directory)
        asyncio.run(create_topics(stack.kafka, topic_contract(topic)))
        try:
            run_quiet(
                "kcat",
                "-F",
                str(config),
                "-P",
                "-t",
                topic,
                "-l",
                str(data),
                "-X",
                "linger.ms=20",
                "-X",
                "acks=all",
            )
            before = os.times()
            started = time.perf_counter()
            run_quiet(
                "kcat",
                "-F",
                str(config),
                "-C",
                "-t",
                topic,
                "-o",
                "beginning",
                "-e",
                "-q",
                "-c",
                str(RECORDS),
                "-f",
                "%s\n",
                "-X",
                "isolation.level=read_committed",
            )
            kcat_wall = time.perf_counter() - started
            after = os.times()
            kcat_cpu = (after.children_user - before.children_user) + (
                after.children_system - before.children_system
            )
            wall, cpu, peak = _run_worker(topic, prefix, directory / "worker.log")
        finally:
            asyncio.run(delete_topics(stack.kafka, list(topic_contract(topic))))
            asyncio.run(delete_prefix(stack.s3, stack.s3.lake_bucket, prefix))
    note = (
        f"{RECORDS:,} sensor readings ({size_mb:.1f} MB JSON) on {PARTITIONS} partitions, "
        "SASL_SSL SCRAM-SHA-512 TLS 1.3; MB of input per CPU-second of the process"
    )
    return [
        Result(
            name="iot_to_s3_consume_kcat",
            value=size_mb / kcat_cpu if kcat_cpu else 0.0,
            unit="MB/s per core",
            notes=f"the read ceiling (read_committed, no output); wall {size_mb / kcat_wall:.1f} "
            f"MB/s; {note}",
        ),
        Result(
            name="iot_to_s3_to_parquet",
            value=size_mb / cpu if cpu else 0.0,
            unit="MB/s per core",
            peer="kcat consume",
            peer_value=size_mb / kcat_cpu if kcat_cpu else None,
            notes=f"validate, zstd Parquet, intent + upload + commit; wall {size_mb / wall:.1f} "
            f"MB/s; {note}",
        ),
        Result(
            name="iot_to_s3_peak_rss",
            value=peak / 2**20,
            unit="MiB",
            notes=f"VmHWM of the worker over the same run (default 256 MiB memory cap); {note}",
        ),
    ]
