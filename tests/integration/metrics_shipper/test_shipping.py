"""metrics-shipper against moto's CloudWatch over HTTPS and a real worker's /metrics endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from indutech_common.cloudwatch import create_cloudwatch_client, create_logs_client
from indutech_common.health import HealthServer
from indutech_common.metrics import WorkerMetrics
from indutech_common.settings import CloudWatchSettings, HealthSettings
from indutech_metrics_shipper.config import MetricsShipperSettings
from indutech_metrics_shipper.convert import Datum
from indutech_metrics_shipper.emf import EmfEvent
from indutech_metrics_shipper.sinks import CloudWatchMetricsSink, DatumBuffer
from indutech_metrics_shipper.worker import MetricsShipperWorker
from tests.support.proxy import SwitchableProxy
from tests.support.stack import StackSettings
from tests.unit.metrics_shipper.test_emf import check_emf

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def metrics_endpoint(worker: str) -> AsyncIterator[tuple[WorkerMetrics, str]]:
    """A worker's real health server (the one every worker runs) on a free port."""
    metrics = WorkerMetrics(worker)
    server = HealthServer(HealthSettings(host="127.0.0.1", port=0), metrics)
    await server.start()
    try:
        yield metrics, f"http://127.0.0.1:{server.port}/metrics"
    finally:
        await server.stop()


def shipper_settings(
    cloudwatch: CloudWatchSettings, namespace: str, target: str, **extra: Any
) -> MetricsShipperSettings:
    return MetricsShipperSettings(
        cloudwatch=cloudwatch,
        namespace=namespace,
        targets=(target,),
        interval_s=10,
        health=HealthSettings(host="127.0.0.1", port=0),
        **extra,
    )


async def metric_values(
    cloudwatch: CloudWatchSettings, namespace: str, name: str, stat: str, **dimensions: str
) -> list[float]:
    """Every value of the metric with exactly these dimensions (CloudWatch matches them all)."""
    now = datetime.now(UTC)
    async with create_cloudwatch_client(cloudwatch) as client:
        response = await client.get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "q",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": namespace,
                            "MetricName": name,
                            "Dimensions": [
                                {"Name": k, "Value": v} for k, v in sorted(dimensions.items())
                            ],
                        },
                        "Period": 60,
                        "Stat": stat,
                    },
                }
            ],
            StartTime=now - timedelta(minutes=30),
            EndTime=now + timedelta(minutes=5),
        )
    return list(response["MetricDataResults"][0]["Values"])


