"""The change feed: which objects changed on each side since the last cycle, and the
notifications that wake the worker before the next poll.

On-prem changes are reported by DirSync (its cookie stored with the DC that issued it), AWS
changes by the DC's uSNChanged (the delegated admin has no DirSync right). Both are valid only
on the DC that issued them: on another DC change detection starts afresh from now, after the
full reconcile that follows every (re)connect.

Change notifications (``ChangeNotifier``) name each object added or modified under a scope
as it changes: a cycle woken by them re-reads just those objects (``collect(poll=False)``),
without the DirSync and uSNChanged searches, which on a large domain cost the DC a scan each
(uSNChanged is a range, not an index lookup). Those searches still run on every ``poll``
(at least every poll interval, and on every full cycle): they see what notifications do not
report (deletes, moves out of the scope, anything missed while a notification connection was
down) and move the cookie and USN, so an object notified and then polled is merged twice,
the second time as a no-op.

``prime`` and ``collect`` read from the connections given (in the cycle's thread, under the
links' locks) and move the cookie and USN kept in the state the caller saves.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import ldap3
import structlog
from ldap3.core.exceptions import LDAPException

from indutech_common.errors import IndutechError
from indutech_common.settings import LdapSettings
from indutech_identity_sync.config import SIDES, Side
from indutech_identity_sync.config import Mapping as SyncMapping
from indutech_identity_sync.sources.ldap import (
    ChangeNotifier,
    DirSyncWatcher,
    Notified,
    Scope,
    highest_usn,
    usn_changes,
)
from indutech_identity_sync.state import SyncState


class Notifier(Protocol):
    """A change-notification listener (``ChangeNotifier``): it only has to close."""

    def close(self) -> None: ...


NotifierFactory = Callable[[LdapSettings, str, Notified], Notifier]
DcChanged = Callable[[Side, str, str], None]  # (side, DC before, DC now)


class ChangeFeed:
    """The change signals of both sides: DirSync on-prem, uSNChanged on AWS, notifications."""

    def __init__(
        self,
        mapping: SyncMapping,
        settings: Mapping[Side, LdapSettings],
        *,
        notifier_factory: NotifierFactory = ChangeNotifier,
    ) -> None:
        self.mapping = mapping
        self.settings = settings
        self.notifier_factory = notifier_factory
        self.scopes = {s: Scope(mapping, s) for s in SIDES}
        self._dirsync: DirSyncWatcher | None = None
        self._notifiers: list[Notifier] = []
        # notified since the last collect, per side: {objectGUID: DN} (notifier threads add)
        self._notified: dict[Side, dict[str, str]] = {s: {} for s in SIDES}
        self._unnamed = False  # a notification without a GUID: the next collect polls
        self._lock = threading.Lock()
        self.last_poll = float("-inf")  # monotonic time of the last DirSync / USN poll
        self.log = structlog.get_logger("identity-sync")

    def notified(self, side: Side, guid: str, dn: str) -> None:
        """A notification from ``side``'s DC (any thread): collected by the next cycle."""
        with self._lock:
            if guid:
                self._notified[side][guid] = dn
            else:
                self._unnamed = True

    def poll_due(self, interval_s: float) -> bool:
        """The DirSync / USN searches are due: ``interval_s`` passed since the last, or a
        notification came without a GUID."""
        return self._unnamed or time.monotonic() - self.last_poll >= interval_s

    def prime(
        self,
        connections: Mapping[Side, ldap3.Connection],
        state: SyncState,
        on_dc_changed: DcChanged,
    ) -> None:
        """Start (or restart) change detection on the DCs connected now: from the stored
        cookie and USN when the DC is the one that issued them, else afresh from now.
        ``on_dc_changed(side, before, now)`` is called at once for a side now on a DC of
        another name than the state's."""
        onprem = connections["onprem"]
        dc, _ = highest_usn(onprem)
        cookie_state = state.onprem
        if cookie_state.dc and cookie_state.dc != dc:
            on_dc_changed("onprem", cookie_state.dc, dc)
        cookie = bytes.fromhex(cookie_state.dirsync_cookie_hex) if cookie_state.dc == dc else None
        attributes = [rule.onprem for rule in self.mapping.attributes.values()]
        self._dirsync = DirSyncWatcher(onprem, self.settings["onprem"].base_dn, cookie, attributes)
        if cookie is None:
            self._dirsync.changes()  # drain once: the full reconcile at start covers the past
        with self._lock:  # the full reconcile that follows covers what was notified
            self._notified = {s: {} for s in SIDES}
        cookie_state.dc = dc
        cookie_state.dirsync_cookie_hex = (self._dirsync.cookie or b"").hex()
        aws_dc, usn = highest_usn(connections["aws"])
        if state.aws.dc and state.aws.dc != aws_dc:
            on_dc_changed("aws", state.aws.dc, aws_dc)
        if state.aws.dc != aws_dc:
            state.aws.dc, state.aws.highest_usn = aws_dc, usn

    def collect(
        self,
        connections: Mapping[Side, ldap3.Connection],
        state: SyncState,
        mirrored: Mapping[Side, Mapping[str, object]],
        *,
        poll: bool = True,
    ) -> dict[Side, set[str]]:
        """GUIDs changed on each side since the last call, kept when in scope or mirrored
        (an object deleted or moved out of the scope is no longer in it): those notified,
        and with ``poll`` those DirSync and uSNChanged report."""
        with self._lock:
            reported, self._notified = self._notified, {s: {} for s in SIDES}
            if poll:
                self._unnamed = False
        if poll:
            self.last_poll = time.monotonic()
            if self._dirsync is not None:
                reported["onprem"].update(self._dirsync.changes())
                state.onprem.dirsync_cookie_hex = (self._dirsync.cookie or b"").hex()
            connection = connections["aws"]
            _, usn = highest_usn(connection)
            if usn > state.aws.highest_usn:
                reported["aws"].update(
                    usn_changes(connection, self.settings["aws"].base_dn, state.aws.highest_usn)
                )
                state.aws.highest_usn = usn
        return {
            side: {
                guid
                for guid, dn in reported[side].items()
                if guid in mirrored[side] or dn in self.scopes[side]
            }
            for side in SIDES
        }

    async def start_notifiers(self, dcs: Mapping[Side, str], wake: Callable[[], None]) -> None:
        """A change-notification listener on each side's DC in use (``dcs``: side -> URL):
        each notification is kept for the next collect and calls ``wake`` (any thread). One
        that cannot start is logged and the poll remains."""
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
        await self.stop_notifiers()
