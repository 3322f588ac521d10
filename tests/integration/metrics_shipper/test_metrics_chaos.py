"""The metrics path through SIGKILLs, against moto's CloudWatch over HTTPS, with the disk buffer.

The guarantee under test (README "Delivery"): no counter increase is lost, none is
computed twice, and a kill can re-send at most the one PutMetricData call in flight
(CloudWatch accepted it, the shipper had not yet removed it from disk). A re-sent call
is an exact copy: same datums, same timestamps. So, reading the counter back one
second at a time (each second holds one scrape's datum: scrapes are seconds apart),
the copies of a second are that scrape sent again, and one copy of each second adds up
to exactly what the counter rose by.
"""

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
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from prometheus_client import Gauge
from prometheus_client.parser import text_string_to_metric_families

from indutech_common.cloudwatch import create_cloudwatch_client
from indutech_common.metrics import WorkerMetrics
from indutech_common.settings import CloudWatchSettings
from tests.integration.metrics_shipper.test_logs import wait_started
from tests.integration.metrics_shipper.test_shipping import metrics_endpoint
from tests.support.stack import REPO_ROOT, StackSettings

if TYPE_CHECKING:
    from types_aiobotocore_cloudwatch.type_defs import MetricDataQueryTypeDef, MetricTypeDef

KILLS = 10
MAX_KILLS = 20  # the extra ones only while no kill has landed in the commit window
# Each scrape gives more than 1,000 datums (PutMetricData's per-call limit), so a call holds
# datums of at most two scrapes, and a kill re-sends at most two datums of one series.
FILLER_SERIES = 1_000
SCRAPES_PER_CALL = 2


@contextlib.asynccontextmanager
async def slow_answers(target_port: int, delay_s: float) -> AsyncIterator[int]:
    """A loopback forwarder to moto that holds each chunk of its answers ``delay_s``: each
    PutMetricData takes a few tenths of a second, so that random kills land mid-put (and
    between CloudWatch's acceptance and the shipper hearing of it) often enough."""

    async def pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
    ) -> None:
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("localhost", target_port)
        await asyncio.gather(pipe(client_r, server_w, 0.0), pipe(server_r, client_w, delay_s))

    server = await asyncio.start_server(handle, "localhost", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def shipper_env(
    stack: StackSettings, namespace: str, target: str, buffer: Path, endpoint: str
) -> dict[str, str]:
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("METRICS_SHIPPER_", "INDUTECH_"))
        },
        "METRICS_SHIPPER_CLOUDWATCH__ENDPOINT_URL": endpoint,
        "METRICS_SHIPPER_CLOUDWATCH__REGION": stack.cloudwatch.region,
        "METRICS_SHIPPER_CLOUDWATCH__CA_FILE": str(stack.cloudwatch.ca_file),
        "METRICS_SHIPPER_CLOUDWATCH__ACCESS_KEY_ID": "local",
        "METRICS_SHIPPER_CLOUDWATCH__SECRET_ACCESS_KEY": "local",
        "METRICS_SHIPPER_NAMESPACE": namespace,
        "METRICS_SHIPPER_TARGETS": target,
        "METRICS_SHIPPER_INTERVAL_S": "10",  # one cycle at each start, the next 10 s later
        "METRICS_SHIPPER_MAX_SERIES_PER_METRIC": str(FILLER_SERIES + 10),
        "METRICS_SHIPPER_BUFFER_DIR": str(buffer),
        "METRICS_SHIPPER_HEALTH__PORT": "0",
    }


