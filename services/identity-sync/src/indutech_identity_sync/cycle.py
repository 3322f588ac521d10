"""The cycles of the sync: each reads a change batch (or both scopes), merges it with the
``Reconciler`` and saves the anchor state, and what lasts between cycles is kept here (the
mirrors, the retry queue, the quarantine, the deletion guard, the deletes held after a DC
change).

A full cycle (start-up and the schedule) reads both scopes into new mirrors; an incremental
one re-reads only the objects of the change batch (``sources.changes``) into the mirrors
kept from the last cycle and merges only their pairs. A cycle runs in one thread holding
both links' locks (ldap3 is synchronous); the state is saved to S3 after every cycle that
ran, and its writes are counted and published to the audit topic, also those of a cycle
that failed after writing.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from indutech_common.metrics import WorkerMetrics
from indutech_identity_sync.config import SIDES, IdentitySyncSettings, Mapping, Side
from indutech_identity_sync.deletion_guard import DeleteGuard
from indutech_identity_sync.directory import DirectoryWriter, DryRunWriter
from indutech_identity_sync.engine import CycleReport, Reconciler
from indutech_identity_sync.links import DcLink, Link
from indutech_identity_sync.metrics import IdentitySyncMetrics
from indutech_identity_sync.mirror import Mirror
from indutech_identity_sync.quarantine import Quarantine
from indutech_identity_sync.sinks.audit import KafkaAuditSink
from indutech_identity_sync.sinks.ldap import LdapWriter
from indutech_identity_sync.sources.changes import ChangeFeed
from indutech_identity_sync.sources.ldap import read_changed, read_dns, read_scope
from indutech_identity_sync.state import StateStore, SyncState

MAX_RETRIES = 10  # incremental retries of one object before it waits for the full reconcile


class Cycles:
    """Runs the cycles over the two sides' links and keeps what lasts between them."""

    def __init__(
        self,
        settings: IdentitySyncSettings,
        mapping: Mapping,
        *,
        dc_links: dict[Side, DcLink],
        changes: ChangeFeed,
        metrics: WorkerMetrics,
        sync_metrics: IdentitySyncMetrics,
        allow_mass_delete: bool = False,
        store: StateStore | None = None,
    ) -> None:
        self.settings = settings
        self.mapping = mapping
        self.dc_links = dc_links
        self.changes = changes
        self.metrics = metrics
        self.sync_metrics = sync_metrics
        self.name = metrics.worker
        self.allow_mass_delete = allow_mass_delete
        self.store = store
        self.audit: KafkaAuditSink | None = None
        self.log = structlog.get_logger(self.name)
        self.state = SyncState()
        self.last_report: CycleReport | None = None
        self._running: CycleReport | None = None  # the report of the cycle in progress
        self.mirrors: dict[Side, Mirror] | None = None  # None: the next cycle is a full one
        self.retries: dict[tuple[Side, str], int] = {}
        self.read_counts: dict[Side, int] = dict.fromkeys(SIDES, 0)
        # seconds of the last cycle's steps (the batch's searches and its wait for the
        # cycle, then collect, read, merge, save): its cycle_done log
        self.phases: dict[str, float] = {}
        # across cycles: a trip is logged once, then reminders; settled deletes wake a cycle
        self.delete_guard = DeleteGuard(mapping.deletion_guard)
        # objects that could not be applied, each waiting its backoff (quarantine.py)
        self.quarantine = Quarantine(
            initial_s=settings.quarantine_backoff_initial_s,
            maximum_s=settings.quarantine_backoff_max_s,
        )
        # monotonic time until which deletes on a side wait: the other side moved to a DC
        # that may not hold our latest writes yet (replication), whose absence reads as a delete
        self.delete_hold_until: dict[Side, float] = {}

    @property
    def links(self) -> dict[Side, Link]:
        """The sides connected now, each to the DC it uses."""
        return {s: d.link for s, d in self.dc_links.items() if d.link is not None}

    def _collect_changes(self) -> dict[Side, set[str]]:
        """GUIDs changed on each side since the last call, as the change watch and the
        notifications found them (no search here: the watch searched on its own
        connections)."""
        mirrors = self.mirrors
        mirrored = {s: mirrors[s].objects if mirrors is not None else {} for s in SIDES}
        changes = self.changes.collect(self.state, mirrored)
        self.phases.update(self.changes.batch_timings)
        return changes

    def _refresh(self, mirrors: dict[Side, Mirror], focus: dict[Side, set[str]]) -> None:
        """Re-read the focus objects into the mirrors: a new OU brings its subtree (an OU
        moved into the scope is reported alone), an unknown reference is looked up."""
        for side in SIDES:
            connection, mirror = self.links[side].connection, mirrors[side]
            found, gone = read_changed(connection, self.mapping, side, focus[side])
            new_ous = [o for o in found if o.kind == "ou" and o.guid not in mirror.objects]
            mirror.apply(found, gone)
            for ou in new_ous:
                below = read_scope(connection, self.mapping, side, base=ou.dn)
                mirror.apply(below, ())
                found.extend(below)
            touched = {o.guid for o in found}
            pending = mirror.pending_dns(touched)
            if pending:
                more = read_dns(connection, self.mapping, side, pending)
                mirror.apply(more, ())
                touched.update(o.guid for o in more)
            mirror.settle(touched)
            focus[side] |= touched
            self.read_counts[side] += len(found)

    async def run(
        self, *, full: bool = True, detected_at: float | None = None
    ) -> CycleReport | None:
        """One cycle (full: both scopes; else the change batch), then the state saved to S3;
        returns what was done, None when an incremental tick found no change. A cycle that
        fails still audits and counts every write that reached a DC before the failure."""
        started = time.monotonic()
        self.phases = {}
        try:
            report = await asyncio.to_thread(self._cycle_in_thread, full)
        except Exception:
            partial_report, self._running = self._running, None
            if partial_report is not None:
                await self._account_failed(partial_report)
            raise
        self._running = None
        if report is None:
            return None
        if not self.settings.dry_run and self.store is not None:
            saving = time.monotonic()
            try:
                # a focused cycle writes only its pairs (a journal entry), a full one the
                # whole state (a snapshot): see state.py
                await self.store.save(self.state, None if report.full else report.pairs_changed)
            except Exception:  # the writes were made all the same
                await self._account_failed(report)
                raise
            self.phases["save_s"] = time.monotonic() - saving
        await self._account(report)
        self.last_report = report
        self.sync_metrics.conflicts_resolved(report.conflicts)
        for side in SIDES:
            self.sync_metrics.deletes(
                side,
                tripped=side in report.guard_tripped,
                in_window=report.deletes_in_window.get(side, 0),
                pending=report.deletes_pending.get(side, 0),
            )
            self.metrics.records_in.labels(self.name, side).inc(self.read_counts[side])
            self.read_counts[side] = 0
        if report.failed:
            self.metrics.error("directory_write")
        self.metrics.batch_duration.labels(self.name).observe(time.monotonic() - started)
        self.metrics.last_success.labels(self.name).set(time.time())
        if detected_at is not None:
            self.metrics.lag.labels(self.name, "directory").set(time.time() - detected_at)
        self.log.info(
            "cycle_done",
            full=report.full,
            merged=report.merged,
            writes=report.total_writes,
            conflicts=report.conflicts,
            failed=report.failed,
            deferred=report.deferred,
            quarantined=len(self.quarantine.held),
            guard_tripped=report.guard_tripped,
            deletes_pending={s: n for s, n in report.deletes_pending.items() if n},
            objects=report.objects,
            dry_run=self.settings.dry_run,
            seconds=round(time.monotonic() - started, 3),
            **{phase: round(took, 3) for phase, took in self.phases.items()},
        )
        return report

    async def _account(self, report: CycleReport) -> None:
        """The writes and quarantines of a cycle (whole, or cut short by a failure): counted,
        and published to the audit topic. Each was logged when it happened."""
        for (side, op), count in report.writes.items():
            self.sync_metrics.wrote(side, op, count)
        for side in SIDES:
            self.metrics.records_out.labels(self.name, side).inc(
                sum(c for (s, _), c in report.writes.items() if s == side)
            )
            self.sync_metrics.quarantine_now(side, self.quarantine.count(side))
        for entry in report.quarantined:
            self.sync_metrics.quarantine_event(entry.side, entry.cause)
        if self.audit is None or not report.changes or self.settings.dry_run:
            return
        await self.audit.write(report.changes)

    async def _account_failed(self, report: CycleReport) -> None:
        """``_account`` for a cycle that failed: its own error is the one raised."""
        try:
            await self._account(report)
        except Exception as exc:
            self.metrics.error("audit_publish")
            self.log.warning("audit_publish_failed", records=len(report.changes), error=str(exc))

    def _cycle_in_thread(self, full: bool) -> CycleReport | None:
        with self.links["onprem"].lock, self.links["aws"].lock:
            step = time.monotonic()
            changes = self._collect_changes()
            self.phases["collect_s"], step = time.monotonic() - step, time.monotonic()
            focus: dict[Side, set[str]] | None = None
            if full or self.mirrors is None:
                # changes collected first: what lands during the read comes in the next batch
                mirrors = {}
                for side in SIDES:
                    objects = read_scope(self.links[side].connection, self.mapping, side)
                    self.read_counts[side] += len(objects)
                    mirrors[side] = Mirror(side, self.mapping, objects)
                self.retries.clear()
            else:
                mirrors = self.mirrors
                # a change reported for a quarantined object ends its wait: it may be the fix
                self.quarantine.wake(g for guids in changes.values() for g in guids)
                due = self.quarantine.due()
                focus = {
                    s: changes[s]
                    | {g for (r, g) in self.retries if r == s}
                    | {e.object_guid for e in due if e.source == s}
                    for s in SIDES
                }
                if not any(focus.values()) and not self.delete_guard.due(self.state, time.time()):
                    return None  # nothing changed, no delete finished settling, no reminder due
                self._refresh(mirrors, focus)
            self.phases["read_s"], step = time.monotonic() - step, time.monotonic()
            dry_run = self.settings.dry_run
            writers: dict[Side, DirectoryWriter] = {
                s: DryRunWriter(s) if dry_run else LdapWriter(self.links[s].connection)
                for s in SIDES
            }
            pools: dict[Side, list[DirectoryWriter]] = {}
            if not dry_run:  # a dry run plans one write at a time
                pools = {
                    s: [writers[s], *(LdapWriter(c) for c in self.dc_links[s].writer_connections())]
                    for s in SIDES
                }
            state = self.state.model_copy(deep=True) if dry_run else self.state
            now = time.monotonic()
            held = {s for s, until in self.delete_hold_until.items() if until > now}
            reconciler = Reconciler(
                self.mapping,
                state,
                mirrors,
                writers,
                focus=focus,
                allow_mass_delete=self.allow_mass_delete,
                dry_run=dry_run,
                pools=pools,
                hold_deletes=held,
                guard=self.delete_guard,
                quarantine=self.quarantine,
            )
            self._running = reconciler.report  # filled as it goes: read if the cycle fails
            report = reconciler.run()
            self.phases["merge_s"] = time.monotonic() - step  # the writes included
            if not dry_run:
                self.mirrors = mirrors
            self._count_retries(report)
            return report

    def _count_retries(self, report: CycleReport) -> None:
        """Objects to look at again next tick, each at most MAX_RETRIES times in a row."""
        retries = {}
        for side, guids in report.retry.items():
            for guid in guids:
                if self.quarantine.holds(guid):
                    continue  # it waits its backoff, not the retry queue
                count = self.retries.get((side, guid), 0) + 1
                if count <= MAX_RETRIES:
                    retries[side, guid] = count
                elif count == MAX_RETRIES + 1:
                    self.log.warning("identity_retry_deferred", side=side, object_guid=guid)
        self.retries = retries
