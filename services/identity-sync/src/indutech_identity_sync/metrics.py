"""identity-sync's own metrics, beside the shared ``WorkerMetrics``.

Every one carries the ``worker`` label like the shared set (and every other worker's),
so one alarm rule can select a worker whatever the metric; the other labels are the
side of the directory (``onprem`` | ``aws``) and what the metric says.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from indutech_identity_sync.config import Side


class IdentitySyncMetrics:
    """The ``indutech_identity_sync_*`` metrics of one worker, in its registry."""

    def __init__(self, worker: str, registry: CollectorRegistry) -> None:
        self.worker = worker
        r = registry
        self.writes = Counter(
            "indutech_identity_sync_writes",
            "Directory writes",
            ["worker", "side", "op"],
            registry=r,
        )
        self.conflicts = Counter(
            "indutech_identity_sync_conflicts",
            "Conflicts resolved by authority",
            ["worker"],
            registry=r,
        )
        self.guard = Gauge(
            "indutech_identity_sync_deletion_guard_tripped",
            "1 while the deletion threshold stops exports to a side",
            ["worker", "side"],
            registry=r,
        )
        self.deletes_in_window = Gauge(
            "indutech_identity_sync_deletes_in_window",
            "Deletes applied to a side within the deletion guard's rolling window",
            ["worker", "side"],
            registry=r,
        )
        self.deletes_pending = Gauge(
            "indutech_identity_sync_deletes_pending",
            "Deletes to a side not written yet (settling, or held by the deletion guard)",
            ["worker", "side"],
            registry=r,
        )
        self.dc = Gauge(
            "indutech_identity_sync_dc",
            "1 for the DC each side uses now, 0 for its other DCs (all 0: none answers)",
            ["worker", "side", "url"],
            registry=r,
        )
        self.failovers = Counter(
            "indutech_identity_sync_dc_failovers",
            "Moves of a side to another of its DCs",
            ["worker", "side"],
            registry=r,
        )
        self.quarantined = Gauge(
            "indutech_identity_sync_quarantined",
            "Objects that could not be applied to a side and wait their backoff",
            ["worker", "side"],
            registry=r,
        )
        self.quarantine_events = Counter(
            "indutech_identity_sync_quarantine_events",
            "Objects put in quarantine (or whose reason changed), by cause",
            ["worker", "side", "cause"],
            registry=r,
        )
        self.change_probes = Counter(
            "indutech_identity_sync_change_probes",
            "Reads of a DC's highestCommittedUSN (the cheap probe run every probe_interval_s)",
            ["worker", "side"],
            registry=r,
        )
        self.change_searches = Counter(
            "indutech_identity_sync_change_searches",
            "Searches for the objects changed since the last (kind lookup: by uSNChanged "
            "through the index; scan: DirSync or a uSNChanged range), run only when the probe "
            "saw the USN move",
            ["worker", "side", "kind"],
            registry=r,
        )
        self.conflicts.labels(worker)  # shown at 0 before the first conflict, as before the label

    def dc_in_use(self, side: Side, urls: Iterable[str], current: str | None) -> None:
        """1 for the DC ``side`` uses now, 0 for the others (all 0 when none answers)."""
        for url in urls:
            self.dc.labels(self.worker, side, url).set(1 if url == current else 0)

    def failover(self, side: Side) -> None:
        self.failovers.labels(self.worker, side).inc()

    def wrote(self, side: Side, op: str, count: int) -> None:
        self.writes.labels(self.worker, side, op).inc(count)

    def quarantine_now(self, side: Side, held: int) -> None:
        self.quarantined.labels(self.worker, side).set(held)

    def quarantine_event(self, side: Side, cause: str) -> None:
        self.quarantine_events.labels(self.worker, side, cause).inc()

    def deletes(self, side: Side, *, tripped: bool, in_window: int, pending: int) -> None:
        """The deletion guard's view of ``side`` after a cycle."""
        self.guard.labels(self.worker, side).set(1 if tripped else 0)
        self.deletes_in_window.labels(self.worker, side).set(in_window)
        self.deletes_pending.labels(self.worker, side).set(pending)

    def probed(self, side: Side) -> None:
        self.change_probes.labels(self.worker, side).inc()

    def searched(self, side: Side, kind: str) -> None:
        self.change_searches.labels(self.worker, side, kind).inc()

    def conflicts_resolved(self, count: int) -> None:
        self.conflicts.labels(self.worker).inc(count)
