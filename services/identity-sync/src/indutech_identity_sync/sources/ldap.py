"""Reading a scope of one directory, and noticing that something changed.

ldap3 is synchronous: everything here runs in a thread (``asyncio.to_thread``).
Searches keep only ``searchResEntry`` results (a search from the domain root
also returns referrals). Large ``member`` attributes are read in ranges
(``member;range=lo-hi``) as real AD serves them past 1,500 values; Samba
returns them whole, which this code also accepts.
"""

from __future__ import annotations

import contextlib
import re
import socket
import uuid
from collections.abc import Callable
from typing import Any

import ldap3
import structlog
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_bytes

from indutech_common.ldap import ldap_connect
from indutech_common.settings import LdapSettings
from indutech_identity_sync.config import KINDS, Kind, Mapping, Side
from indutech_identity_sync.errors import DirectoryReadError, DnError
from indutech_identity_sync.model import DirObject, Values, guid_text, make_dn, normalize_dn

SHOW_DELETED_OID = "1.2.840.113556.1.4.417"
_RANGE = re.compile(r"^(?P<attr>[^;]+);range=(?P<lo>\d+)-(?P<hi>\d+|\*)$", re.IGNORECASE)
PAGE_SIZE = 500


def close_quietly(connection: ldap3.Connection) -> None:
    """Unbind, and close the socket whatever happens (a DC that went away leaves it open)."""
    with contextlib.suppress(LDAPException, OSError):
        connection.unbind()
    sock = getattr(connection, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _entries(connection: ldap3.Connection) -> list[dict[str, Any]]:
    return [e for e in connection.response or [] if e.get("type") == "searchResEntry"]


def _values(raw: list[bytes]) -> Values:
    return tuple(v.decode("utf-8") for v in raw)


def _filter(mapping: Mapping, kind: Kind) -> str:
    return {"ou": mapping.ou_filter, "user": mapping.user_filter, "group": mapping.group_filter}[
        kind
    ]


def _attributes(mapping: Mapping, side: Side, kind: Kind) -> list[str]:
    rules = mapping.rules_for(kind).values()
    names = {r.onprem if side == "onprem" else r.aws_name for r in rules}
    return sorted(names | {"objectGUID"} | ({"member"} if kind == "group" else set()))


class Scope:
    """Which DNs a side syncs: below its root (not the root itself), outside the excluded OUs."""

    def __init__(self, mapping: Mapping, side: Side) -> None:
        root = mapping.root(side)
        self.root = normalize_dn(root)
        names = mapping.exclude_ous if side == "onprem" else ()
        self.excluded = tuple(normalize_dn(make_dn("OU", name, root)) for name in names)

    def __contains__(self, dn: object) -> bool:
        if not isinstance(dn, str):
            return False
        try:
            norm = normalize_dn(dn)
        except DnError:
            return True  # kept, so the mirror leaves it out visibly (quarantined, logged)
        if not norm.endswith("," + self.root):
            return False
        return not any(norm == x or norm.endswith("," + x) for x in self.excluded)


def _to_object(connection: ldap3.Connection, kind: Kind, entry: dict[str, Any]) -> DirObject:
    dn = entry["dn"]
    raw = {k.lower(): v for k, v in entry["raw_attributes"].items()}
    members: frozenset[str] = frozenset()
    if kind == "group":
        members = frozenset(collect_members(connection, dn, raw))
    values = {
        k: _values(v)
        for k, v in raw.items()
        if k not in {"objectguid", "member"} and not k.startswith("member;")
    }
    return DirObject(
        guid=guid_text(raw["objectguid"][0]), kind=kind, dn=dn, attributes=values, members=members
    )


def read_scope(
    connection: ldap3.Connection, mapping: Mapping, side: Side, base: str | None = None
) -> list[DirObject]:
    """Every OU, user and group under the side's root (the root itself excluded), or under
    ``base`` (an OU inside the scope, itself included)."""
    root = base or mapping.root(side)
    scope = Scope(mapping, side)
    objects: list[DirObject] = []
    for kind in KINDS:
        attributes = _attributes(mapping, side, kind)
        for entry in _paged(connection, root, _filter(mapping, kind), attributes):
            if entry["dn"] in scope:
                objects.append(_to_object(connection, kind, entry))
    return objects


def guid_filter(guids: list[str]) -> str:
    """An LDAP filter matching any of these objectGUIDs (text form)."""
    terms = "".join(f"(objectGUID={escape_bytes(uuid.UUID(g).bytes_le)})" for g in guids)
    return terms if len(guids) == 1 else f"(|{terms})"


GUID_CHUNK = 100


def read_changed(
    connection: ldap3.Connection, mapping: Mapping, side: Side, guids: set[str]
) -> tuple[list[DirObject], set[str]]:
    """Re-read only these objects: (those found in scope, the GUIDs no longer in it)."""
    found: list[DirObject] = []
    scope = Scope(mapping, side)
    wanted = sorted(guids)
    for start in range(0, len(wanted), GUID_CHUNK):
        chunk = guid_filter(wanted[start : start + GUID_CHUNK])
        for kind in KINDS:
            search = f"(&{_filter(mapping, kind)}{chunk})"
            for entry in _paged(
                connection, mapping.root(side), search, _attributes(mapping, side, kind)
            ):
                if entry["dn"] in scope:
                    found.append(_to_object(connection, kind, entry))
    return found, guids - {o.guid for o in found}


def read_dns(
    connection: ldap3.Connection, mapping: Mapping, side: Side, dns: set[str]
) -> list[DirObject]:
    """The synced objects at these DNs (references not known yet); the others are not synced."""
    found: list[DirObject] = []
    scope = Scope(mapping, side)
    for dn in sorted(dns):
        if dn not in scope:
            continue
        for kind in KINDS:
            connection.search(
                dn, _filter(mapping, kind), ldap3.BASE, attributes=_attributes(mapping, side, kind)
            )
            entries = _entries(connection)
            if entries:
                found.append(_to_object(connection, kind, entries[0]))
                break
    return found


def _paged(
    connection: ldap3.Connection,
    base: str,
    search_filter: str,
    attributes: list[str],
    controls: list[tuple[str, bool, Any]] | None = None,
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cookie: bytes | None = None
    while True:
        ok = connection.search(
            base,
            search_filter,
            ldap3.SUBTREE,
            attributes=attributes,
            paged_size=PAGE_SIZE,
            paged_cookie=cookie,
            controls=controls,
        )
        if not ok and connection.result.get("result") not in (0, 4):
            raise DirectoryReadError(
                f"search under {base} failed: {connection.result.get('description')}"
            )
        entries.extend(_entries(connection))
        control = connection.result.get("controls", {}).get("1.2.840.113556.1.4.319", {})
        cookie = control.get("value", {}).get("cookie")
        if not cookie:
            return entries


def collect_members(
    connection: ldap3.Connection, dn: str, raw: dict[str, list[bytes]], attribute: str = "member"
) -> list[str]:
    """All values of a multi-valued attribute, following ``attr;range=lo-hi`` pages."""
    values = [v.decode("utf-8") for v in raw.get(attribute, [])]
    page = _range_page(raw, attribute)
    while page is not None:
        page_values, high = page
        values.extend(page_values)
        if high == "*":
            break
        next_range = f"{attribute};range={int(high) + 1}-*"
        connection.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[next_range])
        entries = _entries(connection)
        if not entries:
            raise DirectoryReadError(f"ranged read of {attribute} on {dn} returned nothing")
        page = _range_page(
            {k.lower(): v for k, v in entries[0]["raw_attributes"].items()}, attribute
        )
        if page is None:  # the server answered without a range: the rest, whole
            rest = entries[0]["raw_attributes"]
            values.extend(
                v.decode("utf-8") for k, vs in rest.items() if k.lower() == attribute for v in vs
            )
    return values


def _range_page(raw: dict[str, list[bytes]], attribute: str) -> tuple[list[str], str] | None:
    for key, values in raw.items():
        match = _RANGE.match(key)
        if match and match["attr"].lower() == attribute and values:
            return [v.decode("utf-8") for v in values], match["hi"]
    return None


def read_member_ranges(connection: ldap3.Connection, dn: str, *, step: int) -> list[str]:
    """Read ``member`` asking for explicit ranges of ``step`` values (AD's ranged retrieval)."""
    first = f"member;range=0-{step - 1}"
    connection.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[first])
    entries = _entries(connection)
    if not entries:
        raise DirectoryReadError(f"{dn} not found")
    raw = {k.lower(): v for k, v in entries[0]["raw_attributes"].items()}
    return collect_members(connection, dn, raw)


