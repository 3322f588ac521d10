"""Two workers in one group: members join and leave while records flow, and every record is
still in the lake exactly once (in-flight flushes finish or are replayed; open buffers drop)."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import pytest

from tests.integration.iot_to_s3.conftest import Lake, free_port, start_worker, worker_env
from tests.integration.iot_to_s3.test_chaos import (
    produce_continuously,
    wait_for_lake,
)
from tests.support.stack import StackSettings
from tests.support.waits import wait_for_log


class TestRebalance:
    @pytest.mark.slow
    @pytest.mark.timeout(150)
    async def test_members_joining_and_leaving_keep_exactly_once(
        self, stack: StackSettings, lake: Lake, tmp_path: Path
    ) -> None:
        """A second member joins, the first leaves and comes back: no loss, no duplicate."""

        def env() -> dict[str, str]:
            return worker_env(
                lake,
                IOT_TO_S3_HEALTH__PORT=str(free_port()),
                IOT_TO_S3_ROTATION__MAX_RECORDS="50",
                IOT_TO_S3_ROTATION__IDLE_S="0.3",
            )

        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        first = start_worker(env(), logs[0])
        await wait_for_log(logs[0], "partition_ready", first)
        stop = asyncio.Event()
        producing = asyncio.create_task(produce_continuously(stack, lake, stop, random.Random(3)))
        second = third = None
        codes: list[int] = []
        try:
            await asyncio.sleep(2)
            second = start_worker(env(), logs[1])
            await wait_for_log(logs[1], "partition_ready", second)
            await asyncio.sleep(2)
            first.send_signal(signal.SIGTERM)  # leaves the group: the second takes everything
            codes.append(await asyncio.to_thread(first.wait, 30))
            await asyncio.sleep(2)
            seen = logs[0].stat().st_size
            third = start_worker(env(), logs[0])
            await wait_for_log(logs[0], "partition_ready", third, since=seen)
            await asyncio.sleep(2)
        finally:
            stop.set()
            committed, aborted = await producing
        try:
            ids = await wait_for_lake(stack, lake, committed)
        finally:
            for process in (second, third):
                if process is not None:
                    process.send_signal(signal.SIGTERM)
                    codes.append(await asyncio.to_thread(process.wait, 30))
        revoked = sum(log.read_text().count('"event": "partitions_revoked"') for log in logs)
        assert revoked >= 3, "the test must have rebalanced"
        assert codes == [0, 0, 0]
        assert not {i: n for i, n in ids.items() if n > 1}, "no duplicate"
        assert not committed - set(ids), "no loss"
        assert not set(ids) & aborted
