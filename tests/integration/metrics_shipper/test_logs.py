"""Log files → CloudWatch Logs (moto over HTTPS): every line once, through kills and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from indutech_common.cloudwatch import create_logs_client
from indutech_common.settings import CloudWatchSettings, HealthSettings
from indutech_metrics_shipper.config import MetricsShipperSettings
from indutech_metrics_shipper.worker import MetricsShipperWorker
from tests.support.stack import REPO_ROOT, StackSettings

KILLS = 10


def log_line(i: int, *, worker: str = "iot-ingest") -> str:
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"event": "line", "n": i, "worker": worker, "timestamp": stamp})


async def messages_in(cloudwatch: CloudWatchSettings, group: str) -> list[str]:
    """Every message of every stream of the group (pages followed to their end)."""
    found: list[str] = []
    async with create_logs_client(cloudwatch) as client:
        streams = await client.describe_log_streams(logGroupName=group)
        for stream in streams.get("logStreams", []):
            kwargs: dict[str, Any] = {
                "logGroupName": group,
                "logStreamName": stream["logStreamName"],
                "startFromHead": True,
            }
            while True:
                page = await client.get_log_events(**kwargs)
                found += [event["message"] for event in page.get("events", [])]
                token = page.get("nextForwardToken")
                if not page.get("events") or token == kwargs.get("nextToken"):
                    break
                kwargs["nextToken"] = token
    return found


async def delete_group(cloudwatch: CloudWatchSettings, group: str) -> None:
    async with create_logs_client(cloudwatch) as client:
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            await client.delete_log_group(logGroupName=group)


def shipper_env(
    stack: StackSettings, unique: str, logs: Path, group: str, state: Path
) -> dict[str, str]:
    """The environment of a shipper process that ships ``logs`` (and no metrics target)."""
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("METRICS_SHIPPER_", "INDUTECH_"))
        },
        "METRICS_SHIPPER_CLOUDWATCH__ENDPOINT_URL": str(stack.cloudwatch.endpoint_url),
        "METRICS_SHIPPER_CLOUDWATCH__REGION": stack.cloudwatch.region,
        "METRICS_SHIPPER_CLOUDWATCH__CA_FILE": str(stack.cloudwatch.ca_file),
        "METRICS_SHIPPER_CLOUDWATCH__ACCESS_KEY_ID": "local",
        "METRICS_SHIPPER_CLOUDWATCH__SECRET_ACCESS_KEY": "local",
        "METRICS_SHIPPER_NAMESPACE": f"InduTech/Test/{unique}",
        "METRICS_SHIPPER_LOG_DIR": str(logs),
        "METRICS_SHIPPER_LOG_GROUP": group,
        "METRICS_SHIPPER_LOG_STATE_DIR": str(state),
        "METRICS_SHIPPER_LOG_FLUSH_S": "0.05",
        "METRICS_SHIPPER_HEALTH__PORT": "0",
    }


async def wait_for_messages(
    cloudwatch: CloudWatchSettings, group: str, count: int, *, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while len(await messages_in(cloudwatch, group)) < count:
        if time.monotonic() > deadline:
            return  # the assertions after say what is missing
        await asyncio.sleep(1)


class TestLogShipping:
    async def test_lines_of_two_files_arrive_once_and_a_restart_sends_nothing_again(
        self, stack: StackSettings, unique: str, tmp_path: Path
    ) -> None:
        logs = tmp_path / "logs"
        logs.mkdir()
        (logs / "iot-ingest.log").write_text("".join(log_line(i) + "\n" for i in range(300)))
        (logs / "sql-backup.log").write_text(
            "".join(log_line(i, worker="sql-backup") + "\n" for i in range(50))
        )
        (logs / "notes.txt").write_text("not a log file\n")
        group = f"/indutech/test/{unique}"
        settings = MetricsShipperSettings(
            cloudwatch=stack.cloudwatch,
            namespace=f"InduTech/Test/{unique}",
            log_dir=logs,
            log_group=group,
            log_state_dir=tmp_path / "state",
            interval_s=10,
            health=HealthSettings(host="127.0.0.1", port=0),
        )
        try:
            for _ in range(2):  # the second run finds nothing new
                worker = MetricsShipperWorker(settings, once=True)
                assert await worker.serve(install_signal_handlers=False) == 0
            found = await messages_in(stack.cloudwatch, group)
        finally:
            await delete_group(stack.cloudwatch, group)
        numbers = Counter((json.loads(m)["worker"], json.loads(m)["n"]) for m in found)
        assert len(found) == 350
        assert set(numbers.values()) == {1}
        assert "not a log file" not in found


class TestLogChaos:
    async def test_sigkill_at_random_moments_leaves_every_line_once(
        self, stack: StackSettings, unique: str, tmp_path: Path
    ) -> None:
        """A writer appends lines while the shipper is killed (SIGKILL) at random moments and
        restarted, KILLS times; then every line is in CloudWatch exactly once."""
        logs = tmp_path / "logs"
        logs.mkdir()
        group = f"/indutech/test/{unique}"
        env = shipper_env(stack, unique, logs, group, tmp_path / "state")
        rng = random.Random(unique)
        written = 0
        stop = asyncio.Event()

        async def write() -> None:
            nonlocal written
            with (logs / "worker.log").open("a") as out:
                while not stop.is_set():
                    for _ in range(rng.randint(1, 40)):
                        out.write(log_line(written) + "\n")
                        written += 1
                    out.flush()
                    await asyncio.sleep(0.02)

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "indutech_metrics_shipper", "run"],
                cwd=REPO_ROOT,
                env=env,
                stdout=shipper_log,
                stderr=subprocess.STDOUT,
            )

        shipper_log = (tmp_path / "shipper.log").open("ab")
        writer = asyncio.create_task(write())
        process = start()
        try:
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(1.0, 2.5))  # start-up (~1 s), then mid-batch
                process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(process.wait, 10)
                process = start()
            stop.set()
            await writer
            await wait_for_messages(stack.cloudwatch, group, written, timeout_s=90)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 30) == 0
            found = await messages_in(stack.cloudwatch, group)
        finally:
            stop.set()
            if process.poll() is None:
                process.kill()
            await delete_group(stack.cloudwatch, group)
            shipper_log.close()
        numbers = Counter(json.loads(m)["n"] for m in found)
        doubled = [n for n, count in numbers.items() if count > 1]
        missing = sorted(set(range(written)) - set(numbers))
        assert written > 500
        assert not doubled, f"{len(doubled)} lines doubled, e.g. {doubled[:5]}"
        assert not missing, f"{len(missing)} lines missing, e.g. {missing[:5]}"
        assert (tmp_path / "shipper.log").read_text().count(
            '"event": "log_inflight_checked"'
        ) >= 1, "no kill landed between a put and its checkpoint: a weak run"
