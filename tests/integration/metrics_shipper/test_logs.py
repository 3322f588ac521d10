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
import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from indutech_common.cloudwatch import create_logs_client
from indutech_common.settings import CloudWatchSettings, HealthSettings
from indutech_common.tailing import FileState
from indutech_metrics_shipper.config import MetricsShipperSettings
from indutech_metrics_shipper.logs import FileRead, LogCheckpoints, LogShipper
from indutech_metrics_shipper.worker import MetricsShipperWorker
from tests.integration.metrics_shipper.test_shipping import metrics_endpoint, wait_until
from tests.support.proxy import SwitchableProxy
from tests.support.stack import REPO_ROOT, StackSettings

KILLS = 10
MAX_KILLS = 20


def log_line(i: int, *, worker: str = "iot-ingest") -> str:
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"event": "line", "n": i, "worker": worker, "timestamp": stamp})


async def messages_in(cloudwatch: CloudWatchSettings, group: str) -> list[str]:
    """Every message of every stream of the group (pages followed to their end); none while
    the group does not exist."""
    found: list[str] = []
    async with create_logs_client(cloudwatch) as client:
        try:
            streams = await client.describe_log_streams(logGroupName=group)
        except client.exceptions.ResourceNotFoundException:
            return found
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


async def wait_started(log: Path, count: int, *, timeout_s: float = 60) -> None:
    """Until the shipper's log says ``worker_started`` ``count`` times (one per start)."""
    deadline = time.monotonic() + timeout_s
    while (await asyncio.to_thread(log.read_text, errors="replace")).count(
        '"event": "worker_started"'
    ) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"the shipper did not start within {timeout_s} s: see {log}")
        await asyncio.sleep(0.05)


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


class KilledAfterThePutError(Exception):
    """Stands for a SIGKILL between CloudWatch's accept and the checkpoint."""


class CheckpointsKilledOnce(LogCheckpoints):
    """The first batch's checkpoint never lands: the process 'dies' right after its put."""

    def save_states(self, states: Iterable[FileState]) -> None:
        if self.inflight() is not None:  # a batch was put and is being committed
            raise KilledAfterThePutError
        super().save_states(states)


class TestKillBetweenPutAndCheckpoint:
    async def test_a_new_file_s_first_batch_is_not_sent_again(
        self, stack: StackSettings, unique: str, tmp_path: Path
    ) -> None:
        """Killed after the first put of a file no checkpoint knew yet: the next start finds
        the batch in the stream and carries on after it (it sent the file again from line 0
        once, in a CI chaos run: 848 lines doubled)."""
        logs = tmp_path / "logs"
        logs.mkdir()
        (logs / "worker.log").write_text("".join(log_line(i) + "\n" for i in range(120)))
        group = f"/indutech/test/{unique}"
        state = tmp_path / "state"
        where: dict[str, Any] = {"root": logs, "patterns": ("**/*.log",), "group": group}
        try:
            async with create_logs_client(stack.cloudwatch) as client:
                first = LogShipper(client, **where, checkpoints=CheckpointsKilledOnce(state))
                with pytest.raises(KilledAfterThePutError):
                    await first.ship()
                first.close()
                with (logs / "worker.log").open("a") as out:
                    out.write("".join(log_line(i) + "\n" for i in range(120, 150)))
                second = LogShipper(client, **where, checkpoints=LogCheckpoints(state))
                with capture_logs() as events:
                    await second.ship()
                second.close()
            found = await messages_in(stack.cloudwatch, group)
        finally:
            await delete_group(stack.cloudwatch, group)
        checked = [e for e in events if e["event"] == "log_inflight_checked"]
        assert [e["landed"] for e in checked] == [True]
        numbers = Counter(json.loads(m)["n"] for m in found)
        assert [n for n, count in numbers.items() if count > 1] == []
        assert set(numbers) == set(range(150))


