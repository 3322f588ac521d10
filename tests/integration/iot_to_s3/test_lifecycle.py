"""SIGTERM: the worker writes what it holds, commits its offsets and exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path

from tests.integration.iot_to_s3.conftest import (
    Lake,
    free_port,
    lake_keys,
    produce,
    read_lake,
    records,
    start_worker,
    worker_env,
)
from tests.support.stack import StackSettings
from tests.support.waits import wait_for_log


class TestGracefulShutdown:
    async def test_sigterm_drains_buffers_and_exits_zero(
        self, stack: StackSettings, lake: Lake, tmp_path: Path
    ) -> None:
        """Buffered records that no rotation would flush yet are written on SIGTERM, then exit 0."""
        log = tmp_path / "worker.log"
        env = worker_env(
            lake,
            IOT_TO_S3_HEALTH__PORT=str(free_port()),
            IOT_TO_S3_ROTATION__IDLE_S="600",
            IOT_TO_S3_ROTATION__MAX_AGE_S="600",
            IOT_TO_S3_SHUTDOWN_TIMEOUT_S="20",
        )
        process = start_worker(env, log)
        try:
            await wait_for_log(log, "partition_ready", process)
            produced = records(20, "drain")
            await produce(stack, lake.sensor_topic, produced)
            await asyncio.sleep(2)  # consumed and buffered; nothing written yet
            assert not await lake_keys(stack, f"{lake.prefix}iot/")
        finally:
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(process.wait, 30)
        assert exit_code == 0
        assert time.monotonic() - sent < 20
        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        written = [e for e in events if e["event"] == "segment_written"]
        assert {e["reason"] for e in written} == {"drain"}
        assert events[-1]["event"] == "worker_stopped"
        table = await asyncio.to_thread(read_lake, stack, lake, lake.sensor_topic)
        assert Counter(table.column("event_id").to_pylist()) == Counter(
            r.event_id for r in produced
        )
        assert not [k for k in await lake_keys(stack, lake.prefix) if "/_state/" in k]
