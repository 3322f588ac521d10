"""The identity-sync worker's lifecycle: open and adopt its resources, run a full reconcile
on start and on a schedule and an incremental cycle for every change batch, and stop.

What it uses lives beside it: the DC connections and their failover in ``links``, the change
signals (the USN watch: probe, lookup, DirSync / uSNChanged scan; notifications) in
``sources.changes``, one cycle and what lasts
between cycles in ``cycle``, the three-way merge in ``engine`` (its writes ordered by
``barrier``, deletes judged by ``deletion_guard``), the anchor state in ``state`` and the
audit topic in ``sinks.audit``. Each resource is adopted by the base ``Worker``, which closes
them in the reverse order at stop, each within the one stop budget.
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
from indutech_identity_sync.cycle import Cycles
from indutech_identity_sync.engine import CycleReport
from indutech_identity_sync.links import DcLink, Link, LinkFactory, open_link
from indutech_identity_sync.metrics import IdentitySyncMetrics
from indutech_identity_sync.sinks.audit import KafkaAuditSink
from indutech_identity_sync.sources.changes import (
    ChangeFeed,
    NotifierFactory,
    WatchConnect,
    open_watch_connection,
)
from indutech_identity_sync.sources.ldap import ChangeNotifier
from indutech_identity_sync.state import S3StateStore, StateStore, SyncState


class IdentitySyncWorker(Worker[IdentitySyncSettings]):
    """The worker. ``link_factory`` opens a side's connections to one DC (default: LDAPS,
    ``links.open_link``) and ``notifier_factory`` starts a change-notification listener
    (default: ``ChangeNotifier``) and ``watch_connect`` opens the change watch's own
    connection to a DC (default: LDAPS): the seams tests use to stand in for DCs."""

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
        watch_connect: WatchConnect | None = None,
    ) -> None:
        super().__init__(settings)
        self.once = once or settings.dry_run
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
            connect=watch_connect or open_watch_connection,
            metrics=self.sync_metrics,
            probe_interval_s=settings.probe_interval_s,
            usn_lookup_max=settings.usn_lookup_max,
        )
        # the cycles and what lasts between them (mirrors, retries, quarantine, guard)
        self.cycles = Cycles(
            settings,
            self.mapping,
            dc_links=self.dc_links,
            changes=self.changes,
            metrics=self.metrics,
            sync_metrics=self.sync_metrics,
            allow_mass_delete=allow_mass_delete,
            store=store,
        )
        self.exit_code = EXIT_OK  # --once / --dry-run: EXIT_FAILED when the run fell short
        self._wake = asyncio.Event()

    def _ldap(self, side: Side) -> LdapSettings:
        return self.settings.onprem if side == "onprem" else self.settings.aws

    @property
    def links(self) -> dict[Side, Link]:
        """The sides connected now, each to the DC it uses."""
        return self.cycles.links

    @property
    def state(self) -> SyncState:
        """The anchor state (loaded at start, saved after every cycle)."""
        return self.cycles.state

    @state.setter
    def state(self, state: SyncState) -> None:
        self.cycles.state = state

    @property
    def last_report(self) -> CycleReport | None:
        return self.cycles.last_report

    @property
    def delete_hold_until(self) -> dict[Side, float]:
        return self.cycles.delete_hold_until

    # -- lifecycle ---------------------------------------------------------------------------

    async def startup(self) -> None:
        # Registered in this order, closed in the reverse one: the notifications first,
        # then the DC connections, the audit producer and the S3 client last.
        store = self.cycles.store
        if store is None:
            client = await self.enter("s3", create_s3_client(self.settings.s3))
            objects = JsonObjectStore(client, bucket=self.settings.state_bucket)
            self.health.register_ping("s3", objects.ping)
            self.cycles.store = store = S3StateStore(objects, key=self.settings.state_key)
        # before the S3 client closes: the background deletion of old journal entries
        self.add_closer("state", store.close)
        self.state = await store.load()
        if self.settings.audit_kafka is not None:
            topics = {self.settings.audit_topic: Topics.IDENTITY_CHANGES}
            await require_topics(self.settings.audit_kafka, topics, worker=self.name)
            self.cycles.audit = self.adopt(
                await KafkaAuditSink.open(
                    self.settings.audit_kafka, topic=self.settings.audit_topic
                )
            )
        for dc_link in self.dc_links.values():
            self.adopt(dc_link)
        await self.connect()
        self.add_closer("change_notifications", self.changes.close)
        await asyncio.to_thread(self.prime_change_signals)
        await self._start_signals()

    async def connect(self) -> None:
        """At start: a DC of each side, or fail naming every DC tried."""
        for dc_link in self.dc_links.values():
            if not await dc_link.connect():
                raise dc_link.unreachable()

    async def _start_signals(self) -> None:
        """The USN watch (primed) and, when enabled, the change notifications."""
        loop = asyncio.get_running_loop()

        def wake() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._wake.set)

        self.changes.start_watch(wake)
        if self.settings.change_notifications:
            dcs = {s: link.url for s, link in self.links.items()}
            await self.changes.start_notifiers(dcs, wake)

    async def main_loop(self) -> None:
        next_full = 0.0
        while not self.should_exit.is_set():
            detected = time.time()
            full = self.cycles.mirrors is None or time.monotonic() >= next_full
            try:
                if len(self.links) < len(SIDES):  # no DC of a side answered: try again first
                    await self.reconnect([s for s in SIDES if s not in self.links])
                    if len(self.links) < len(SIDES):
                        await self._sleep_or_wake()
                        continue
                if self.changes.failed is not None:  # the watch lost a DC: as a failed cycle
                    self.cycles.mirrors = None
                    await self.reconnect()
                    if self.changes.failed is not None or len(self.links) < len(SIDES):
                        await self._sleep_or_wake()
                        continue
                    full = True
                report = await self.cycles.run(full=full, detected_at=detected)
                if full:
                    next_full = time.monotonic() + self.settings.reconcile_interval_s
            except (LDAPException, IndutechError) as exc:
                self.cycles.mirrors = None  # what we hold may be half-read: reconcile in full next
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
        if self.settings.dry_run and self.cycles.quarantine.held:
            self.exit_code = EXIT_FAILED
            self.log.error(
                "dry_run_incomplete",
                quarantined=len(self.cycles.quarantine.held),
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
            await asyncio.to_thread(self.changes.stop_watch)
            for side in sides or SIDES:
                await self.dc_links[side].drop()
            for side in sides or SIDES:
                await self.dc_links[side].connect()
            if len(self.links) < len(SIDES):
                return
            await self.changes.stop_notifiers()
            await asyncio.to_thread(self.prime_change_signals)
            await self._start_signals()
        except (LDAPException, IndutechError) as exc:
            self.log.warning("reconnect_failed", error=str(exc))

    # -- change signals ----------------------------------------------------------------------

    def prime_change_signals(self) -> None:
        """The change watch's own connections to the DCs the links use, then change
        detection resumes where the state says only on the DC that issued the cookie and
        the USN; on another DC both start afresh from now, after the full reconcile that
        follows every (re)connect, and deletes on the other side wait a while."""
        self.changes.open({s: link.url for s, link in self.links.items()})
        self.changes.prime(self.state, self._dc_changed)

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
