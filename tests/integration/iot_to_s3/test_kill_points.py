"""A SIGKILL at each point of the delivery protocol, landed exactly there: after a restart every
record is in the lake once, every dead letter is in its topic once, and no intent is left."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from botocore.exceptions import ClientError

from indutech_iot_to_s3.worker import STEPS
from tests.integration.iot_to_s3.conftest import (
    Lake,
    committed_offset,
    free_port,
    lake_keys,
    produce,
    read_dead_letters,
    read_lake,
    records,
    start_worker,
    worker_env,
)
from tests.support.iam import assume_worker_role, env_with_credentials, s3_client_as
from tests.support.stack import REPO_ROOT, StackSettings
from tests.support.waits import wait_for_log

GOOD = 12
BAD = 3
# every step with the stack's root keys; two of them again with only the rights of
# deploy/iam/iot-to-s3.json (the replay after an intent, the clean-up after a commit)
KILLS = [pytest.param(step, "root", id=step) for step in STEPS] + [
    pytest.param(step, "iam-policy", id=f"{step}-iam-policy")
    for step in ("intent_written", "committed")
]


def start_held_worker(env: dict[str, str], log: Path, step: str) -> subprocess.Popen[bytes]:
    """The real worker, stopped the first time a segment reaches ``step`` (see held_worker)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.iot_to_s3.held_worker", "--hold-at", step],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def intent_keys(stack: StackSettings, lake: Lake) -> list[str]:
    return await lake_keys(stack, f"{lake.prefix}_state/iot-to-s3/intents/")


def events_after(log: Path, offset: int) -> list[dict[str, Any]]:
    with log.open("rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


async def kill_at(env: dict[str, str], log: Path, step: str) -> None:
    """Run the worker until a segment reaches ``step``, then SIGKILL it there."""
    held = start_held_worker(env, log, step)
    try:
        await wait_for_log(log, "held_at_step", held, timeout_s=60)
    finally:
        held.send_signal(signal.SIGKILL)
        await asyncio.to_thread(held.wait, 10)


async def run_until_settled(
    stack: StackSettings, lake: Lake, env: dict[str, str], log: Path, *, end: int
) -> None:
    """Run the worker until ``end`` is committed for partition 0 and no intent is left; SIGTERM."""
    tp = TopicPartition(lake.sensor_topic, 0)
    worker = start_worker(env, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            committed = await committed_offset(stack, lake, tp)
            left = await intent_keys(stack, lake)
            if committed == end and not left:
                break
            if worker.poll() is not None:
                tail = (await asyncio.to_thread(log.read_text))[-3000:]
                raise AssertionError(f"the worker exited:\n{tail}")
            assert time.monotonic() < deadline, (
                f"60 s after the restart: committed {committed}, intents left {left}"
            )
            await asyncio.sleep(0.3)
    finally:
        worker.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(worker.wait, 30)
    assert exit_code == 0


class TestKillAtEachStep:
    @pytest.mark.slow
    @pytest.mark.timeout(150)
    @pytest.mark.parametrize(("step", "rights"), KILLS)
    async def test_sigkill_between_steps_leaves_records_and_dead_letters_once_and_no_intent(
        self, stack: StackSettings, lake: Lake, tmp_path: Path, step: str, rights: str
    ) -> None:
        """Killed at ``step``, restarted: lake and dead letters exactly once, intents all gone."""
        good = records(GOOD, f"kill-{step}")
        bad = [f'{{"not json {i}'.encode() for i in range(BAD)]
        raw = [r.to_json_bytes() for r in good]
        stream = [*raw[:4], bad[0], *raw[4:8], bad[1], *raw[8:], bad[2]]  # one segment, 0..14
        await produce(stack, lake.sensor_topic, stream, partition=0)
        tp = TopicPartition(lake.sensor_topic, 0)
        log = tmp_path / "worker.log"
        env = worker_env(
            lake,
            IOT_TO_S3_GROUP_INSTANCE_ID=f"{lake.group_id}-0",  # the restart takes over at once
            IOT_TO_S3_HEALTH__PORT=str(free_port()),
            IOT_TO_S3_ROTATION__IDLE_S="0.3",
        )
        credentials: dict[str, str] = {}
        if rights == "iam-policy":
            credentials = await assume_worker_role("iot-to-s3", stack, {"lake": lake.prefix})
            env = env_with_credentials(env, credentials)

        await kill_at(env, log, step)

        assert len(await intent_keys(stack, lake)) == 1, "every step comes after the intent"
        done = step == "committed"
        assert await committed_offset(stack, lake, tp) == (len(stream) if done else None)
        if step == "before_commit":
            # The kill landed after the dead letters reached the broker, before the commit.
            uncommitted = await read_dead_letters(
                stack, lake.dead_letter_topic, isolation_level="read_uncommitted"
            )
            assert Counter(m.value for m in uncommitted) == Counter(bad)

        seen = log.stat().st_size
        env["IOT_TO_S3_HEALTH__PORT"] = str(free_port())
        await run_until_settled(stack, lake, env, log, end=len(stream))

        table = await asyncio.to_thread(read_lake, stack, lake, lake.sensor_topic)
        assert Counter(table.column("event_id").to_pylist()) == Counter(r.event_id for r in good)
        letters = await read_dead_letters(
            stack, lake.dead_letter_topic, isolation_level="read_committed"
        )
        assert Counter(m.value for m in letters) == Counter(bad), "each dead letter once"
        assert await intent_keys(stack, lake) == []
        events = {e["event"] for e in events_after(log, seen)}
        if done:
            assert "replaying_intent" not in events, "a committed segment is not written again"
            assert "stale_intent_deleted" in events
        else:
            assert "replaying_intent" in events
        if credentials:
            # the policy was in force: the lake is write-only to the worker, and its rights
            # end at its own prefixes
            written = await lake_keys(stack, f"{lake.prefix}iot/")
            async with s3_client_as(stack, credentials) as s3:
                with pytest.raises(ClientError, match="AccessDenied"):
                    await s3.get_object(Bucket=stack.s3.lake_bucket, Key=written[0])
                with pytest.raises(ClientError, match="AccessDenied"):
                    await s3.put_object(
                        Bucket=stack.s3.lake_bucket, Key=f"{lake.prefix}elsewhere", Body=b"x"
                    )
