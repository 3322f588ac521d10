"""iot-to-s3: input MB/s per core from a topic to Parquet on S3, against kcat consuming the
same topic over the same SASL_SSL listener (the read ceiling); the Kafka client lever of
issue 18 (aiokafka's getmany against confluent-kafka's consume, both consume-only, with and
without the batch decode into Arrow); and the worker's peak RSS.

Like with like: every side is a separate process pinned to the same core (``taskset``),
run in alternating order over ``ROUNDS`` rounds on the same topic (a fresh consumer group
each), and timed the same two ways: the whole process (start, imports, the TLS/SCRAM
handshakes and the group join included on every side), and *steady*: that less the CPU
of the same process on a topic holding one record (excluded on every side). The
worker's CPU is read when its last record is committed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
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
ROUNDS = int(os.environ.get("BENCH_IOT_TO_S3_ROUNDS", "3"))
CORE = os.environ.get("BENCH_CORE", "1")  # every side runs pinned to this one core
# Optional: a checkout of another version of the repo (with its .venv) whose worker runs
# as one more side, e.g. main before a change (an A/B in the same rounds).
BASELINE = os.environ.get("BENCH_IOT_TO_S3_BASELINE")
CLIENTS = ("aiokafka", "confluent", "aiokafka+model", "aiokafka+decode", "confluent+decode")
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


def _pinned(*command: str) -> list[str]:
    return ["taskset", "-c", CORE, *command]


@dataclass(frozen=True)
class Run:
    """One side's run: whole-process CPU and wall seconds over the records, and the CPU of
    the same process on a topic holding one record (start, imports, the TLS/SCRAM
    handshake, the group join, one fetch): their difference is the steady cost."""

    cpu_s: float
    wall_s: float
    start_cpu_s: float
    peak_rss: int = 0

    @property
    def steady_cpu_s(self) -> float:
        return max(self.cpu_s - self.start_cpu_s, 1e-3)


def _child_process(command: list[str], *, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run a command to its end: its CPU seconds (utime + stime of the waited child) and
    its wall seconds."""
    before = os.times()
    started = time.perf_counter()
    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    wall = time.perf_counter() - started
    after = os.times()
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {completed.stderr[-2000:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return cpu, wall


def _python_env() -> dict[str, str]:
    # Byte-code is compiled once (``run``) and read, as from an image; never rewritten.
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _kcat(config: Path, topics: BenchTopics) -> Run:
    def consume(topic: str, count: int) -> tuple[float, float]:
        command = _pinned(
            "kcat", "-F", str(config), "-C", "-G", f"bench-kcat-{uuid.uuid4().hex[:8]}", topic,
            "-o", "beginning", "-e", "-q", "-c", str(count), "-f", "%s\n",
            "-X", "isolation.level=read_committed", "-X", "enable.auto.commit=false",
        )  # fmt: skip
        return _child_process(command)

    start_cpu, _ = consume(topics.one, 1)
    cpu, wall = consume(topics.full, RECORDS)
    return Run(cpu, wall, start_cpu)


def _client(mode: str, topics: BenchTopics) -> Run:
    def consume(topic: str, count: int) -> tuple[float, float]:
        group = f"bench-{mode}-{uuid.uuid4().hex[:8]}"
        command = _pinned(
            sys.executable, "-m", "bench.iot_to_s3_consume", mode, topic, str(count), group
        )
        return _child_process(command, env=_python_env())

    start_cpu, _ = consume(topics.one, 1)
    cpu, wall = consume(topics.full, RECORDS)
    return Run(cpu, wall, start_cpu)


def _worker(topics: BenchTopics, prefix: str, log: Path, *, repo: Path | None = None) -> Run:
    start_cpu, _, _ = _run_worker(topics.one, 1, prefix, log, repo=repo)
    cpu, wall, peak = _run_worker(topics.full, RECORDS, prefix, log, repo=repo)
    return Run(cpu, wall, start_cpu, peak)


def _run_worker(
    topic: str, count: int, prefix: str, log: Path, *, repo: Path | None = None
) -> tuple[float, float, int]:
    """The worker from process start to ``count`` records committed (``repo``: another
    checkout): CPU seconds, wall seconds, peak RSS bytes."""
    port = _free_port()
    run_id = uuid.uuid4().hex[:8]
    env = {
        **{k: v for k, v in _python_env().items() if not k.startswith(("IOT_TO_S3_", "INDUTECH_"))},
        **{k: v for k, v in dotenv_values(stack_env_file()).items() if v is not None},
        "IOT_TO_S3_GROUP_ID": f"bench-{topic}-{run_id}",
        "IOT_TO_S3_SENSOR_TOPIC": topic,
        "IOT_TO_S3_TICKET_TOPIC": f"{topic}.tickets",
        "IOT_TO_S3_DEAD_LETTER_TOPIC": f"{topic}.dlq",
        "IOT_TO_S3_LAKE_PREFIX": f"{prefix}{run_id}/",
        "IOT_TO_S3_HEALTH__HOST": "127.0.0.1",
        "IOT_TO_S3_HEALTH__PORT": str(port),
        "IOT_TO_S3_ROTATION__IDLE_S": "1",
        "IOT_TO_S3_LOGGING__LEVEL": "WARNING",
    }
    python = str(repo / ".venv" / "bin" / "python") if repo is not None else sys.executable
    launched = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            _pinned(python, "-m", "indutech_iot_to_s3"),
            cwd=repo or REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 600
        while _records_out(port) < count and time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"iot-to-s3 exited: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        wall = time.perf_counter() - launched
        cpu = _cpu_seconds(process.pid)
        peak = _peak_rss(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return cpu, wall, peak


@dataclass(frozen=True)
class BenchTopics:
    full: str  # RECORDS records
    one: str  # one record: what starting costs


def topic_contract(topic: str) -> dict[str, str]:
    """The bench's own topics, with the contract's settings (the worker checks them)."""
    return {
        topic: Topics.SENSOR_READINGS,
        f"{topic}.tickets": Topics.CLIENT_TICKETS,
        f"{topic}.dlq": Topics.DEAD_LETTER,
    }


def _spread(values: list[float]) -> str:
    return f"min {min(values):.1f} / median {statistics.median(values):.1f} / max {max(values):.1f}"


def _rates(size_mb: float, runs: list[Run], *, steady: bool = False) -> list[float]:
    return [size_mb / (r.steady_cpu_s if steady else r.cpu_s) for r in runs]


def run() -> list[Result]:
    stack = load_stack()
    topics = BenchTopics(f"bench.iot-to-s3.{os.getpid()}", f"bench.iot-to-s3.{os.getpid()}.one")
    contract = topic_contract(topics.full) | topic_contract(topics.one)
    prefix = f"bench/iot-to-s3/{os.getpid()}/"
    runs: dict[str, list[Run]] = {}
    # What an image ships (uv --compile-bytecode): the byte-code of our sources and of the
    # libraries, compiled once, so no side pays for compiling at start.
    sources = [str(REPO_ROOT / d) for d in ("libs", "services", "bench", "tests")]
    run_quiet(sys.executable, "-m", "compileall", "-q", *sources, sysconfig.get_paths()["purelib"])
    with tempfile.TemporaryDirectory(prefix="indutech-bench-") as tmp:
        directory = Path(tmp)
        data = directory / "records.jsonl"
        size_mb = _write_records(data, RECORDS) / 1e6
        one = directory / "one.jsonl"
        one.write_bytes(data.read_bytes().split(b"\n", 1)[0] + b"\n")
        config = _kcat_config(stack, directory)
        asyncio.run(create_topics(stack.kafka, contract))
        sides: dict[str, Callable[[], Run]] = {
            "kcat": lambda: _kcat(config, topics),
            "worker": lambda: _worker(topics, prefix, directory / "worker.log"),
            **{mode: (lambda mode=mode: _client(mode, topics)) for mode in CLIENTS},  # type: ignore[misc]
        }
        if BASELINE:
            baseline = Path(BASELINE)
            sides["baseline"] = lambda: _worker(
                topics, prefix, directory / "baseline.log", repo=baseline
            )
        try:
            for topic, path in ((topics.full, data), (topics.one, one)):
                run_quiet(
                    "kcat", "-F", str(config), "-P", "-t", topic, "-l", str(path),
                    "-X", "linger.ms=20", "-X", "acks=all",
                )  # fmt: skip
            for round_ in range(ROUNDS):
                order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
                for name in order:
                    result = sides[name]()
                    runs.setdefault(name, []).append(result)
                    print(
                        f"   round {round_ + 1} {name}: steady "
                        f"{size_mb / result.steady_cpu_s:.1f} MB/s per core, whole process "
                        f"{size_mb / result.cpu_s:.1f} (cpu {result.cpu_s:.2f} s, start "
                        f"{result.start_cpu_s:.2f} s, wall {result.wall_s:.2f} s)",
                        flush=True,
                    )
        finally:
            asyncio.run(delete_topics(stack.kafka, list(contract)))
            asyncio.run(delete_prefix(stack.s3, stack.s3.lake_bucket, prefix))
    return results(size_mb, runs)


def _side(size_mb: float, runs: list[Run]) -> tuple[float, str]:
    """The median steady rate, and the spread of both boundaries for the notes."""
    steady = _rates(size_mb, runs, steady=True)
    whole = _rates(size_mb, runs)
    text = f"steady {_spread(steady)}; whole process {_spread(whole)}"
    return statistics.median(steady), text


def results(size_mb: float, runs: dict[str, list[Run]]) -> list[Result]:
    """Values are the median steady rates (process start and the TLS/SCRAM handshake
    excluded on both sides); the notes add min/median/max of both boundaries and the
    whole-process ratio (start and handshake included on both sides)."""
    note = (
        f"{RECORDS:,} sensor readings ({size_mb:.1f} MB JSON) on {PARTITIONS} partitions, "
        f"SASL_SSL SCRAM-SHA-512 TLS 1.3, read_committed; {len(runs['kcat'])} alternating "
        f"rounds, each side a process pinned to core {CORE}; MB of input per CPU-second. "
        "Steady: each side's CPU less that of the same process on a topic holding one record "
        "(process start, imports, the TLS/SCRAM handshakes, the group join, one fetch)"
    )
    kcat, kcat_text = _side(size_mb, runs["kcat"])
    kcat_whole = statistics.median(_rates(size_mb, runs["kcat"]))
    out = [
        Result(
            name="iot_to_s3_consume_kcat",
            value=kcat,
            unit="MB/s per core",
            notes=f"the read ceiling (no output); {kcat_text}; {note}",
        )
    ]
    sides = [
        (
            "worker",
            "iot_to_s3_to_parquet",
            "batch decode into Arrow, zstd Parquet, intent + upload + transactional commit",
        )
    ]
    if "baseline" in runs:
        sides.append(("baseline", "iot_to_s3_to_parquet_baseline", f"the worker of {BASELINE}"))
    for mode in CLIENTS:
        what = {"": "consume-only", "decode": "consume and decode (batch path)"}.get(
            mode.partition("+")[2], "consume and decode (the model, record by record)"
        )
        sides.append(
            (
                mode,
                f"iot_to_s3_client_{mode.replace('+', '_')}",
                f"{mode.split('+')[0]} {what} (values and offsets into Python lists, 5,000 "
                "per poll)",
            )
        )
    for side, name, what in sides:
        value, text = _side(size_mb, runs[side])
        whole = statistics.median(_rates(size_mb, runs[side]))
        out.append(
            Result(
                name=name,
                value=value,
                unit="MB/s per core",
                peer="kcat consume",
                peer_value=kcat,
                notes=f"{what}; {text}; whole-process ratio {whole / kcat_whole:.3f}; {note}",
            )
        )
    peaks = [r.peak_rss / 2**20 for r in runs["worker"]]
    out.append(
        Result(
            name="iot_to_s3_peak_rss",
            value=max(peaks),
            unit="MiB",
            notes=f"VmHWM of the worker (default 256 MiB memory cap), the highest of "
            f"{len(peaks)} runs; {note}",
        )
    )
    return out
