"""Kafka stopped and started again while records are buffered and segments are being flushed:
the worker keeps running, resumes by itself, and every record is in the lake exactly once.

This stops the shared broker: run it only under the stack lock (flock /tmp/indutech-stack.lock).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from indutech_common.s3 import create_s3_client
from tests.integration.iot_to_s3.conftest import (
    Lake,
    lake_keys,
    produce,
    records,
    start_worker,
    worker_env,
)
from tests.integration.iot_to_s3.test_chaos import lake_event_ids
from tests.support.stack import StackSettings, stack_service
from tests.support.waits import wait_for_counter, wait_for_log

OUTAGE_S = 12
BEFORE = 3000
AFTER = 1000


def health_port(log: Path) -> int:
    """The worker's health and metrics port, from its ``worker_started`` line."""
    return next(
        int(json.loads(line)["health_port"])
        for line in log.read_text().splitlines()
        if '"worker_started"' in line
    )


@pytest.mark.serial  # stops the shared broker: never beside other tests
class TestBrokerRestart:
    @pytest.mark.slow
    @pytest.mark.timeout(200)
    async def test_broker_restart_mid_stream_loses_and_doubles_nothing(
        self, stack: StackSettings, lake: Lake, tmp_path: Path
    ) -> None:
        """Broker down 12 s with records buffered and flushing: resume, no loss, no duplicate."""
        log = tmp_path / "worker.log"
        env = worker_env(
            lake,
            # batch A is still buffered when the broker goes: its segments seal (idle) while
            # the broker is away, upload, and cannot commit
            IOT_TO_S3_ROTATION__MAX_RECORDS="100000",
            # sealed well after the broker is down: its controlled shutdown takes seconds
            # and still commits (1.5 s let a flush finish before it on an idle machine)
            IOT_TO_S3_ROTATION__IDLE_S="6",
            IOT_TO_S3_ROTATION__MAX_AGE_S="8",
            IOT_TO_S3_S3_BACKOFF_MAX_S="2",
        )
        process = start_worker(env, log)
        before = records(BEFORE, "before")
        after = records(BEFORE + AFTER, "after", start=BEFORE)
        try:
            await wait_for_log(log, "partition_ready", process)
            await produce(stack, lake.sensor_topic, before, transactional_id=f"{lake.group_id}-a")
            # fetched and buffered, not yet sealed (a fixed 0.3 s missed the fetch once on CI)
            await wait_for_counter(health_port(log), "indutech_records_in_total", BEFORE, process)
            stopped = time.monotonic()
            try:
                await asyncio.to_thread(stack_service, "down", "kafka")
                await asyncio.sleep(OUTAGE_S)
                assert process.poll() is None, log.read_text()[-3000:]
            finally:
                await asyncio.to_thread(stack_service, "up", "kafka")
            print(f"broker away {time.monotonic() - stopped:.1f}s")
            await produce(stack, lake.sensor_topic, after, transactional_id=f"{lake.group_id}-b")
            expected = {str(r.event_id) for r in before + after}
            ids: Counter[str] = Counter()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                ids = await asyncio.to_thread(lake_event_ids, stack, lake)
                if set(ids) >= expected:
                    break
                assert process.poll() is None, log.read_text()[-3000:]
                await asyncio.sleep(1)
        finally:
            process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(process.wait, 30)
        text = log.read_text()
        print(
            f"segments {text.count('segment_written')}, replays {text.count('replaying_intent')}, "
            f"flush failures {text.count('flush_failed')}, "
            f"assignments {text.count('partitions_assigned')}"
        )
        assert exit_code == 0
        # the outage hit a flush: its objects were uploaded and its commit waited for the broker
        written = [json.loads(line) for line in text.splitlines() if '"segment_written"' in line]
        assert max(event["duration_s"] for event in written) > OUTAGE_S / 2
        duplicates = {event_id: n for event_id, n in ids.items() if n > 1}
        assert not duplicates, f"{len(duplicates)} duplicated"
        assert not expected - set(ids), f"{len(expected - set(ids))} missing"
        assert set(ids) == expected
        keys = [k for k in await lake_keys(stack, lake.prefix) if k.endswith(".parquet")]
        async with create_s3_client(stack.s3) as s3:
            for key in keys:
                head = await s3.head_object(Bucket=stack.s3.lake_bucket, Key=key)
                assert head.get("ServerSideEncryption") in ("aws:kms", "AES256"), key