class TestShipping:
    """Counters arrive as increases (first value kept), histograms as their observations."""

    async def test_counters_and_histograms_arrive_exactly(
        self, stack: StackSettings, unique: str, tmp_path: Path
    ) -> None:
        namespace = f"InduTech/Test/{unique}"
        worker = f"w-{unique}"
        state = tmp_path / "shipper-state.json"
        async with metrics_endpoint(worker) as (metrics, url):
            settings = shipper_settings(stack.cloudwatch, namespace, url, state_file=state)
            first = MetricsShipperWorker(settings, once=True)  # its state begins now
            metrics.records_out.labels(worker, "sensor").inc(7)  # a series newer than the state
            for seconds in (0.02, 0.3, 3.0):
                metrics.batch_duration.labels(worker).observe(seconds)
            assert await first.serve(install_signal_handlers=False) == 0
            assert first.sink is not None
            assert first.sink.datums_sent > 0

            metrics.records_out.labels(worker, "sensor").inc(5)
            second = MetricsShipperWorker(settings, once=True)  # continues from the state file
            assert await second.serve(install_signal_handlers=False) == 0

        sums = await metric_values(
            stack.cloudwatch,
            namespace,
            "indutech_records_out",
            "Sum",
            worker=worker,
            stream="sensor",
        )
        # one increase a cycle; a running total would have given 7 + 12 = 19
        assert sum(sums) == 12
        counts = await metric_values(
            stack.cloudwatch,
            namespace,
            "indutech_batch_duration_seconds",
            "SampleCount",
            worker=worker,
        )
        assert sum(counts) == 3

    async def test_an_outage_is_buffered_then_delivered(
        self, stack: StackSettings, unique: str
    ) -> None:
        """CloudWatch unreachable: the cycle goes on, datums wait, and arrive once it is back."""
        endpoint = stack.cloudwatch.endpoint_url
        assert endpoint is not None
        port = int(endpoint.rsplit(":", 1)[1].rstrip("/"))
        namespace = f"InduTech/Test/{unique}"
        worker = f"w-{unique}"
        async with SwitchableProxy("localhost", port) as proxy:
            proxy.cut()  # the outage: connections are refused until restore()
            # "localhost" so that the stack's certificate still verifies through the proxy
            cloudwatch = stack.cloudwatch.model_copy(
                update={"endpoint_url": f"https://localhost:{proxy.port}"}
            )
            async with metrics_endpoint(worker) as (metrics, url):
                shipper = MetricsShipperWorker(shipper_settings(cloudwatch, namespace, url))
                metrics.records_out.labels(worker, "sensor").inc(4)
                task = asyncio.create_task(shipper.serve(install_signal_handlers=False))
                await wait_until(lambda: shipper.cycles >= 1, timeout_s=30)
                assert shipper.sink is not None
                assert len(shipper.sink.buffer) > 0, "nothing was buffered during the outage"
                assert shipper.sink.datums_sent == 0

                proxy.restore()
                metrics.records_out.labels(worker, "sensor").inc(6)
                await wait_until(
                    lambda: (
                        shipper.sink is not None
                        and shipper.cycles >= 2  # the cycle after the outage
                        and len(shipper.sink.buffer) == 0
                    ),
                    timeout_s=60,
                )
                shipper.request_exit()
                assert await task == 0
        sums = await metric_values(
            stack.cloudwatch,
            namespace,
            "indutech_records_out",
            "Sum",
            worker=worker,
            stream="sensor",
        )
        assert sum(sums) == 10

    async def test_with_a_disk_buffer_what_was_not_delivered_survives_a_restart(
        self, stack: StackSettings, unique: str, tmp_path: Path
    ) -> None:
        """CloudWatch away: a shipper stops with its datums on disk; the next one, started
        once CloudWatch is back, delivers them (with nothing new to scrape)."""
        endpoint = stack.cloudwatch.endpoint_url
        assert endpoint is not None
        port = int(endpoint.rsplit(":", 1)[1].rstrip("/"))
        namespace = f"InduTech/Test/{unique}"
        worker = f"w-{unique}"
        buffer_dir = tmp_path / "buffer"
        async with SwitchableProxy("localhost", port) as proxy, metrics_endpoint(worker) as m:
            metrics, url = m
            proxy.cut()
            away = stack.cloudwatch.model_copy(
                update={"endpoint_url": f"https://localhost:{proxy.port}"}
            )
            first = MetricsShipperWorker(
                shipper_settings(away, namespace, url, buffer_dir=buffer_dir), once=True
            )
            metrics.records_out.labels(worker, "sensor").inc(9)  # newer than its state: sent
            assert await first.serve(install_signal_handlers=False) == 0
            assert first.sink is not None
            assert first.sink.datums_sent == 0
            on_disk = len(first.buffer)
            assert on_disk > 0
            assert list(buffer_dir.glob("*.seg"))

            second = MetricsShipperWorker(
                shipper_settings(stack.cloudwatch, namespace, url, buffer_dir=buffer_dir),
                once=True,
            )
            assert await second.serve(install_signal_handlers=False) == 0
            assert second.sink is not None
            assert second.sink.datums_sent > on_disk  # the first's datums, then its own
            assert len(second.buffer) == 0
        assert not list(buffer_dir.glob("*.seg"))
        sums = await metric_values(
            stack.cloudwatch,
            namespace,
            "indutech_records_out",
            "Sum",
            worker=worker,
            stream="sensor",
        )
        assert sum(sums) == 9  # once: the second shipper's own scrape found no increase


