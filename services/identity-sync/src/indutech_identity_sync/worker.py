"""The identity-sync worker: full reconcile on start and on a schedule, and on every change signal.

On-prem changes are noticed through DirSync (cookie stored with the DC that
issued it), AWS changes through the DC's USN (the delegated admin has no
DirSync right); each signal runs a reconcile cycle (engine.Reconciler), and the
anchor state is saved to S3 after every cycle.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial

import ldap3
from ldap3.core.exceptions import LDAPException
from prometheus_client import Counter, Gauge

from indutech_common.errors import IndutechError
from indutech_common.kafka import create_producer, ping_producer, start_client
from indutech_common.ldap import ldap_connect
from indutech_common.lifecycle import Worker
from indutech_common.s3 import create_s3_client, ping_bucket
from indutech_identity_sync.config import SIDES, IdentitySyncSettings, Mapping, Side, load_mapping
from indutech_identity_sync.directory import DirectoryWriter, DryRunWriter
from indutech_identity_sync.engine import CycleReport, Reconciler
from indutech_identity_sync.sinks.audit import KafkaAuditSink
from indutech_identity_sync.sinks.ldap import LdapWriter
from indutech_identity_sync.sources.ldap import (
    ChangeNotifier,
    DirSyncWatcher,
    highest_usn,
    read_scope,
    usn_changed_since,
)
from indutech_identity_sync.state import S3StateStore, StateStore, SyncState


@dataclass
class _Link:
    """One side's connection and the lock that keeps ldap3 to one thread at a time."""

    connection: ldap3.Connection
    lock: threading.Lock


