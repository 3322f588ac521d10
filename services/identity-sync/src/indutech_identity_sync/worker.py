"""The identity-sync worker's lifecycle: open and adopt its resources, run a full reconcile
on start and on a schedule and an incremental cycle for every change batch, and stop.

What it uses lives beside it: the DC connections and their failover in ``links``, the change
signals (DirSync, uSNChanged, notifications) in ``sources.changes``, the three-way merge in
``engine`` (its writes ordered by ``barrier``, deletes judged by ``deletion_guard``), the
anchor state in ``state`` and the audit topic in ``sinks.audit``. A batch re-reads only the
changed objects into the mirrors (``mirror.Mirror``, both sides kept in memory between
cycles) and reconciles only their pairs; the anchor state is saved to S3 after every cycle
that ran.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

from ldap3.core.exceptions import LDAPException

from indutech_common.errors import IndutechError
from indutech_common.kafka import require_topics
from indutech_common.lifecycle import EXIT_FAILED, EXIT_OK, Worker
from indutech_common.s3 import JsonObjectStore, create_s3_client
from indutech_common.schemas.topics import Topics
from indutech_common.settings import LdapSettings
from indutech_identity_sync.config import (
    SIDES,
    IdentitySyncSettings,
    Mapping,
    Side,
    load_mapping,
    other,
)
from indutech_identity_sync.deletion_guard import DeleteGuard
from indutech_identity_sync.directory import DirectoryWriter, DryRunWriter
from indutech_identity_sync.engine import CycleReport, Reconciler
from indutech_identity_sync.links import DcLink, Link, LinkFactory, open_link
from indutech_identity_sync.metrics import IdentitySyncMetrics
from indutech_identity_sync.mirror import Mirror
from indutech_identity_sync.quarantine import Quarantine
from indutech_identity_sync.sinks.audit import KafkaAuditSink
from indutech_identity_sync.sinks.ldap import LdapWriter
from indutech_identity_sync.sources.changes import ChangeFeed, NotifierFactory
from indutech_identity_sync.sources.ldap import ChangeNotifier, read_changed, read_dns, read_scope
from indutech_identity_sync.state import S3StateStore, StateStore, SyncState

__all__ = ["MAX_RETRIES", "IdentitySyncWorker", "Link"]

MAX_RETRIES = 10  # incremental retries of one object before it waits for the full reconcile


class IdentitySyncWorker(Worker[IdentitySyncSettings]):
    """The worker. ``link_factory`` opens a side's connections to one DC (default: LDAPS,
    ``links.open_link``) and ``notifier_factory`` starts a change-notification listener
    (default: ``ChangeNotifier``): the seams tests use to stand in for DCs."""

    name = "identity-sync"

    def __init__(
        self,
        settings: IdentitySyncSettings,
        *,
        once: bool = False,
        allow_mass_delete: bool = False,
        store: StateStore | None = None,
        link_factory: LinkFactory | None = None,
        notifier_factory: NotifierFactory | None = None,
    ) -> None:
        super().__init__(settings)
        self.once = once or settings.dry_run
        self.allow_mass_delete = allow_mass_delete
        self.store = store
        self.mapping: Mapping = load_mapping(settings.mapping_file)
        self.sync_metrics = IdentitySyncMetrics(self.name, self.metrics.registry)
        factory = link_factory or partial(open_link, writer_concurrency=settings.writer_concurrency)
        self.dc_links = {
            side: DcLink(
                side,
                self._ldap(side),
                factory=factory,
                metrics=self.sync_metrics,
                backoff_initial_s=settings.dc_backoff_initial_s,
                backoff_max_s=settings.dc_backoff_max_s,
            )
            for side in SIDES
        }
        self.changes = ChangeFeed(
            self.mapping,
            {s: self._ldap(s) for s in SIDES},
            notifier_factory=notifier_factory or ChangeNotifier,
        )
        # across cycles: a trip is logged once, then reminders; settled deletes wake a cycle
        self.delete_guard = DeleteGuard(self.mapping.deletion_guard)
        # objects that could not be applied, each waiting its backoff (quarantine.py)
        self.quarantine = Quarantine(
            initial_s=settings.quarantine_backoff_initial_s,
            maximum_s=settings.quarantine_backoff_max_s,
        )
        self._running: CycleReport | None = None  # the report of the cycle in progress
        self.exit_code = EXIT_OK  # --once / --dry-run: EXIT_FAILED when the run fell short
        self.state = SyncState()
        self.last_report: CycleReport | None = None
        self.audit: KafkaAuditSink | None = None
        self._wake = asyncio.Event()
        self.mirrors: dict[Side, Mirror] | None = None  # None: the next cycle is a full one
        self.retries: dict[tuple[Side, str], int] = {}
        self.read_counts: dict[Side, int] = dict.fromkeys(SIDES, 0)
        # monotonic time until which deletes on a side wait: the other side moved to a DC
        # that may not hold our latest writes yet (replication), whose absence reads as a delete
        self.delete_hold_until: dict[Side, float] = {}

    def _ldap(self, side: Side) -> LdapSettings:
        return self.settings.onprem if side == "onprem" else self.settings.aws

    @property
    def links(self) -> dict[Side, Link]:
        """The sides connected now, each to the DC it uses."""
        return {s: d.link for s, d in self.dc_links.items() if d.link is not None}

    # -- lifecycle ---------------------------------------------------------------------------

    async def startup(self) -> None:
        # Registered in this order, closed in the reverse one: the notifications first,
        # then the DC connections, the audit producer and the S3 client last.
        if self.store is None:
            client = await self.enter("s3", create_s3_client(self.settings.s3))
            objects = JsonObjectStore(client, bucket=self.settings.state_bucket)
            store = S3StateStore(objects, key=self.settings.state_key)
            self.health.register_ping("s3", store.ping)
            self.store = store
        self.state = await self.store.load()
        if self.settings.audit_kafka is not None:
            topics = {self.settings.audit_topic: Topics.IDENTITY_CHANGES}
            await require_topics(self.settings.audit_kafka, topics, worker=self.name)
            self.audit = self.adopt(
                await KafkaAuditSink.open(
                    self.settings.audit_kafka, topic=self.settings.audit_topic
                )
            )
        for dc_link in self.dc_links.values():
            self.adopt(dc_link)
        await self.connect()
        self.add_closer("change_notifications", self.changes.close)
        await asyncio.to_thread(self.prime_change_signals)
        await self._start_notifiers()

    async def connect(self) -> None:
        """At start: a DC of each side, or fail naming every DC tried."""
        for dc_link in self.dc_links.values():
            if not await dc_link.connect():
                raise dc_link.unreachable()

    async def _start_notifiers(self) -> None:
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(self._wake.set)

        await self.changes.start_notifiers({s: link.url for s, link in self.links.items()}, wake)

    async def main_loop(self) -> None:
        next_full = 0.0
        while not self.should_exit.is_set():
            detected = time.time()
            full = self.mirrors is None or time.monotonic() >= next_full
            try:
                if len(self.links) < len(SIDES):  # no DC of a side answered: try again first
                    await self.reconnect([s for s in SIDES if s not in self.links])
                    if len(self.links) < len(SIDES):
                        await self._sleep_or_wake()
                        continue
                report = await self.cycle(full=full, detected_at=detected)
                if full:
                    next_full = time.monotonic() + self.settings.reconcile_interval_s
            except (LDAPException, IndutechError) as exc:
                self.mirrors = None  # what we hold may be half-read: reconcile in full next
                self.metrics.error(type(exc).__name__)
                self.log.warning("cycle_failed", error=str(exc), error_type=type(exc).__name__)
                report = None
                await self.reconnect()
            if self.once:
                self._judge_single_run(report)
                return
            await self._sleep_or_wake()

    def _judge_single_run(self, report: CycleReport | None) -> None:
        """--once and --dry-run end non-zero when their one cycle failed, and a dry run also
        when it could not plan every object (some were quarantined)."""
        if report is None:
            self.exit_code = EXIT_FAILED
            self.log.error(
                "single_run_failed",
                dry_run=self.settings.dry_run,
                action="the cycle failed (see cycle_failed): nothing more was planned or "
                "written; fix the cause and run again",
            )
            return
        if self.settings.dry_run and self.quarantine.held:
            self.exit_code = EXIT_FAILED
            self.log.error(
                "dry_run_incomplete",
                quarantined=len(self.quarantine.held),
                action="these objects could not be planned (see identity_object_quarantined): "
                "fix them, or expect a real run to leave them in quarantine",
            )

    async def serve(self, *, install_signal_handlers: bool = True) -> int:
        """The lifecycle's exit code, or EXIT_FAILED when a --once / --dry-run fell short."""
        code = await super().serve(install_signal_handlers=install_signal_handlers)
        return code if code != EXIT_OK else self.exit_code

    async def _sleep_or_wake(self) -> None:
        """Wait for the poll interval, a change notification, or an exit request."""
        waiters = [
            asyncio.create_task(self._wake.wait()),
            asyncio.create_task(self.should_exit.wait()),
        ]
        await asyncio.wait(
            waiters, timeout=self.settings.poll_interval_s, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in waiters:
            waiter.cancel()
        self._wake.clear()

    async def reconnect(self, sides: list[Side] | None = None) -> None:
        """Close the links of ``sides`` (default both: after a failed cycle any connection may
        be broken) and connect each again, to the DC it used if that one answers, else to the
        next that does; once both sides are connected, the change signals start again."""
        try:
            for side in sides or SIDES:
                await self.dc_links[side].drop()
            for side in sides or SIDES:
                await self.dc_links[side].connect()
            if len(self.links) < len(SIDES):
                return
            await asyncio.to_thread(self.prime_change_signals)
            await self.changes.stop_notifiers()
            await self._start_notifiers()
        except (LDAPException, IndutechError) as exc:
            self.log.warning("reconnect_failed", error=str(exc))

    # -- change signals ----------------------------------------------------------------------

    def prime_change_signals(self) -> None:
        """Change detection resumes where the state says only on the DC that issued the cookie
        (on-prem) and the USN (AWS); on another DC both start afresh from now, after the full
        reconcile that follows every (re)connect, and deletes on the other side wait a while."""
        connections = {s: link.connection for s, link in self.links.items()}
        self.changes.prime(connections, self.state, self._dc_changed)

    def _dc_changed(self, side: Side, before: str, now: str) -> None:
        hold = self.settings.dc_change_delete_hold_s
        if hold > 0:
            self.delete_hold_until[other(side)] = time.monotonic() + hold
        self.log.warning(
            "dc_changed",
            side=side,
            from_dc=before,
            to_dc=now,
            action="full reconcile; change detection starts afresh on this DC",
            deletes_held_on=other(side),
            hold_s=hold,
        )

    def _collect_changes(self) -> dict[Side, set[str]]:
        """GUIDs changed on each side since the last call (in the cycle's thread)."""
        mirrors = self.mirrors
        mirrored = {s: mirrors[s].objects if mirrors is not None else {} for s in SIDES}
        connections = {s: link.connection for s, link in self.links.items()}
        return self.changes.collect(connections, self.state, mirrored)

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

    # -- one cycle ---------------------------------------------------------------------------

    async def cycle(
        self, *, full: bool = True, detected_at: float | None = None
    ) -> CycleReport | None:
        """One cycle (full: both scopes; else the change batch), then the state saved to S3;
        returns what was done, None when an incremental tick found no change. A cycle that
        fails still audits and counts every write that reached a DC before the failure."""
        started = time.monotonic()
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
            try:
                await self.store.save(self.state)
            except Exception:  # the writes were made all the same
                await self._account_failed(report)
                raise
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
            changes = self._collect_changes()
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