class TestEmf:
    """``SINK=emf``: the same datums as EMF log events in a log group (moto stores them; it
    does not extract metrics from them, so the documents are read back, not the metrics)."""

    async def test_counters_and_histograms_arrive_as_emf_documents(
        self, stack: StackSettings, unique: str
    ) -> None:
        namespace = f"InduTech/Test/{unique}"
        worker = f"w-{unique}"
        group = f"/indutech/test-emf/{unique}"
        async with metrics_endpoint(worker) as (metrics, url):
            shipper = MetricsShipperWorker(
                shipper_settings(stack.cloudwatch, namespace, url, sink="emf", emf_log_group=group),
                once=True,
            )
            metrics.records_out.labels(worker, "sensor").inc(7)  # newer than its state: sent
            for seconds in (0.02, 0.3, 3.0):
                metrics.batch_duration.labels(worker).observe(seconds)
            try:
                assert await shipper.serve(install_signal_handlers=False) == 0
                events = await log_events(stack.cloudwatch, group, "metrics-shipper")
            finally:
                async with create_logs_client(stack.cloudwatch) as client:
                    await client.delete_log_group(logGroupName=group)
        assert shipper.sink is not None
        assert shipper.sink.datums_sent > 0
        assert shipper.sink.rejected == 0
        ours = [
            check_emf(EmfEvent(e["timestamp"], e["message"], ()))
            for e in events
            if f'"worker":"{worker}"' in e["message"]
        ]
        assert all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == namespace for d in ours)
        records = [d for d in ours if d.get("stream") == "sensor" and "indutech_records_out" in d]
        assert [d["indutech_records_out"] for d in records] == [7]
        [histogram] = [
            d["indutech_batch_duration_seconds"]
            for d in ours
            if "indutech_batch_duration_seconds" in d
        ]
        assert histogram["Count"] == 3
        assert len(histogram["Values"]) == 3


async def log_events(
    cloudwatch: CloudWatchSettings, group: str, stream: str
) -> list[dict[str, Any]]:
    async with create_logs_client(cloudwatch) as client:
        page = await client.get_log_events(
            logGroupName=group, logStreamName=stream, startFromHead=True
        )
    return [dict(e) for e in page.get("events", [])]


async def wait_until(condition: Any, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.1)


class TestInvalidDatums:
    """A datum the API refuses never blocks the others: dropped, counted, the rest sent."""

    async def test_an_invalid_series_is_dropped_and_the_valid_ones_arrive_in_the_same_cycle(
        self, stack: StackSettings, unique: str
    ) -> None:
        namespace = f"InduTech/Test/{unique}"
        now = time.time()
        valid = [Datum(f"ok_{i}", (("worker", unique),), now, value=float(i)) for i in range(3)]
        # an empty dimension value: botocore's client refuses the whole call before sending
        invalid = Datum("bad_empty_dimension", (("worker", ""),), now, value=1.0)
        async with create_cloudwatch_client(stack.cloudwatch) as client:
            sink = CloudWatchMetricsSink(
                client, namespace=namespace, buffer=DatumBuffer(max_datums=100)
            )
            with capture_logs() as logs:
                await sink.write([valid[0], invalid, valid[1], valid[2]])
            assert len(sink.buffer) == 0, "the invalid datum is still buffered, to be retried"
            assert (sink.datums_sent, sink.rejected) == (3, 1)
            assert await sink.flush()  # nothing left to retry: no call, no error
            assert sink.api_errors == 1
        events = [e for e in logs if e["event"] == "put_metric_data_datums_invalid"]
        assert len(events) == 1
        assert events[0]["metrics"] == ["bad_empty_dimension"]
        assert (events[0]["datums"], events[0]["sent"]) == (1, 3)
        assert not any(e["event"] == "cloudwatch_unavailable" for e in logs)
        for i in range(3):
            values = await metric_values(
                stack.cloudwatch, namespace, f"ok_{i}", "Sum", worker=unique
            )
            assert values == [float(i)]
