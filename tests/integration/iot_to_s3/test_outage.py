"""S3 down for 30 s mid-stream: the worker waits (backoff, no commit), holds memory under its
cap by pausing consumption, and resumes with no loss and no duplicate once S3 is back."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.iot_to_s3.conftest import Lake, free_port, start_worker, worker_env
from tests.integration.iot_to_s3.test_chaos import (
    produce_continuously,
    wait_for_lake,
)
from tests.support.stack import StackSettings, stack_service
from tests.support.waits import wait_for_log

OUTAGE_S = 30
MEMORY_CAP = 1_000_000
POLL_MAX_RECORDS = 200
# A canonical record is < 400 bytes; one poll may land after the cap is reached.
POLL_OVERSHOOT = POLL_MAX_RECORDS * (400 + 96)
_METRIC = re.compile(r'^(indutech_iot_to_s3_\w+)\{worker="iot-to-s3"\} ([0-9.e+]+)$', re.M)


def read_metrics(port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:
        text = response.read().decode()
    return {name: float(value) for name, value in _METRIC.findall(text)}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.serial  # stops the shared MinIO: never beside other tests
class TestS3Outage:
    @pytest.mark.slow
    @pytest.mark.timeout(170)
    async def test_s3_down_30s_no_loss_no_duplicate_memory_capped(
        self, stack: StackSettings, lake: Lake, tmp_path: Path
    ) -> None:
        """MinIO stopped for 30 s while records flow: pause at the cap, then catch up exactly."""
        log = tmp_path / "worker.log"
        port = free_port()
        env = worker_env(
            lake,
            IOT_TO_S3_HEALTH__PORT=str(port),
            IOT_TO_S3_MEMORY_CAP_BYTES=str(MEMORY_CAP),
            IOT_TO_S3_POLL_MAX_RECORDS=str(POLL_MAX_RECORDS),
            IOT_TO_S3_ROTATION__MAX_BYTES="200000",
            IOT_TO_S3_ROTATION__IDLE_S="0.5",
            IOT_TO_S3_ROTATION__MAX_AGE_S="1",
            IOT_TO_S3_S3_BACKOFF_MAX_S="2",
        )
        process = start_worker(env, log)
        stop = asyncio.Event()
        producing: asyncio.Task[tuple[set[str], set[str]]] | None = None
        samples: list[tuple[float, float, int]] = []
        try:
            await wait_for_log(log, "partition_ready", process)
            producing = asyncio.create_task(
                produce_continuously(stack, lake, stop, random.Random(7))
            )
            await asyncio.sleep(3)
            baseline_rss = rss_bytes(process.pid)
            await asyncio.to_thread(stack_service, "down", "minio")
            try:
                outage_ends = time.monotonic() + OUTAGE_S
                while time.monotonic() < outage_ends:
                    metrics = await asyncio.to_thread(read_metrics, port)
                    samples.append(
                        (
                            metrics.get("indutech_iot_to_s3_buffered_bytes", 0.0),
                            metrics.get("indutech_iot_to_s3_paused", 0.0),
                            rss_bytes(process.pid),
                        )
                    )
                    await asyncio.sleep(0.5)
            finally:
                await asyncio.to_thread(stack_service, "up", "minio")
            await asyncio.sleep(3)
        finally:
            stop.set()
            committed, aborted = await producing if producing else (set(), set())
        try:
            ids = await wait_for_lake(stack, lake, committed)
        finally:
            process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(process.wait, 30)
        text = log.read_text()
        peak_buffered = max(s[0] for s in samples)
        peak_rss = max(s[2] for s in samples)
        print(
            f"{len(committed)} committed; peak buffered {peak_buffered:.0f} B (cap {MEMORY_CAP}); "
            f"RSS {baseline_rss / 2**20:.0f} MiB before, peak {peak_rss / 2**20:.0f} MiB during"
        )
        assert exit_code == 0
        assert '"event": "retrying"' in text, "S3 failures are retried with backoff"
        assert any(paused for _, paused, _ in samples), "consumption paused at the cap"
        assert peak_buffered <= MEMORY_CAP + POLL_OVERSHOOT
        assert peak_rss < baseline_rss + 64 * 2**20
        assert not {i: n for i, n in ids.items() if n > 1}, "no duplicate"
        assert not committed - set(ids), "no loss"
        assert not set(ids) & aborted