def highest_usn(connection: ldap3.Connection) -> tuple[str, int]:
    """(the DC's NTDS settings DN, its highestCommittedUSN) from the rootDSE."""
    connection.search(
        "", "(objectClass=*)", ldap3.BASE, attributes=["highestCommittedUSN", "dsServiceName"]
    )
    entries = _entries(connection)
    if not entries:
        raise DirectoryReadError("the rootDSE did not answer")
    raw = entries[0]["raw_attributes"]
    return raw["dsServiceName"][0].decode(), int(raw["highestCommittedUSN"][0])


def usn_changes(connection: ldap3.Connection, naming_context: str, usn: int) -> dict[str, str]:
    """{objectGUID: DN} of every object of the domain (tombstones included) whose uSNChanged
    is above ``usn``. The whole naming context, so an object moved out of the scope or
    deleted is seen too; the caller keeps those in its scope or its mirror."""
    entries = _paged(
        connection,
        naming_context,
        f"(uSNChanged>={usn + 1})",
        ["objectGUID"],
        controls=[(SHOW_DELETED_OID, True, None)],
    )
    return {
        guid_text(e["raw_attributes"]["objectGUID"][0]): e["dn"]
        for e in entries
        if e["raw_attributes"].get("objectGUID")
    }


USN_LOOKUP_CHUNK = 100  # uSNChanged values per lookup search (one equality term each)