class IdentitySyncWorker(Worker[IdentitySyncSettings]):
    name = "identity-sync"

    def __init__(
        self,
        settings: IdentitySyncSettings,
        *,
        once: bool = False,
        allow_mass_delete: bool = False,
        store: StateStore | None = None,
    ) -> None:
        super().__init__(settings)
        self.once = once or settings.dry_run
        self.allow_mass_delete = allow_mass_delete
        self.store = store
        self.mapping: Mapping = load_mapping(settings.mapping_file)
        self.links: dict[Side, _Link] = {}
        self.state = SyncState()
        self.last_report: CycleReport | None = None
        self._exit_stack = AsyncExitStack()
        self._dirsync: DirSyncWatcher | None = None
        self.audit: KafkaAuditSink | None = None
        self._wake = asyncio.Event()
        self._notifiers: list[ChangeNotifier] = []
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

    # -- lifecycle ---------------------------------------------------------------------------

    async def startup(self) -> None:
        if self.store is None:
            client = await self._exit_stack.enter_async_context(create_s3_client(self.settings.s3))
            bucket = self.settings.state_bucket
            self.health.register_ping("s3", lambda: ping_bucket(client, bucket))
            self.store = S3StateStore(client, bucket=bucket, key=self.settings.state_key)
        self.state = await self.store.load()
        if self.settings.audit_kafka is not None:
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
            settings = self.settings.onprem if side == "onprem" else self.settings.aws
            try:
                notifier = await asyncio.to_thread(
                    ChangeNotifier, settings, self.mapping.root(side), wake
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
        for side in SIDES:
            settings = self.settings.onprem if side == "onprem" else self.settings.aws
            connection = await asyncio.to_thread(ldap_connect, settings)
            self.links[side] = _Link(connection, threading.Lock())

    async def _ping(self, side: Side) -> None:
        def ping() -> None:
            link = self.links[side]
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
            due = time.monotonic() >= next_full
            try:
                changed = due or await asyncio.to_thread(self._changes_pending)
                if changed:
                    await self.cycle(detected_at=detected)
                    if due:
                        next_full = time.monotonic() + self.settings.reconcile_interval_s
            except (LDAPException, IndutechError) as exc:
                self.metrics.error(type(exc).__name__)
                self.log.warning("cycle_failed", error=str(exc), error_type=type(exc).__name__)
                await self._reconnect()
            if self.once:
                return
            await self._sleep_or_wake()

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
            await asyncio.to_thread(link.connection.unbind)
        self.links.clear()
        await self._exit_stack.aclose()

    async def _reconnect(self) -> None:
        try:
            for link in self.links.values():
                await asyncio.to_thread(link.connection.unbind)
            await self._connect()
            await asyncio.to_thread(self._prime_change_signals)
            await self._stop_notifiers()
            await self._start_notifiers()
        except (LDAPException, IndutechError) as exc:
            self.log.warning("reconnect_failed", error=str(exc))

    # -- change signals ----------------------------------------------------------------------

    def _prime_change_signals(self) -> None:
        onprem = self.links["onprem"].connection
        dc, _ = highest_usn(onprem)
        cookie_state = self.state.onprem
        cookie = bytes.fromhex(cookie_state.dirsync_cookie_hex) if cookie_state.dc == dc else None
        attributes = [rule.onprem for rule in self.mapping.attributes.values()]
        self._dirsync = DirSyncWatcher(onprem, self.settings.onprem.base_dn, cookie, attributes)
        if cookie is None:
            self._dirsync.changed()  # drain once: from here on, every change is signalled
        cookie_state.dc = dc
        cookie_state.dirsync_cookie_hex = (self._dirsync.cookie or b"").hex()
        aws_dc, usn = highest_usn(self.links["aws"].connection)
        if self.state.aws.dc != aws_dc:
            self.state.aws.dc, self.state.aws.highest_usn = aws_dc, usn

    def _changes_pending(self) -> bool:
        changed = False
        with self.links["onprem"].lock:
            if self._dirsync is not None and self._dirsync.changed():
                changed = True
            if self._dirsync is not None:
                self.state.onprem.dirsync_cookie_hex = (self._dirsync.cookie or b"").hex()
        with self.links["aws"].lock:
            connection = self.links["aws"].connection
            _, usn = highest_usn(connection)
            if usn > self.state.aws.highest_usn:
                if usn_changed_since(connection, self.mapping.aws_root, self.state.aws.highest_usn):
                    changed = True
                self.state.aws.highest_usn = usn
        return changed

    # -- one cycle ---------------------------------------------------------------------------

    async def cycle(self, *, detected_at: float | None = None) -> CycleReport:
        """Read both scopes, reconcile, save the state; returns what was done."""
        started = time.monotonic()
        report = await asyncio.to_thread(self._cycle_in_thread)
        if not self.settings.dry_run and self.store is not None:
            await self.store.save(self.state)
        if self.audit is not None and report.changes and not self.settings.dry_run:
            await self.audit.publish(report.changes)
        self.last_report = report
        for (side, op), count in report.writes.items():
            self.writes.labels(side, op).inc(count)
        self.conflicts.inc(report.conflicts)
        for side in SIDES:
            self.guard.labels(side).set(1 if side in report.guard_tripped else 0)
            self.metrics.records_in.labels(self.name, side).inc(report.objects.get(side, 0))
            self.metrics.records_out.labels(self.name, side).inc(
                sum(c for (s, _), c in report.writes.items() if s == side)
            )
        if report.failed:
            self.metrics.error("directory_write")
        self.metrics.batch_duration.labels(self.name).observe(time.monotonic() - started)
        self.metrics.last_success.labels(self.name).set(time.time())
        if detected_at is not None:
            self.metrics.lag.labels(self.name, "directory").set(time.time() - detected_at)
        self.log.info(
            "cycle_done",
            writes=report.total_writes,
            conflicts=report.conflicts,
            failed=report.failed,
            deferred=report.deferred,
            guard_tripped=report.guard_tripped,
            objects=report.objects,
            dry_run=self.settings.dry_run,
            seconds=round(time.monotonic() - started, 3),
        )
        return report

    def _cycle_in_thread(self) -> CycleReport:
        with self.links["onprem"].lock, self.links["aws"].lock:
            snapshots = {s: read_scope(self.links[s].connection, self.mapping, s) for s in SIDES}
            writers: dict[Side, DirectoryWriter] = {
                s: DryRunWriter(s)
                if self.settings.dry_run
                else LdapWriter(self.links[s].connection)
                for s in SIDES
            }
            state = self.state.model_copy(deep=True)
            report = Reconciler(
                self.mapping,
                state,
                snapshots,
                writers,
                allow_mass_delete=self.allow_mass_delete,
                dry_run=self.settings.dry_run,
            ).run()
            if not self.settings.dry_run:
                self.state = state
            return report
