"""The identity-sync worker: a full reconcile on start and on a schedule, and an incremental
cycle for every change batch.

On-prem changes are reported by DirSync (cookie stored with the DC that issued
it), AWS changes by the DC's uSNChanged (the delegated admin has no DirSync
right); change notifications wake the loop between polls. A batch re-reads only
the changed objects into the mirrors (mirror.Mirror, both sides kept in memory
between cycles) and reconciles only their pairs; the anchor state is saved to
S3 after every cycle that ran.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import ldap3
from ldap3.core.exceptions import LDAPException
from prometheus_client import Counter, Gauge

from indutech_common.errors import DependencyUnavailableError, IndutechError
from indutech_common.kafka import create_producer, ping_producer, require_topics, start_client
from indutech_common.ldap import ldap_connect
from indutech_common.lifecycle import EXIT_FAILED, EXIT_OK, Worker
from indutech_common.s3 import create_s3_client, ping_bucket
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
from indutech_identity_sync.errors import IdentitySyncError
from indutech_identity_sync.failover import DcPool
from indutech_identity_sync.mirror import Mirror
from indutech_identity_sync.quarantine import Quarantine
from indutech_identity_sync.sinks.audit import KafkaAuditSink
from indutech_identity_sync.sinks.ldap import LdapWriter
from indutech_identity_sync.sources.ldap import (
    ChangeNotifier,
    DirSyncWatcher,
    Scope,
    close_quietly,
    highest_usn,
    read_changed,
    read_dns,
    read_scope,
    usn_changes,
)
from indutech_identity_sync.state import S3StateStore, StateStore, SyncState

MAX_RETRIES = 10  # incremental retries of one object before it waits for the full reconcile
# Extra writer connections idle longer than this are checked (a rootDSE read) before a cycle
# writes with them, and opened again if the DC dropped them: DCs close idle LDAP connections
# (AD after MaxConnIdleTime, 900 s by default), and only the main one is used on every tick.
WRITER_IDLE_S = 60.0


@dataclass
class Link:
    """One side's connection and the lock that keeps ldap3 to one thread at a time, plus the
    extra connections of the parallel writers (``writer_concurrency`` - 1), used only by a
    cycle, which holds the lock."""

    connection: ldap3.Connection
    lock: threading.Lock
    url: str = ""  # the DC these connections go to
    writers: list[ldap3.Connection] = field(default_factory=list)
    writers_used: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        for connection in [self.connection, *self.writers]:
            close_quietly(connection)


class Notifier(Protocol):
    """A change-notification listener (``ChangeNotifier``): it only has to close."""

    def close(self) -> None: ...


LinkFactory = Callable[[LdapSettings], Awaitable[Link]]
NotifierFactory = Callable[[LdapSettings, str, Callable[[], None]], Notifier]


class IdentitySyncWorker(Worker[IdentitySyncSettings]):
    """The worker. ``link_factory`` opens a side's connections to one DC (default: LDAPS,
    ``open_link``) and ``notifier_factory`` starts a change-notification listener (default:
    ``ChangeNotifier``): the seams tests use to stand in for DCs."""

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
        self.link_factory: LinkFactory = link_factory or self.open_link
        self.notifier_factory: NotifierFactory = notifier_factory or ChangeNotifier
        self.mapping: Mapping = load_mapping(settings.mapping_file)
        # across cycles: a trip is logged once, then reminders; settled deletes wake a cycle
        self.delete_guard = DeleteGuard(self.mapping.deletion_guard)
        self.links: dict[Side, Link] = {}
        # objects that could not be applied, each waiting its backoff (quarantine.py)
        self.quarantine = Quarantine(
            initial_s=settings.quarantine_backoff_initial_s,
            maximum_s=settings.quarantine_backoff_max_s,
        )
        self._running: CycleReport | None = None  # the report of the cycle in progress
        self.exit_code = EXIT_OK  # --once / --dry-run: EXIT_FAILED when the run fell short
        self.state = SyncState()
        self.last_report: CycleReport | None = None
        self._exit_stack = AsyncExitStack()
        self._dirsync: DirSyncWatcher | None = None
        self.audit: KafkaAuditSink | None = None
        self._wake = asyncio.Event()
        self._notifiers: list[Notifier] = []
        self.mirrors: dict[Side, Mirror] | None = None  # None: the next cycle is a full one
        self.scopes = {s: Scope(self.mapping, s) for s in SIDES}
        self.retries: dict[tuple[Side, str], int] = {}
        self.read_counts: dict[Side, int] = dict.fromkeys(SIDES, 0)
        self.dcs = {
            s: DcPool(
                self._ldap(s).dc_urls,
                backoff_initial_s=settings.dc_backoff_initial_s,
                backoff_max_s=settings.dc_backoff_max_s,
            )
            for s in SIDES
        }
        # monotonic time until which deletes on a side wait: the other side moved to a DC
        # that may not hold our latest writes yet (replication), whose absence reads as a delete
        self.delete_hold_until: dict[Side, float] = {}
        registry = self.metrics.registry
        self.writes = Counter(
            "indutech_identity_sync_writes", "Directory writes", ["side", "op"], registry=registry
        )
        self.conflicts = Counter(
            "indutech_identity_sync_conflicts", "Conflicts resolved by authority", registry=registry
        )
        self.guard = Gauge(
            "indutech_identity_sync_deletion_guard_tripped",
            "1 while the deletion threshold stops exports to a side",
            ["side"],
            registry=registry,
        )
        self.deletes_in_window = Gauge(
            "indutech_identity_sync_deletes_in_window",
            "Deletes applied to a side within the deletion guard's rolling window",
            ["side"],
            registry=registry,
        )
        self.deletes_pending = Gauge(
            "indutech_identity_sync_deletes_pending",
            "Deletes to a side not written yet (settling, or held by the deletion guard)",
            ["side"],
            registry=registry,
        )
        self.dc = Gauge(
            "indutech_identity_sync_dc",
            "1 for the DC each side uses now, 0 for its other DCs (all 0: none answers)",
            ["side", "url"],
            registry=registry,
        )
        self.failovers = Counter(
            "indutech_identity_sync_dc_failovers",
            "Moves of a side to another of its DCs",
            ["side"],
            registry=registry,
        )
        self.quarantined = Gauge(
            "indutech_identity_sync_quarantined",
            "Objects that could not be applied to a side and wait their backoff",
            ["side"],
            registry=registry,
        )
        self.quarantine_events = Counter(
            "indutech_identity_sync_quarantine_events",
            "Objects put in quarantine (or whose reason changed), by cause",
            ["side", "cause"],
            registry=registry,
        )
        for side in SIDES:
            self._show_dc(side)

    def _ldap(self, side: Side) -> LdapSettings:
        return self.settings.onprem if side == "onprem" else self.settings.aws

    def _show_dc(self, side: Side) -> None:
        pool = self.dcs[side]
        for url in pool.urls:
            self.dc.labels(side, url).set(1 if url == pool.current else 0)

    # -- lifecycle ---------------------------------------------------------------------------

    async def startup(self) -> None:
        if self.store is None:
            client = await self._exit_stack.enter_async_context(create_s3_client(self.settings.s3))
            bucket = self.settings.state_bucket
            self.health.register_ping("s3", lambda: ping_bucket(client, bucket))
            self.store = S3StateStore(client, bucket=bucket, key=self.settings.state_key)
        self.state = await self.store.load()
        if self.settings.audit_kafka is not None:
            topics = {self.settings.audit_topic: Topics.IDENTITY_CHANGES}
            await require_topics(self.settings.audit_kafka, topics, worker=self.name)
            producer = create_producer(self.settings.audit_kafka)
            await start_client(producer, self.settings.audit_kafka)
            self._exit_stack.push_async_callback(producer.stop)
            self.health.register_ping("kafka", partial(ping_producer, producer))
            self.audit = KafkaAuditSink(producer, self.settings.audit_topic)
        await self._connect()
        for side in SIDES:
            self.health.register_ping(f"ldap_{side}", partial(self._ping, side))
        await asyncio.to_thread(self._prime_change_signals)
        await self._start_notifiers()

    async def _start_notifiers(self) -> None:
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(self._wake.set)

        for side in SIDES:
            link = self.links.get(side)
            if link is None:
                continue
            try:
                notifier = await asyncio.to_thread(
                    self.notifier_factory,
                    self._ldap(side).for_dc(link.url),
                    self.mapping.root(side),
                    wake,
                )
            except (LDAPException, IndutechError) as exc:
                self.log.warning("change_notification_unavailable", side=side, error=str(exc))
                continue
            self._notifiers.append(notifier)

    async def _stop_notifiers(self) -> None:
        for notifier in self._notifiers:
            try:
                await asyncio.to_thread(notifier.close)
            except LDAPException as exc:
                self.log.warning("change_notification_close_failed", error=str(exc))
        self._notifiers.clear()

    async def _connect(self) -> None:
        """At start: a DC of each side, or fail naming every DC tried."""
        for side in SIDES:
            if not await self._connect_side(side):
                pool = self.dcs[side]
                tried = "; ".join(f"{url}: {pool.reason(url)}" for url in pool.urls)
                raise DependencyUnavailableError(f"no DC of the {side} side answers ({tried})")

    async def _connect_side(self, side: Side) -> bool:
        """Connect ``side`` to the first of its DCs that answers (the one used last first);
        False when none does (each waits its backoff before it is tried again)."""
        pool = self.dcs[side]
        tried = False
        for url in pool.candidates():
            tried = True
            try:
                link = await self.link_factory(self._ldap(side).for_dc(url))
            except (LDAPException, IndutechError) as exc:
                wait = pool.failed(url, str(exc))
                self.log.warning(
                    "dc_unreachable", side=side, url=url, error=str(exc), retry_in_s=round(wait, 1)
                )
                continue
            replaced = pool.connected(url)
            self.links[side] = link
            self._show_dc(side)
            if replaced is not None:
                self.failovers.labels(side).inc()
                self.log.warning(
                    "dc_failover",
                    side=side,
                    from_dc=replaced,
                    to_dc=url,
                    reason=pool.reason(replaced) or "did not answer",
                )
            return True
        self._show_dc(side)
        if tried:
            self.log.error(
                "no_dc_answers",
                side=side,
                urls=list(pool.urls),
                retry_in_s=round(pool.retry_in(), 1),
            )
        return False

    async def open_link(self, settings: LdapSettings) -> Link:
        """The main connection to one DC and the writers' extra ones."""
        # auto_range off: ranged `member` values are followed by our own tested code; no
        # empty attributes: ldap3 2.9 then fails on DirSync's `member;range=0-0` + `1-1`
        # (linked values added and removed), deleting `member` twice
        connection = await asyncio.to_thread(
            ldap_connect, settings, auto_range=False, return_empty_attributes=False
        )
        link = Link(connection, threading.Lock(), url=settings.url)
        extra = [
            asyncio.to_thread(ldap_connect, settings)
            for _ in range(self.settings.writer_concurrency - 1)
        ]
        opened = await asyncio.gather(*extra, return_exceptions=True)
        link.writers = [c for c in opened if isinstance(c, ldap3.Connection)]
        failed = [e for e in opened if isinstance(e, BaseException)]
        if failed:
            await asyncio.to_thread(link.close)
            raise failed[0]
        return link

    async def _ping(self, side: Side) -> None:
        def ping() -> None:
            link = self.links.get(side)
            if link is None:
                urls = ", ".join(self.dcs[side].urls)
                raise IdentitySyncError(f"no DC of the {side} side answers ({urls})")
            if not link.lock.acquire(timeout=1):
                return  # busy with a cycle: it answers
            try:
                highest_usn(link.connection)
            finally:
                link.lock.release()

        await asyncio.to_thread(ping)

    async def main_loop(self) -> None:
        next_full = 0.0
        while not self.should_exit.is_set():
            detected = time.time()
            full = self.mirrors is None or time.monotonic() >= next_full
            try:
                if len(self.links) < len(SIDES):  # no DC of a side answered: try again first
                    await self._reconnect([s for s in SIDES if s not in self.links])
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
                await self._reconnect()
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

    async def shutdown(self) -> None:
        await self._stop_notifiers()
        for link in self.links.values():
            await asyncio.to_thread(link.close)
        self.links.clear()
        await self._exit_stack.aclose()

    async def _reconnect(self, sides: list[Side] | None = None) -> None:
        """Close the links of ``sides`` (default both: after a failed cycle any connection may
        be broken) and connect each again, to the DC it used if that one answers, else to the
        next that does; once both sides are connected, the change signals start again."""
        try:
            for side in sides or SIDES:
                link = self.links.pop(side, None)
                if link is not None:
                    self.dcs[side].disconnected()
                    await asyncio.to_thread(link.close)
            for side in sides or SIDES:
                await self._connect_side(side)
            if len(self.links) < len(SIDES):
                return
            await asyncio.to_thread(self._prime_change_signals)
            await self._stop_notifiers()
            await self._start_notifiers()
        except (LDAPException, IndutechError) as exc:
            self.log.warning("reconnect_failed", error=str(exc))

    # -- change signals ----------------------------------------------------------------------

    def _prime_change_signals(self) -> None:
        """Change detection resumes where the state says only on the DC that issued the cookie
        (on-prem) and the USN (AWS); on another DC both start afresh from now, after the full
        reconcile that follows every (re)connect, and deletes on the other side wait a while."""
        onprem = self.links["onprem"].connection
        dc, _ = highest_usn(onprem)
        cookie_state = self.state.onprem
        self._dc_changed("onprem", cookie_state.dc, dc)
        cookie = bytes.fromhex(cookie_state.dirsync_cookie_hex) if cookie_state.dc == dc else None
        attributes = [rule.onprem for rule in self.mapping.attributes.values()]
        self._dirsync = DirSyncWatcher(onprem, self.settings.onprem.base_dn, cookie, attributes)
        if cookie is None:
            self._dirsync.changes()  # drain once: the full reconcile at start covers the past
        cookie_state.dc = dc
        cookie_state.dirsync_cookie_hex = (self._dirsync.cookie or b"").hex()
        aws_dc, usn = highest_usn(self.links["aws"].connection)
        self._dc_changed("aws", self.state.aws.dc, aws_dc)
        if self.state.aws.dc != aws_dc:
            self.state.aws.dc, self.state.aws.highest_usn = aws_dc, usn

    def _dc_changed(self, side: Side, before: str, now: str) -> None:
        if not before or before == now:
            return
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
        """GUIDs changed on each side since the last call, kept when in scope or mirrored
        (an object deleted or moved out of the scope is no longer in it)."""
        reported: dict[Side, dict[str, str]] = {s: {} for s in SIDES}
        if self._dirsync is not None:
            reported["onprem"] = self._dirsync.changes()
            self.state.onprem.dirsync_cookie_hex = (self._dirsync.cookie or b"").hex()
        connection = self.links["aws"].connection
        _, usn = highest_usn(connection)
        if usn > self.state.aws.highest_usn:
            reported["aws"] = usn_changes(
                connection, self.settings.aws.base_dn, self.state.aws.highest_usn
            )
            self.state.aws.highest_usn = usn
        changes: dict[Side, set[str]] = {}
        for side in SIDES:
            mirror = self.mirrors[side].objects if self.mirrors is not None else {}
            changes[side] = {
                guid
                for guid, dn in reported[side].items()
                if guid in mirror or dn in self.scopes[side]
            }
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
        self.conflicts.inc(report.conflicts)
        for side in SIDES:
            self.guard.labels(side).set(1 if side in report.guard_tripped else 0)
            self.deletes_in_window.labels(side).set(report.deletes_in_window.get(side, 0))
            self.deletes_pending.labels(side).set(report.deletes_pending.get(side, 0))
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
            self.writes.labels(side, op).inc(count)
        for side in SIDES:
            self.metrics.records_out.labels(self.name, side).inc(
                sum(c for (s, _), c in report.writes.items() if s == side)
            )
            self.quarantined.labels(side).set(self.quarantine.count(side))
        for entry in report.quarantined:
            self.quarantine_events.labels(entry.side, entry.cause).inc()
        if self.audit is None or not report.changes or self.settings.dry_run:
            return
        await self.audit.publish(report.changes)

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
                    s: [writers[s], *(LdapWriter(c) for c in self._writer_connections(s))]
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

    def _writer_connections(self, side: Side) -> list[ldap3.Connection]:
        """The extra writer connections of ``side``, checked first when idle for a while
        and opened again if the DC dropped them (in the cycle's thread, under its lock)."""
        link = self.links[side]
        if time.monotonic() - link.writers_used > WRITER_IDLE_S:
            settings = self._ldap(side).for_dc(link.url)
            for i, connection in enumerate(link.writers):
                try:
                    highest_usn(connection)
                except (LDAPException, IndutechError) as exc:
                    self.log.info("writer_connection_renewed", side=side, error=str(exc))
                    close_quietly(connection)
                    link.writers[i] = ldap_connect(settings)
        link.writers_used = time.monotonic()
        return link.writers

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