def usn_windows(low: int, high: int, chunk: int = USN_LOOKUP_CHUNK) -> list[range]:
    """The USNs above ``low`` up to ``high`` in runs of at most ``chunk`` (one search each)."""
    return [range(start, min(start + chunk, high + 1)) for start in range(low + 1, high + 1, chunk)]


def usn_lookup(
    connection: ldap3.Connection, naming_context: str, low: int, high: int
) -> dict[str, str]:
    """{objectGUID: DN} of every object of the domain (tombstones included) whose uSNChanged
    is above ``low`` and at most ``high``, as ``usn_changes`` reports them, but found
    through the index: one equality term per USN (``(|(uSNChanged=n)...)``), where the
    range ``uSNChanged>=`` makes Samba scan every object and tombstone. An object changed
    again after ``high`` is not found here: its uSNChanged is above ``high`` now, so the
    next window finds it."""
    changes: dict[str, str] = {}
    for window in usn_windows(low, high):
        terms = "".join(f"(uSNChanged={usn})" for usn in window)
        entries = _paged(
            connection,
            naming_context,
            terms if len(window) == 1 else f"(|{terms})",
            ["objectGUID"],
            controls=[(SHOW_DELETED_OID, True, None)],
        )
        changes.update(
            (guid_text(e["raw_attributes"]["objectGUID"][0]), e["dn"])
            for e in entries
            if e["raw_attributes"].get("objectGUID")
        )
    return changes


_EXTENDED_DN = re.compile(r"^(<[^>]*>;)*")