class TestLogChaos:
    async def test_sigkill_at_random_moments_leaves_every_line_once(  # noqa: PLR0915 - one story
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

        def inflight_checked() -> bool:
            text = (tmp_path / "shipper.log").read_text(errors="replace")
            return '"event": "log_inflight_checked"' in text

        shipper_log = (tmp_path / "shipper.log").open("ab")
        writer = asyncio.create_task(write())
        process = start()
        try:
            kills = 0
            # KILLS random moments; more (at most MAX_KILLS) while none landed between a
            # put and its checkpoint (random moments all missed it in one CI run)
            while kills < KILLS or (not inflight_checked() and kills < MAX_KILLS):
                # after its start (imports take seconds on a loaded machine), then mid-batch
                await wait_started(tmp_path / "shipper.log", kills + 1)
                await asyncio.sleep(rng.uniform(0.0, 1.5))
                process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(process.wait, 10)
                process = start()
                kills += 1
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
                # reaped here, or its Popen is collected in a later test as "still running"
                await asyncio.to_thread(process.wait, 10)
            await delete_group(stack.cloudwatch, group)
            shipper_log.close()
        numbers = Counter(json.loads(m)["n"] for m in found)
        doubled = [n for n, count in numbers.items() if count > 1]
        missing = sorted(set(range(written)) - set(numbers))
        assert written > 500
        assert not doubled, f"{len(doubled)} lines doubled, e.g. {doubled[:5]}"
        assert not missing, f"{len(missing)} lines missing, e.g. {missing[:5]}"
        assert inflight_checked(), "no kill landed between a put and its checkpoint: a weak run"


class TestLogsAway:
    async def test_the_shipper_starts_and_scrapes_while_logs_is_away_then_delivers(
        self, stack: StackSettings, unique: str, tmp_path: Path
    ) -> None:
        """CloudWatch unreachable at start: the shipper stays up, answers /healthz and keeps
        scraping; once CloudWatch is back, the group is created and every line arrives."""
        endpoint = stack.cloudwatch.endpoint_url
        assert endpoint is not None
        logs = tmp_path / "logs"
        logs.mkdir()
        (logs / "worker.log").write_text("".join(log_line(i) + "\n" for i in range(120)))
        group = f"/indutech/test/{unique}"
        worker = f"w-{unique}"
        async with SwitchableProxy("localhost", int(endpoint.rsplit(":", 1)[1])) as proxy:
            proxy.cut()
            # "localhost" so that the stack's certificate still verifies through the proxy
            cloudwatch = stack.cloudwatch.model_copy(
                update={"endpoint_url": f"https://localhost:{proxy.port}"}
            )
            async with metrics_endpoint(worker) as (metrics, url):
                shipper = MetricsShipperWorker(
                    MetricsShipperSettings(
                        cloudwatch=cloudwatch,
                        namespace=f"InduTech/Test/{unique}",
                        targets=(url,),
                        log_dir=logs,
                        log_group=group,
                        log_state_dir=tmp_path / "state",
                        log_flush_s=0.05,
                        interval_s=10,
                        health=HealthSettings(host="127.0.0.1", port=0),
                    )
                )
                metrics.records_out.labels(worker, "sensor").inc(3)  # newer than its state: sent
                try:
                    with capture_logs() as captured:
                        task = asyncio.create_task(shipper.serve(install_signal_handlers=False))
                        await wait_until(
                            lambda: (
                                shipper.cycles >= 1
                                and sum(e["event"] == "log_delivery_failed" for e in captured) >= 2
                            ),
                            timeout_s=30,
                        )
                        assert not task.done(), "the shipper exited while CloudWatch was away"
                        async with (
                            aiohttp.ClientSession() as session,
                            session.get(f"http://127.0.0.1:{shipper.health.port}/healthz") as reply,
                        ):
                            assert reply.status == 200
                        assert shipper.sink is not None
                        assert len(shipper.sink.buffer) > 0, "the scraped metrics were not buffered"

                        proxy.restore()
                        await wait_for_messages(stack.cloudwatch, group, 120, timeout_s=60)
                        shipper.request_exit()
                        assert await task == 0
                    found = await messages_in(stack.cloudwatch, group)
                finally:
                    shipper.request_exit()
                    await delete_group(stack.cloudwatch, group)
        assert sorted(json.loads(m)["n"] for m in found) == list(range(120))
        failures = [e for e in captured if e["event"] == "log_delivery_failed"]
        assert all(e["retry_in_s"] <= 60 for e in failures)


class TestLogBacklog:
    async def test_a_large_backlog_is_read_off_the_event_loop(
        self, stack: StackSettings, unique: str, tmp_path: Path
    ) -> None:
        """Reading and parsing 10,000 long lines leaves the event loop free. Shown without a
        clock (a timed bound failed on a loaded CI machine): the read, in its thread, waits
        until the loop has answered a call made while it runs; on the loop that could never
        happen and the wait would run out."""
        logs = tmp_path / "logs"
        logs.mkdir()
        pad = "x" * 4000
        old = "2020-01-01T00:00:00Z"  # refused by CloudWatch: dropped before the put, not sent
        (logs / "worker.log").write_text(
            "".join(
                json.dumps({"event": "old", "n": i, "pad": pad, "timestamp": old}) + "\n"
                for i in range(10_000)
            )
        )
        group = f"/indutech/test/{unique}"
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        read_threads: list[int] = []
        loop_answered = threading.Event()
        answered_during_read: list[bool] = []

        class WatchedShipper(LogShipper):
            def read(self, max_lines: int, read_at_ms: int) -> list[FileRead]:
                read_threads.append(threading.get_ident())
                loop.call_soon_threadsafe(loop_answered.set)
                answered_during_read.append(loop_answered.wait(timeout=10))
                return super().read(max_lines, read_at_ms)

        try:
            async with create_logs_client(stack.cloudwatch) as client:
                shipper = WatchedShipper(
                    client,
                    root=logs,
                    patterns=("**/*.log",),
                    group=group,
                    checkpoints=LogCheckpoints(tmp_path / "state"),
                )
                await shipper.start()
                read = await shipper.ship()
                shipper.close()
        finally:
            await delete_group(stack.cloudwatch, group)
        assert read == 10_000
        assert shipper.events_dropped == 10_000
        assert read_threads, "the read was not called"
        assert loop_thread not in read_threads, "the read ran on the loop"
        assert answered_during_read == [True], "the loop did not run while the read did"
