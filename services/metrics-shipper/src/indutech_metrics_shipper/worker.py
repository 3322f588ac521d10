"""metrics-shipper: scrape every worker's /metrics, convert, and ship to CloudWatch.

One cycle every ``interval_s``: scrape all targets concurrently, convert each
scrape (counters to increases, histograms to values/counts; see convert.py),
buffer the datums and flush what CloudWatch takes. CloudWatch being away never
stops the cycle: the buffer holds the datums (bounded, oldest dropped first and
counted) and the next cycles deliver them.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Gauge

from indutech_common.cloudwatch import create_cloudwatch_client, create_logs_client
from indutech_common.lifecycle import Worker
from indutech_common.retry import Backoff
from indutech_metrics_shipper.config import MetricsShipperSettings
from indutech_metrics_shipper.convert import Converter, DimensionRules
from indutech_metrics_shipper.exposition import parse_scrapes
from indutech_metrics_shipper.logs import MAX_EVENTS, LogCheckpoints, LogShipper
from indutech_metrics_shipper.sinks import (
    BufferedSink,
    CloudWatchMetricsSink,
    DatumBuffer,
    DiskDatumBuffer,
    EmfSink,
    MetricBuffer,
)
from indutech_metrics_shipper.sources import (
    ConsumerLagSource,
    ScrapeSource,
    WarehouseQueueSource,
)
from indutech_metrics_shipper.status import (
    FlowStatus,
    StatusBoard,
    render_html,
)


class MetricsShipperWorker(Worker[MetricsShipperSettings]):
    name = "metrics-shipper"

    def __init__(self, settings: MetricsShipperSettings, *, once: bool = False) -> None:
        super().__init__(settings)
        self.once = once
        self.converter = Converter(
            state_epoch=time.time(),
            rules=DimensionRules(
                allow=frozenset(settings.dimension_allow),
                deny=frozenset(settings.dimension_deny),
                max_series_per_metric=settings.max_series_per_metric,
            ),
            histogram_mode=settings.histogram_mode,
        )
        # in memory until startup() opens the disk buffer, if one is set
        self.buffer: MetricBuffer = DatumBuffer(settings.buffer_max_datums)
        registry = self.metrics.registry
        self.series_scraped = Counter(
            "indutech_shipper_series_scraped",
            "Series read from targets",
            ["worker"],
            registry=registry,
        )
        self.datums_sent = Counter(
            "indutech_shipper_datums_sent",
            "Datums CloudWatch accepted",
            ["worker"],
            registry=registry,
        )
        self.series_dropped = Counter(
            "indutech_shipper_series_dropped",
            "Series not sent, by reason (not_finite, cardinality_cap, too_many_dimensions, "
            "invalid, buffer_full, rejected)",
            ["worker", "reason"],
            registry=registry,
        )
        self.scrape_failures = Counter(
            "indutech_shipper_scrape_failures",
            "Failed scrapes",
            ["worker", "target"],
            registry=registry,
        )
        self.buffer_fill = Gauge(
            "indutech_shipper_buffer_datums",
            "Datums waiting for CloudWatch",
            ["worker"],
            registry=registry,
        )
        self.buffer_bytes = Gauge(
            "indutech_shipper_buffer_bytes",
            "Bytes of the disk buffer (0 without one)",
            ["worker"],
            registry=registry,
        )
        self.api_errors = Counter(
            "indutech_shipper_api_errors", "CloudWatch API errors", ["worker"], registry=registry
        )
        self.source = ScrapeSource(
            settings.targets, timeout_s=settings.scrape_timeout_s, ca_file=settings.scrape_ca_file
        )
        self.lag: ConsumerLagSource | None = (
            ConsumerLagSource(settings.kafka, groups=settings.lag_groups)
            if settings.kafka
            else None
        )
        self.queue: WarehouseQueueSource | None = (
            WarehouseQueueSource(settings.warehouse) if settings.warehouse else None
        )
        self.sink: BufferedSink[Any] | None = None
        self.logs: LogShipper | None = None
        self.log_events_sent = Counter(
            "indutech_shipper_log_events_sent",
            "Log lines CloudWatch Logs accepted",
            ["worker"],
            registry=registry,
        )
        self.log_events_dropped = Counter(
            "indutech_shipper_log_events_dropped",
            "Log lines CloudWatch would refuse (over 14 days old, over 2 h ahead), not sent",
            ["worker"],
            registry=registry,
        )
        self.log_delivery_lag = Gauge(
            "indutech_shipper_log_delivery_seconds",
            "Seconds since the log files were last read to their end and delivered",
            ["worker"],
            registry=registry,
        )
        self.cycles = 0
        self.board = StatusBoard()
        self.health.add_page("/status", self._status_page)

    async def startup(self) -> None:
        if self.settings.buffer_dir is not None:
            self.buffer = await asyncio.to_thread(
                DiskDatumBuffer,
                self.settings.buffer_dir,
                max_bytes=self.settings.buffer_max_bytes,
                max_datums=self.settings.buffer_max_datums,
            )
            # segments dropped at start (the bounds were lowered) count as a full buffer
            self.series_dropped.labels(self.name, "buffer_full").inc(self.buffer.dropped)
        self._restore_state()
        client = await self.enter(
            "cloudwatch-client", create_cloudwatch_client(self.settings.cloudwatch)
        )
        self.adopt(self.source)
        logs_client = None
        if self.settings.sink == "emf" or self.settings.log_dir is not None:
            logs_client = await self.enter(
                "cloudwatch-logs-client", create_logs_client(self.settings.cloudwatch)
            )
        if self.settings.log_dir is not None and self.settings.log_state_dir is not None:
            assert logs_client is not None  # noqa: S101 - opened above for log_dir
            self.logs = LogShipper(
                logs_client,
                root=self.settings.log_dir,
                patterns=self.settings.log_patterns,
                group=self.settings.log_group,
                checkpoints=LogCheckpoints(self.settings.log_state_dir),
            )
            # No call to CloudWatch Logs here: the logs loop creates the group and settles
            # a batch left in flight, retrying while Logs is away (the flows go on).
            logs = self.logs
            self.add_closer("log-files", lambda: asyncio.to_thread(logs.close))
        if self.lag is not None:
            self.adopt(self.lag)
        if self.queue is not None:
            self.adopt(self.queue)
        if self.settings.sink == "emf":
            assert logs_client is not None  # noqa: S101 - opened above for the EMF sink
            self.sink = self.adopt(
                EmfSink(
                    logs_client,
                    namespace=self.settings.namespace,
                    group=self.settings.emf_log_group,
                    stream=self.settings.emf_log_stream,
                    buffer=self.buffer,
                )
            )
        else:
            self.sink = self.adopt(
                CloudWatchMetricsSink(client, namespace=self.settings.namespace, buffer=self.buffer)
            )

    async def main_loop(self) -> None:
        loops = [self._metrics_loop()]
        if self.logs is not None:
            loops.append(self._logs_loop(self.logs))
        await asyncio.gather(*loops)

    async def _metrics_loop(self) -> None:
        while not self.should_exit.is_set():
            started = time.monotonic()
            await self.cycle()
            if self.once:
                return
            left = self.settings.interval_s - (time.monotonic() - started)
            if await self.sleep_or_exit(max(0.0, left)):
                break

    async def _logs_loop(self, logs: LogShipper) -> None:
        """Lines as they come: a read every ``log_flush_s``, at once while files have more."""
        delays = Backoff(initial_s=1.0, max_s=60.0).delays()
        delivered_at = time.time()
        while not self.should_exit.is_set():
            try:
                sent_before, dropped_before = logs.events_sent, logs.events_dropped
                read = await logs.ship()  # lines read: MAX_EVENTS means the files have more
                self.log_events_sent.labels(self.name).inc(logs.events_sent - sent_before)
                self.log_events_dropped.labels(self.name).inc(logs.events_dropped - dropped_before)
            except Exception as exc:  # CloudWatch away: nothing committed, read again later
                self.metrics.error("log_delivery")
                delay = next(delays)
                self.log.warning(
                    "log_delivery_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 2),
                    starting=not logs.ready,  # the group or the in-flight check still to do
                )
                self.log_delivery_lag.labels(self.name).set(time.time() - delivered_at)
                if await self.sleep_or_exit(delay):
                    break
                continue
            delays = Backoff(initial_s=1.0, max_s=60.0).delays()
            if read < MAX_EVENTS:  # the files are read to their end
                delivered_at = time.time()
                if self.once:
                    return
            self.log_delivery_lag.labels(self.name).set(time.time() - delivered_at)
            if read < MAX_EVENTS and await self.sleep_or_exit(self.settings.log_flush_s):
                break

    async def shutdown(self) -> None:
        """A last flush of what is buffered, within the stop budget."""
        if self.sink is not None and len(self.sink.buffer):
            await asyncio.wait_for(self.sink.flush(), timeout=max(0.1, self.stop_budget_left() / 2))

    async def cycle(self) -> None:
        """One scrape → convert → ship round (the unit of work)."""
        assert self.sink is not None, "startup() opens the sink"  # noqa: S101 - a lifecycle invariant
        begun = time.perf_counter()
        scrapes = await self.source.read()
        # each text parsed once, shared by the board and the converter; parse and conversion
        # in a thread, so that /healthz and /status answer during a large cycle
        parsed = await asyncio.to_thread(parse_scrapes, scrapes)
        self.board.update(scrapes, parsed=parsed)
        datums = []
        for scrape in scrapes:
            if scrape.text is None:
                self.scrape_failures.labels(self.name, scrape.target.id).inc()
                self.log.warning("scrape_failed", target=scrape.target.id, error=scrape.error)
                continue
            report = await asyncio.to_thread(
                self.converter.convert,
                scrape.target.id,
                parsed[scrape.target.id],
                scrape.scraped_at,
            )
            self.series_scraped.labels(self.name).inc(
                len(report.datums) + sum(report.dropped.values())
            )
            for reason, count in report.dropped.items():
                self.series_dropped.labels(self.name, reason).inc(count)
            datums.extend(report.datums)
        for source in (self.lag, self.queue):
            if source is None:
                continue
            try:
                datums.extend(await source.read())
            except Exception as exc:  # a dependency away: the workers' own metrics still go out
                self.scrape_failures.labels(self.name, source.name).inc()
                self.log.warning(
                    "source_failed", source=source.name, error=f"{type(exc).__name__}: {exc}"
                )
        sent_before, errors_before = self.sink.datums_sent, self.sink.api_errors
        dropped_before, rejected_before = self.sink.buffer.dropped, self.sink.rejected
        # The datums, then the counters' state naming their segment (the commit), then the
        # send: a kill anywhere in between neither loses nor counts an increase twice (see
        # sinks/disk_buffer.py). In memory, a kill loses the buffer but never doubles it.
        self.sink.buffer.extend(datums)
        self._save_state()
        await self.sink.flush()
        self.datums_sent.labels(self.name).inc(self.sink.datums_sent - sent_before)
        self.api_errors.labels(self.name).inc(self.sink.api_errors - errors_before)
        self.series_dropped.labels(self.name, "buffer_full").inc(
            self.sink.buffer.dropped - dropped_before
        )
        self.series_dropped.labels(self.name, "rejected").inc(self.sink.rejected - rejected_before)
        self.buffer_fill.labels(self.name).set(len(self.sink.buffer))
        if isinstance(self.buffer, DiskDatumBuffer):
            self.buffer_bytes.labels(self.name).set(self.buffer.size)
        self.cycles += 1
        self.metrics.batch_duration.labels(self.name).observe(time.perf_counter() - begun)
        if len(self.sink.buffer) == 0:
            self.metrics.record_success(stream="metrics", count=len(datums), last_event_time=None)

    def statuses(self) -> list[FlowStatus]:
        """The seven flows as of the last scrape (the /status page and tests)."""
        return self.board.statuses()

    async def _status_page(self, _request: web.Request) -> web.Response:
        return web.Response(text=render_html(self.statuses()), content_type="text/html")

    def _restore_state(self) -> None:
        """The counters' last values, and the disk buffer cut back to what they cover."""
        path = self.settings.counters_state_path()
        if path is None:
            return
        if not path.exists():
            # The state begins now, and is saved now: series that appear after this start are
            # new to it and sent whole, even if this process dies before its first cycle.
            self._save_state()
            return
        state = json.loads(path.read_text())
        self.converter.import_state(state)
        if isinstance(self.buffer, DiskDatumBuffer) and "segment" in state:
            self.buffer.discard_after(int(state["segment"]))

    def _save_state(self) -> None:
        path = self.settings.counters_state_path()
        if path is None:
            return
        state: dict[str, Any] = self.converter.export_state()
        if isinstance(self.buffer, DiskDatumBuffer):
            state["segment"] = self.buffer.last_seq  # commits the segments up to it
        tmp = path.with_suffix(path.suffix + ".tmp")
        with tmp.open("w") as out:
            out.write(json.dumps(state))
            out.flush()
            os.fsync(out.fileno())  # durable before its segment can be sent
        os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous state
