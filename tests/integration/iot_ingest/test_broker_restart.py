"""Kafka stopped and started again while the generator writes and transactions are open:
the worker keeps running, rewinds to its committed checkpoints, resumes by itself, and
every line is on the topics exactly once.

This stops the shared broker: run it only under the stack lock (flock /tmp/indutech-stack.lock).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import pytest

from indutech_devtools.iot import GenerateOptions, generate, records
from tests.integration.iot_ingest.conftest import (
    IngestTopics,
    generated_ids,
    read_committed,
    worker_env,
)
from tests.integration.iot_ingest.test_process import start_worker
from tests.support.stack import StackSettings, stack_service
from tests.support.waits import wait_for_log

OUTAGE_S = 12
RATE = 200
COUNT = 5_000  # 25 s of writing at RATE: before, during and after the outage


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.mark.serial  # stops the shared broker: never beside other tests
class TestBrokerRestart:
    @pytest.mark.slow
    @pytest.mark.timeout(240)
    async def test_broker_restart_mid_stream_loses_and_doubles_nothing(
        self, stack: StackSettings, topics: IngestTopics, san: Path, unique: str, tmp_path: Path
    ) -> None:
        """Broker down 12 s while lines keep arriving: no crash, no loss, no duplicate."""
        options = GenerateOptions(
            directory=san, rate=RATE, count=COUNT, seed=17, rotate_every=1_000, gzip_rotated=True
        )
        expected = generated_ids(records(options))
        log = tmp_path / "worker.log"
        process = start_worker(
            worker_env(stack, topics, san, unique, IOT_INGEST_RETRY_BACKOFF_S="0.5"), log
        )
        writer = threading.Thread(target=generate, args=(options,))
        rss_during: list[int] = []
        try:
            await wait_for_log(log, "ingest_ready", process=process)
            writer.start()
            await asyncio.sleep(3)  # transactions committing at the nominal rate
            stopped = time.monotonic()
            try:
                await asyncio.to_thread(stack_service, "down", "kafka")
                while time.monotonic() - stopped < OUTAGE_S:
                    assert process.poll() is None, log.read_text()[-3000:]
                    rss_during.append(_rss_kib(process.pid))
                    await asyncio.sleep(1)
            finally:
                await asyncio.to_thread(stack_service, "up", "kafka")
            print(f"broker away {time.monotonic() - stopped:.1f}s, rss KiB {rss_during}")
            await asyncio.to_thread(writer.join, 60)
            found = await read_committed(stack, topics, expected=len(expected), timeout_s=90)
            assert process.poll() is None, log.read_text()[-3000:]
        finally:
            process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(process.wait, 30)
            if writer.is_alive():
                await asyncio.to_thread(writer.join, 60)
        text = log.read_text()
        print(
            f"failed transactions {text.count('transaction_failed')}, "
            f"waiting warnings {text.count('transaction_waiting')}, "
            f"worker starts {text.count('ingest_ready')}"
        )
        assert exit_code == 0
        # one process throughout: the open transaction waited for the broker (or failed,
        # was aborted and redone from the checkpoints) instead of crashing the worker
        assert text.count('"event": "ingest_ready"') == 1
        # and the wait was said: a hung transaction warns, a failed one is logged
        waits = text.count('"event": "transaction_waiting"')
        assert waits + text.count('"event": "transaction_failed"') >= 1, text[-3000:]
        # reading waited instead of piling lines up: 5,000 lines are ~1 MB
        assert max(rss_during) - min(rss_during) < 64 * 1024, rss_during
        assert found.duplicates == {}
        assert found.ids == expected
        assert found.dead_letters == []
