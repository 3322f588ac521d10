"""Fixtures of the end-to-end tests: SAN → iot-ingest → Kafka → iot-to-s3 → lake, as processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from indutech_common.schemas import Topics
from tests.integration.iot_ingest.conftest import IngestTopics
from tests.integration.iot_to_s3.conftest import Lake
from tests.support.kafka import temporary_topics
from tests.support.s3 import delete_prefix
from tests.support.stack import REPO_ROOT, StackSettings


@dataclass(frozen=True)
class Pipeline:
    """The topics and lake prefix one test's two workers share."""

    ingest: IngestTopics
    lake: Lake


@pytest.fixture
async def pipeline(stack: StackSettings, unique: str) -> AsyncIterator[Pipeline]:
    """Fresh record topics, dead-letter topics, a compacted checkpoint topic (the contract's),
    a consumer group and a lake prefix; all removed afterwards."""
    ingest = IngestTopics(
        sensor=f"test.{unique}.sensors",
        ticket=f"test.{unique}.tickets",
        dead_letter=f"test.{unique}.ingest-dlq",
        checkpoint=f"test.{unique}.checkpoints",
    )
    lake = Lake(
        sensor_topic=ingest.sensor,
        ticket_topic=ingest.ticket,
        dead_letter_topic=f"test.{unique}.lake-dlq",
        prefix=f"tests/iot-pipeline/{unique}/",
        group_id=f"test-iot-pipeline-{unique}",
    )
    topics = ingest.contract() | {lake.dead_letter_topic: Topics.DEAD_LETTER}
    async with temporary_topics(stack.kafka, topics):
        yield Pipeline(ingest, lake)
    await delete_prefix(stack.s3, stack.s3.lake_bucket, lake.prefix)


class Process:
    """One worker process, restarted at will; each start logs to its own file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.logs = logs
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log: Path = logs / f"{name}-0.log"

    def start(self) -> None:
        self.starts += 1
        self.log = self.logs / f"{self.name}-{self.starts}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, *self.argv],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_logged(
        self, event: str, timeout_s: float = 30, *, required: bool = True
    ) -> bool:
        """Wait until the current run logged ``event`` (fails if the process died first);
        with ``required=False`` a timeout returns False instead of failing."""
        needle = f'"event": "{event}"'
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if needle in await asyncio.to_thread(self.log.read_text, errors="replace"):
                return True
            if not self.alive():
                pytest.fail(f"{self.name} exited early: {self.tail()}")
            await asyncio.sleep(0.05)
        if not required:
            return False
        pytest.fail(f"{self.name} did not log {event} within {timeout_s}s: {self.tail()}")

    async def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            await asyncio.to_thread(self.process.wait, 10)

    async def terminate(self, timeout_s: float = 30) -> int:
        """SIGTERM and the exit code (a kill after the timeout, never a process left behind)."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.terminate()
            try:
                return await asyncio.to_thread(process.wait, timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 10)
                return -9
        return process.returncode

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def count_in_logs(self, event: str) -> int:
        needle = f'"event": "{event}"'
        return sum(
            path.read_text(errors="replace").count(needle)
            for path in self.logs.glob(f"{self.name}-*.log")
        )


@pytest.fixture
def san(tmp_path: Path) -> Path:
    directory = tmp_path / "san"
    (directory / "sensors").mkdir(parents=True)
    (directory / "tickets").mkdir()
    return directory
