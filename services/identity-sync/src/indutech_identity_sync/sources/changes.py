"""The change feed: which objects changed on each side since the last cycle, found by a
watch thread on connections of its own, and the notifications that may name them sooner.

The watch probes each side's DC every ``probe_interval_s``: a base-scope read of the
rootDSE's ``highestCommittedUSN`` (about 1 ms). Only when it moved past the USN the last
search covered does it search for the changed objects, so an idle directory costs the DC
nothing but the probes:

- a small gap (at most ``usn_lookup_max`` USNs): a *lookup* of the objects whose
  uSNChanged is one of those USNs, an indexed equality search (``sources.ldap.usn_lookup``,
  a few ms);
- a larger gap (a bulk change, or the first search after a restart): a *scan*, DirSync
  on-prem (its cookie stored with the DC that issued it) and a ``uSNChanged>=`` range on
  AWS (the delegated admin has no DirSync right); both make Samba read every object and
  tombstone of the domain (0.4-0.8 s at 11,000 objects).

Our own writes move the USN too: the objects they touched are found, re-read and merged
as no-ops (the three-way merge), as every echo is. USNs are those of one DC: the cursors
(the USN and the DirSync cookie) are kept with the DC's ``dsServiceName`` and start
afresh on another DC (after the full reconcile that follows every reconnect).

The watch never touches the cycle's connections, so a cycle does not wait for a search
and a search does not wait for a cycle's writes. What it finds is kept, with the cursors
that cover it, until the next ``collect``, which hands both to the cycle: the state saved
after that cycle never claims a change it has not merged.

Change notifications (``ChangeNotifier``, ``change_notifications``) name each object
added or modified under a scope; they add to the same batch and wake the worker. Samba
serves them by re-running the subtree search after each change (0.7-3 s late at 11,000
objects, and a scan each), so there the probe is both sooner and cheaper.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import ldap3
import structlog
from ldap3.core.exceptions import LDAPException

from indutech_common.errors import IndutechError
from indutech_common.ldap import ldap_connect
from indutech_common.settings import LdapSettings
from indutech_identity_sync.config import SIDES, Side
from indutech_identity_sync.config import Mapping as SyncMapping
from indutech_identity_sync.metrics import IdentitySyncMetrics
from indutech_identity_sync.sources.ldap import (
    ChangeNotifier,
    DirSyncWatcher,
    Notified,
    Scope,
    close_quietly,
    highest_usn,
    usn_changes,
    usn_lookup,
)
from indutech_identity_sync.state import SyncState


class Notifier(Protocol):
    """A change-notification listener (``ChangeNotifier``): it only has to close."""

    def close(self) -> None: ...


NotifierFactory = Callable[[LdapSettings, str, Notified], Notifier]
# opens the watch's own connection to one DC (settings for that DC alone)
WatchConnect = Callable[[LdapSettings], Any]
DcChanged = Callable[[Side, str, str], None]  # (side, DC before, DC now)
Search = Literal["none", "lookup", "scan"]


def open_watch_connection(settings: LdapSettings) -> ldap3.Connection:
    """The watch's connection: as the links' main one (DirSync needs the same options)."""
    # auto_range off and no empty attributes: see links.open_link
    return ldap_connect(settings, auto_range=False, return_empty_attributes=False)


def search_for(searched_to: int, highest: int, lookup_max: int) -> Search:
    """What one probe leads to, given the USN the last search covered and the DC's
    highestCommittedUSN now: nothing when it did not move; a lookup by uSNChanged when it
    moved by at most ``lookup_max`` (0: never); else a scan. A USN below the last one
    (a DC restored from a backup under the same name) is scanned too."""
    if highest == searched_to:
        return "none"
    if 0 < highest - searched_to <= lookup_max:
        return "lookup"
    return "scan"


class ChangeFeed:
    """The change signals of both sides: the USN watch (probe, lookup, scan) and the
    notifications."""

    def __init__(
        self,
        mapping: SyncMapping,
        settings: Mapping[Side, LdapSettings],
        *,
        notifier_factory: NotifierFactory = ChangeNotifier,
        connect: WatchConnect = open_watch_connection,
        metrics: IdentitySyncMetrics | None = None,
        probe_interval_s: float = 0.2,
        usn_lookup_max: int = 1000,
    ) -> None:
        self.mapping = mapping
        self.settings = settings
        self.notifier_factory = notifier_factory
        self.connect = connect
        self.metrics = metrics
        self.probe_interval_s = probe_interval_s
        self.usn_lookup_max = usn_lookup_max
        self.scopes = {s: Scope(mapping, s) for s in SIDES}
        self.connections: dict[Side, Any] = {}  # the watch's own, one per side
        self._dirsync: DirSyncWatcher | None = None
        self._notifiers: list[Notifier] = []
        # found since the last collect, per side: {objectGUID: DN} (the watch and the
        # notifier threads add), and the cursors that cover what the watch found
        self._found: dict[Side, dict[str, str]] = {s: {} for s in SIDES}
        self._searched_to: dict[Side, int] = dict.fromkeys(SIDES, 0)  # the watch's own
        self._cursors: dict[Side, int] = dict.fromkeys(SIDES, 0)  # handed with _found
        self._cookie_hex = ""  # handed with _found
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.failed: str | None = None  # the watch stopped on this error (reconnect)
        # the batch's timings, handed by collect: seconds its searches took, and the
        # monotonic time its first object was found (the wait for a cycle starts there)
        self._search_s = 0.0
        self._first_found: float | None = None
        self.batch_timings: dict[str, float] = {}
        self.log = structlog.get_logger("identity-sync")

    def notified(self, side: Side, guid: str, dn: str) -> None:
        """A notification from ``side``'s DC (any thread): collected by the next cycle. One
        without a GUID only wakes the worker: the probe finds the object."""
        if guid:
            with self._lock:
                self._found[side][guid] = dn

    # -- the watch -------------------------------------------------------------------------

    def open(self, dcs: Mapping[Side, str]) -> None:
        """The watch's own connection to each side's DC in use (``dcs``: side -> URL), the
        old ones closed (in a thread; the watch must be stopped)."""
        self.close_connections()
        for side, url in dcs.items():
            self.connections[side] = self.connect(self.settings[side].for_dc(url))

    def close_connections(self) -> None:
        connections, self.connections = self.connections, {}
        for connection in connections.values():
            close_quietly(connection)

    def prime(self, state: SyncState, on_dc_changed: DcChanged) -> None:
        """Start (or restart) change detection on the DCs of the watch's connections: from
        the stored cookie and USN when the DC is the one that issued them, else afresh from
        now. ``on_dc_changed(side, before, now)`` is called at once for a side now on a DC
        of another name than the state's."""
        onprem = self.connections["onprem"]
        dc, usn = highest_usn(onprem)
        cookie_state = state.onprem
        if cookie_state.dc and cookie_state.dc != dc:
            on_dc_changed("onprem", cookie_state.dc, dc)
        same = cookie_state.dc == dc
        cookie = bytes.fromhex(cookie_state.dirsync_cookie_hex) if same else None
        attributes = [rule.onprem for rule in self.mapping.attributes.values()]
        self._dirsync = DirSyncWatcher(onprem, self.settings["onprem"].base_dn, cookie, attributes)
        if cookie is None:
            self._dirsync.changes()  # drain once: the full reconcile at start covers the past
        cookie_state.dc = dc
        cookie_state.dirsync_cookie_hex = (self._dirsync.cookie or b"").hex()
        if not same or not cookie_state.highest_usn:
            cookie_state.highest_usn = usn
        aws_dc, aws_usn = highest_usn(self.connections["aws"])
        if state.aws.dc and state.aws.dc != aws_dc:
            on_dc_changed("aws", state.aws.dc, aws_dc)
        if state.aws.dc != aws_dc:
            state.aws.dc, state.aws.highest_usn = aws_dc, aws_usn
        with self._lock:  # the full reconcile that follows covers what was found
            self._found = {s: {} for s in SIDES}
            self._searched_to = {"onprem": cookie_state.highest_usn, "aws": state.aws.highest_usn}
            self._cursors = dict(self._searched_to)
            self._cookie_hex = cookie_state.dirsync_cookie_hex

    def tick(self, wake: Callable[[], None] | None = None) -> bool:
        """One probe of each side and, where the USN moved, the search (in the watch's
        thread, or a test's); True when it found an object. ``wake`` is called as soon as
        a side's search found one (the other side's search need not be waited for)."""
        found = False
        for side in SIDES:
            connection = self.connections[side]
            _, highest = highest_usn(connection)
            if self.metrics is not None:
                self.metrics.probed(side)
            searched_to = self._searched_to[side]
            kind = search_for(searched_to, highest, self.usn_lookup_max)
            if kind == "none":
                continue
            started = time.monotonic()
            base = self.settings[side].base_dn
            if kind == "lookup":
                changes = usn_lookup(connection, base, searched_to, highest)
            elif side == "onprem" and self._dirsync is not None:
                changes = self._dirsync.changes()
            else:
                changes = usn_changes(connection, base, min(searched_to, highest))
            took = time.monotonic() - started
            if self.metrics is not None:
                self.metrics.searched(side, kind)
            self._searched_to[side] = highest
            with self._lock:
                self._found[side].update(changes)
                self._search_s += took
                if changes and self._first_found is None:
                    self._first_found = time.monotonic()
                self._cursors[side] = highest
                if side == "onprem" and self._dirsync is not None and kind == "scan":
                    self._cookie_hex = (self._dirsync.cookie or b"").hex()
            if changes:
                found = True
                if wake is not None:
                    wake()
        return found

    def start_watch(self, wake: Callable[[], None]) -> None:
        """The watch thread: ``tick`` every ``probe_interval_s``, ``wake`` when it found an
        object; on an error it stops, sets ``failed`` and wakes the worker (which
        reconnects, and starts it again)."""
        self._stop = threading.Event()
        self.failed = None
        stop = self._stop

        def run() -> None:
            while not stop.is_set():
                try:
                    self.tick(wake)
                except (LDAPException, IndutechError, OSError) as exc:
                    self.failed = f"{type(exc).__name__}: {exc}"
                    self.log.warning(
                        "change_watch_failed",
                        error=self.failed,
                        action="the worker reconnects and reconciles in full",
                    )
                    wake()
                    return
                stop.wait(self.probe_interval_s)

        self._thread = threading.Thread(target=run, name="identity-sync-watch", daemon=True)
        self._thread.start()

    def stop_watch(self) -> None:
        """Stop the watch thread (it ends after the probe or search in progress)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=30)

    # -- the cycle's side ------------------------------------------------------------------

    def collect(
        self, state: SyncState, mirrored: Mapping[Side, Mapping[str, object]]
    ) -> dict[Side, set[str]]:
        """GUIDs changed on each side since the last call, kept when in scope or mirrored
        (an object deleted or moved out of the scope is no longer in it), and the cursors
        that cover them written to ``state`` (saved after the cycle that merges them)."""
        with self._lock:
            reported, self._found = self._found, {s: {} for s in SIDES}
            first, self._first_found = self._first_found, None
            self.batch_timings = {"search_s": self._search_s}
            if first is not None:
                self.batch_timings["waited_s"] = time.monotonic() - first
            self._search_s = 0.0
            if self._cookie_hex:
                state.onprem.dirsync_cookie_hex = self._cookie_hex
            state.onprem.highest_usn = self._cursors["onprem"] or state.onprem.highest_usn
            state.aws.highest_usn = self._cursors["aws"] or state.aws.highest_usn
        return {
            side: {
                guid
                for guid, dn in reported[side].items()
                if guid in mirrored[side] or dn in self.scopes[side]
            }
            for side in SIDES
        }

    # -- notifications ---------------------------------------------------------------------

    async def start_notifiers(self, dcs: Mapping[Side, str], wake: Callable[[], None]) -> None:
        """A change-notification listener on each side's DC in use (``dcs``: side -> URL):
        each notification is kept for the next collect and calls ``wake`` (any thread). One
        that cannot start is logged and the watch remains."""
        for side, url in dcs.items():

            def on_change(guid: str, dn: str, side: Side = side) -> None:
                self.notified(side, guid, dn)
                wake()

            try:
                notifier = await asyncio.to_thread(
                    self.notifier_factory,
                    self.settings[side].for_dc(url),
                    self.mapping.root(side),
                    on_change,
                )
            except (LDAPException, IndutechError) as exc:
                self.log.warning("change_notification_unavailable", side=side, error=str(exc))
                continue
            self._notifiers.append(notifier)

    async def stop_notifiers(self) -> None:
        notifiers, self._notifiers = self._notifiers, []
        for notifier in notifiers:
            try:
                await asyncio.to_thread(notifier.close)
            except LDAPException as exc:
                self.log.warning("change_notification_close_failed", error=str(exc))

    async def close(self) -> None:
        await asyncio.to_thread(self.stop_watch)
        await asyncio.to_thread(self.close_connections)
        await self.stop_notifiers()
