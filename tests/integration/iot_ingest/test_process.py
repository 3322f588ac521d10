"""The worker as a process: SIGKILL at random moments loses and doubles nothing; SIGTERM drains."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from indutech_common.kafka import create_producer, start_client
from indutech_devtools.iot import GenerateOptions, generate, records
from indutech_iot_ingest.sinks import load_checkpoints
from tests.integration.iot_ingest.conftest import (
    IngestTopics,
    generated_ids,
    read_committed,
    worker_env,
)
from tests.support.stack import REPO_ROOT, StackSettings
from tests.support.waits import count_events, wait_for_log

KILL_ROUNDS = 20


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "indutech_iot_ingest.cli", "run"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
class TestChaos:
    @pytest.mark.timeout(240)
    async def test_sigkill_at_random_moments_loses_and_doubles_nothing(
        self, stack: StackSettings, topics: IngestTopics, san: Path, unique: str, tmp_path: Path
    ) -> None:
        """20 SIGKILLs while the generator writes, rotates and compresses: every id once."""
        options = GenerateOptions(
            directory=san, rate=150, count=10_000, seed=5, rotate_every=250, gzip_rotated=True
        )
        expected = generated_ids(records(options))
        env = worker_env(stack, topics, san, unique)
        log = tmp_path / "worker.log"
        rng = random.Random(unique)
        ready = 0
        writer = threading.Thread(target=generate, args=(options,))
        writer.start()
        try:
            for round_ in range(KILL_ROUNDS):
                process = start_worker(env, log)
                if round_ % 5 == 4:  # now and then while it starts (fencing, reading checkpoints)
                    await wait_for_log(log, "worker_starting", count=round_ + 1, process=process)
                    await asyncio.sleep(rng.uniform(0.0, 0.8))
                else:  # mostly while it works: mid-transaction, mid-commit, between
                    await wait_for_log(log, "ingest_ready", count=ready + 1, process=process)
                    await asyncio.sleep(rng.uniform(0.05, 1.0))
                process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(process.wait, 10)
                ready = count_events(log, "ingest_ready")
        finally:
            await asyncio.to_thread(writer.join, 120)
        process = start_worker(env, log)
        try:
            await wait_for_log(log, "ingest_ready", count=ready + 1, process=process)
            found = await read_committed(stack, topics, expected=len(expected), timeout_s=60)
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 30) == 0
        assert count_events(log, "ingest_ready") >= KILL_ROUNDS * 4 // 5 + 1
        assert found.duplicates == {}
        assert found.ids == expected
        assert found.dead_letters == []


class TestSigterm:
    async def test_sigterm_commits_the_transaction_in_flight_and_exits_zero(
        self, stack: StackSettings, topics: IngestTopics, san: Path, unique: str, tmp_path: Path
    ) -> None:
        """After SIGTERM, exit 0, and the checkpoints cover exactly the records visible."""
        options = GenerateOptions(directory=san, rate=1500, count=6000, seed=9, rotate_every=1000)
        log = tmp_path / "worker.log"
        process = start_worker(worker_env(stack, topics, san, unique), log)
        writer = threading.Thread(target=generate, args=(options,))
        try:
            await wait_for_log(log, "worker_started")
            writer.start()
            await asyncio.sleep(2.0)
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(process.wait, 30)
        finally:
            if process.poll() is None:
                process.kill()
                await asyncio.to_thread(process.wait, 10)
            if writer.is_alive():
                await asyncio.to_thread(writer.join, 30)
        assert code == 0
        assert time.monotonic() - sent < 10
        text = log.read_text()
        assert '"event": "signal_received"' in text
        assert '"event": "worker_draining"' in text
        assert "transaction_failed" not in text
        found = await read_committed(stack, topics, expected=1, timeout_s=10)
        assert found.duplicates == {}
        producer = create_producer(stack.kafka)
        await start_client(producer, stack.kafka)
        try:
            states = await load_checkpoints(stack.kafka, topics.checkpoint, producer)
        finally:
            await producer.stop()
        lines = sum(s.lines - (1 if ".csv" in s.path else 0) for s in states)
        assert lines == sum(found.ids.values())
        assert 0 < lines < 6000