class ShipperProcess:
    """The shipper as a process: started, killed, started again; one log for all."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "indutech_metrics_shipper", "run"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def start(self) -> None:
        """Start one and wait until it has started (imports take seconds when busy).

        Not before the next whole second: the test reads CloudWatch per second and takes
        two datums of one second for copies of one scrape, so the new process's first
        scrape must not share a second with the last scrape of the one just killed."""
        await asyncio.sleep(1.0 - time.time() % 1.0 + 0.01)
        self.process = self._spawn()
        self.starts += 1
        await wait_started(self.log, self.starts)

    async def stop(self, sig: signal.Signals) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return await asyncio.to_thread(self.process.wait, 30)

    def kill_if_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            # reaped, or its Popen is collected in a later test as "still running"
            self.process.wait(10)


class Riser:
    """Raises a counter by 1 to 3 every 20 ms until stopped; ``total`` is what it rose by."""

    def __init__(self, metrics: WorkerMetrics, worker: str, rng: random.Random) -> None:
        self.counter = metrics.records_out.labels(worker, "sensor")  # newer than the state
        self.rng = rng
        self.total = 0
        self.running = True
        self.task = asyncio.create_task(self._rise())

    async def _rise(self) -> None:
        while self.running:
            step = self.rng.randint(1, 3)
            self.counter.inc(step)
            self.total += step
            await asyncio.sleep(0.02)

    async def stop(self) -> int:
        self.running = False
        await self.task
        return self.total


async def per_second(
    cloudwatch: CloudWatchSettings,
    namespace: str,
    since: datetime,
    dimensions: dict[str, str],
) -> dict[datetime, tuple[float, float]]:
    """(SampleCount, Sum) of ``indutech_records_out`` for each second that has data."""
    metric: MetricTypeDef = {
        "Namespace": namespace,
        "MetricName": "indutech_records_out",
        "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(dimensions.items())],
    }
    queries: list[MetricDataQueryTypeDef] = [
        {"Id": stat.lower(), "MetricStat": {"Metric": metric, "Period": 1, "Stat": stat}}
        for stat in ("SampleCount", "Sum")
    ]
    async with create_cloudwatch_client(cloudwatch) as client:
        response = await client.get_metric_data(
            MetricDataQueries=queries,
            StartTime=since,
            EndTime=datetime.now(UTC) + timedelta(seconds=5),
        )
    results = {r["Id"]: r for r in response["MetricDataResults"]}
    counts = dict(
        zip(results["samplecount"]["Timestamps"], results["samplecount"]["Values"], strict=True)
    )
    sums = dict(zip(results["sum"]["Timestamps"], results["sum"]["Values"], strict=True))
    return {second: (counts[second], sums[second]) for second in counts}


def events(log: Path) -> Iterator[dict[str, object]]:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            yield json.loads(line)


def commit_window_hit(log: Path) -> bool:
    """Some kill landed between a cycle's commit and its delivery: a start found committed
    datums in the buffer to deliver (not only uncommitted ones to discard)."""
    seen = Counter(e["event"] for e in events(log))
    return seen["metric_buffer_restored"] > seen["metric_buffer_uncommitted_discarded"]


async def until_drained(log: Path, *, timeout_s: float = 40) -> None:
    """Until the last started shipper has run a cycle and its buffer is empty (its own
    /metrics say so; the port is in its ``worker_started`` line)."""
    port = [e["health_port"] for e in events(log) if e["event"] == "worker_started"][-1]
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as reply:
                samples = {
                    sample.name: sample.value
                    for family in text_string_to_metric_families(await reply.text())
                    for sample in family.samples
                }
            cycles = samples.get("indutech_batch_duration_seconds_count", 0)
            if cycles >= 1 and samples.get("indutech_shipper_buffer_datums") == 0:
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"the last shipper did not drain its buffer in {timeout_s} s: see {log}")


class TestMetricsChaos:
    async def test_sigkill_at_random_moments_loses_nothing_and_doubles_only_the_call_in_flight(
        self, stack: StackSettings, unique: str, tmp_path: Path
    ) -> None:
        """The counter rises while the shipper is killed (SIGKILL) KILLS times at random
        moments, with the disk buffer on; then one copy of each scrape adds up to the rise
        exactly, and the copies are at most one call's worth per kill."""
        namespace = f"InduTech/Test/{unique}"
        worker = f"w-{unique}"
        since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
        rng = random.Random(unique)
        log = tmp_path / "shipper.log"
        kills = 0
        moto = stack.cloudwatch.endpoint_url
        assert moto is not None
        async with (
            metrics_endpoint(worker) as (metrics, url),
            slow_answers(int(moto.rsplit(":", 1)[1]), 0.05) as port,
        ):
            filler = Gauge("chaos_filler", "many series", ["i"], registry=metrics.registry)
            for i in range(FILLER_SERIES):
                filler.labels(str(i)).set(i)
            # "localhost" so that the stack's certificate still verifies through the forwarder
            endpoint = f"https://localhost:{port}"
            shipper = ShipperProcess(
                shipper_env(stack, namespace, url, tmp_path / "buffer", endpoint), log
            )
            try:
                await shipper.start()
                riser = Riser(metrics, worker, rng)
                # KILLS random moments; more (at most MAX_KILLS) while none landed between
                # a cycle's commit and its delivery (random moments can all miss it)
                while kills < KILLS or (not commit_window_hit(log) and kills < MAX_KILLS):
                    # the first cycle starts with the worker: scrape, commit, then the puts
                    await asyncio.sleep(rng.uniform(0.0, 1.6))
                    await shipper.stop(signal.SIGKILL)
                    kills += 1
                    await shipper.start()
                await riser.stop()
                # a graceful restart (not a kill): its start scrapes the final value
                assert await shipper.stop(signal.SIGTERM) == 0
                await shipper.start()
                await until_drained(log)
                assert await shipper.stop(signal.SIGTERM) == 0
            finally:
                shipper.kill_if_running()
        seconds = await per_second(
            stack.cloudwatch, namespace, since, {"worker": worker, "stream": "sensor"}
        )

        once = sum(s / c for c, s in seconds.values())
        extra = {second: c - 1 for second, (c, _) in seconds.items() if c > 1}
        restored = [e for e in events(log) if e["event"] == "metric_buffer_restored"]
        print(  # what the run exercised, for whoever reads a failure or a weak pass
            f"{riser.total} increments; {len(seconds)} scrapes delivered; copies {extra}; "
            f"restored at start: {[e['datums'] for e in restored]}"
        )
        assert riser.total > 100
        assert once == riser.total, f"one copy a scrape adds up to {once}, not {riser.total}"
        assert sum(extra.values()) <= kills * SCRAPES_PER_CALL, f"copies over the bound: {extra}"
        assert commit_window_hit(log), (
            f"none of {kills} kills landed between a cycle's commit and its delivery: a weak run"
        )