class DirSyncWatcher:
    """On-prem change signal: DirSync from the naming context, resumed from a stored cookie."""

    def __init__(
        self,
        connection: ldap3.Connection,
        naming_context: str,
        cookie: bytes | None,
        attributes: list[str],
    ) -> None:
        # DirSync reports an object when one of the requested attributes changed: asking
        # for objectGUID alone reports nothing (checked on Samba 4.17), so ask for the
        # synced attributes plus name (renames, moves) and isDeleted (tombstones).
        wanted = sorted({*attributes, "objectGUID", "name", "isDeleted", "member"})
        self._sync = connection.extend.microsoft.dir_sync(
            naming_context, attributes=wanted, cookie=cookie
        )

    @property
    def cookie(self) -> bytes | None:
        cookie = self._sync.cookie
        return bytes(cookie) if cookie else None

    def changes(self) -> dict[str, str]:
        """{objectGUID: DN} of the objects DirSync reported since the last call."""
        changes: dict[str, str] = {}
        while True:
            for entry in self._sync.loop() or []:
                raw = entry.get("raw_attributes", {})
                guid = next((v[0] for k, v in raw.items() if k.lower() == "objectguid" and v), None)
                if entry.get("type", "searchResEntry") == "searchResEntry" and guid:
                    changes[guid_text(guid)] = _EXTENDED_DN.sub("", entry.get("dn", ""))
            if not self._sync.more_results:
                return changes


NOTIFICATION_OID = "1.2.840.113556.1.4.528"

_log = structlog.get_logger(__name__)


Notified = Callable[[str, str], None]  # (objectGUID, DN) of an object the DC reported changed


def notified_object(entry: dict[str, Any]) -> tuple[str, str]:
    """(objectGUID text, DN) of a change-notification entry; "" for a GUID it lacks."""
    raw = entry.get("raw_attributes") or {}
    guid = next((v[0] for k, v in raw.items() if k.lower() == "objectguid" and v), None)
    return (guid_text(guid) if guid else "", str(entry.get("dn", "")))


class ChangeNotifier:
    """AD's change-notification control on a subtree: the objects changed under it, as they
    change.

    A search with LDAP_SERVER_NOTIFICATION_OID never completes: the DC sends an entry (its
    DN and the objectGUID asked for) each time an object under the base is added or
    modified. ldap3's ASYNC_STREAM strategy hands each entry to ``on_change(guid, dn)`` from
    its receiver thread (guid "" if the entry had none). Deletes and moves out of the base
    are not notified, and a dropped connection notifies nothing: the DirSync / USN poll that
    follows at least every poll interval sees them.
    """

    def __init__(self, settings: LdapSettings, base: str, on_change: Notified) -> None:
        # No receive timeout: with one, ldap3's receiver thread takes every socket
        # error for a timeout and retries recv forever; after close() it spun at
        # 100 % CPU for the rest of the process (seen in the test suite). Without
        # it, the thread ends at the first error or end of stream.
        self.on_change = on_change
        self.callback_failures = 0
        self.connection = ldap_connect(
            settings, client_strategy=ldap3.ASYNC_STREAM, receive_timeout=None
        )
        self.connection.strategy.callback = self._entry
        self.message_id = self.connection.search(
            base,
            "(objectClass=*)",
            ldap3.SUBTREE,
            attributes=["objectGUID"],
            controls=[(NOTIFICATION_OID, True, None)],
        )
        self.connection.strategy.persistent_search_message_id = self.message_id

    def _entry(self, entry: dict[str, Any]) -> None:
        # ldap3's receiver thread ends at the first exception a callback raises, and with
        # it every later notification, silently; the poll still sees the change, so one
        # failed hand-over is logged and the listener goes on.
        try:
            self.on_change(*notified_object(entry))
        except Exception as exc:
            self.callback_failures += 1
            _log.error(
                "change_notification_callback_failed",
                dn=str(entry.get("dn", "")),
                error_type=type(exc).__name__,
                error=str(exc),
                then="the object is picked up by the next DirSync / USN poll",
            )

    @property
    def listening(self) -> bool:
        """The receiver thread is alive (it ends when the connection does)."""
        receiver = getattr(self.connection.strategy, "receiver", None)
        return receiver is not None and receiver.is_alive()

    def close(self) -> None:
        with contextlib.suppress(LDAPException, OSError):
            self.connection.abandon(self.message_id)
        sock = getattr(self.connection, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the receiver's blocking recv
        close_quietly(self.connection)
        receiver = getattr(self.connection.strategy, "receiver", None)
        if receiver is not None:
            receiver.join(timeout=5)
