"""The metrics every worker reports, in a registry of its own.

Names start ``indutech_`` and carry a ``worker`` label, so the alarms of the
seed's table can be written once for all workers (DESIGN.md, Common library).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "WorkerMetrics"]


class WorkerMetrics:
    """Standard counters, gauges and histograms of one worker."""

    def __init__(self, worker: str, registry: CollectorRegistry | None = None) -> None:
        self.worker = worker
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.records_in = Counter(
            "indutech_records_in", "Records read from the source", ["worker", "stream"], registry=r
        )
        self.records_out = Counter(
            "indutech_records_out", "Records durably written", ["worker", "stream"], registry=r
        )
        self.errors = Counter("indutech_errors", "Errors by kind", ["worker", "kind"], registry=r)
        self.dead_lettered = Counter(
            "indutech_dead_lettered_records",
            "Records sent to the dead-letter topic",
            ["worker", "reason"],
            registry=r,
        )
        self.batch_duration = Histogram(
            "indutech_batch_duration_seconds",
            "Time to process and commit one batch",
            ["worker"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.lag = Gauge(
            "indutech_lag_seconds",
            "Now minus the event time of the last record done",
            ["worker", "stream"],
            registry=r,
        )
        self.last_success = Gauge(
            "indutech_last_success_timestamp_seconds",
            "Unix time of the last successful batch",
            ["worker"],
            registry=r,
        )
        self.ready = Gauge(
            "indutech_ready",
            "1 when the worker is ready (dependencies answer)",
            ["worker"],
            registry=r,
        )
        self.dependency_up = Gauge(
            "indutech_dependency_up",
            "1 when a dependency answered its last ping",
            ["worker", "dependency"],
            registry=r,
        )

    def record_success(self, *, stream: str, count: int, last_event_time: float | None) -> None:
        """One batch done: count it, stamp success, and update the lag."""
        now = time.time()
        self.records_out.labels(self.worker, stream).inc(count)
        self.last_success.labels(self.worker).set(now)
        if last_event_time is not None:
            self.lag.labels(self.worker, stream).set(max(0.0, now - last_event_time))

    def error(self, kind: str) -> None:
        self.errors.labels(self.worker, kind).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
